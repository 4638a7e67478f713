//! The agent's options, checked into a [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::values::{DEFAULT_POLL_PERIOD, parse_duration, parse_period, profile_path};
use crate::decide::{RebootPolicy, RebootWindow};
use crate::hydra::Job;
use crate::state_file::StateDir;
use crate::system::{SwitchAction, SystemMode};
use crate::types::Gate;

/// The deployment agent's options (the default mode of `hail`), grouped as `--help` shows them.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Profile to deploy to: a name means /nix/var/nix/profiles/NAME, an absolute path is used as
    /// is [required; with --system the default is /nix/var/nix/profiles/system].
    #[arg(long, env = "HAIL_PROFILE", value_name = "PROFILE")]
    pub profile: Option<String>,

    /// Hydra job URL, e.g. https://hydra.example.org/job/PROJECT/JOBSET/JOB.
    #[arg(
        long,
        env = "HAIL_JOB_URI",
        value_name = "HYDRA_JOB_URI",
        required = true
    )]
    pub job_uri: Option<String>,

    /// netrc file with credentials for the job URI's host [default: $CREDENTIALS_DIRECTORY/netrc
    /// when systemd hands one over, else /etc/netrc when it exists].
    #[arg(long, env = "HAIL_NETRC_FILE", value_name = "FILE")]
    pub netrc_file: Option<PathBuf>,

    /// Time between polls: a bare number is minutes; 30s, 5m, 1h are accepted [default: 5].
    // Not clap's `conflicts_with = "oneshot"`: clap counts HAIL_ONESHOT=0 as given.
    #[arg(long, env = "HAIL_POLL_PERIOD", value_name = "PERIOD", value_parser = parse_period)]
    pub poll_period: Option<Duration>,

    /// Poll once, deploy if needed, and exit: 0 when the profile is at the latest build.
    #[arg(long, env = "HAIL_ONESHOT", value_parser = clap::builder::BoolishValueParser::new())]
    pub oneshot: bool,

    /// Directory of hail's own state (`state.json`) [default: $STATE_DIRECTORY when systemd
    /// sets it, else PROFILE.hail-state beside the profile].
    #[arg(long, env = "HAIL_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Write Prometheus metrics to this file (text format, atomically) after every poll and
    /// deployment, e.g. into node_exporter's textfile collector directory.
    #[arg(long, env = "HAIL_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// After a successful deployment, delete the profile's generations beyond the newest N
    /// (0 keeps all); never the current one nor the one a rollback would return to.
    #[arg(
        long,
        env = "HAIL_KEEP_GENERATIONS",
        value_name = "N",
        default_value_t = 10
    )]
    pub keep_generations: usize,

    #[command(flatten, next_help_heading = "Which build to deploy")]
    pub choice: BuildChoice,

    #[command(flatten, next_help_heading = "Health checks")]
    pub health: HealthArgs,

    #[command(flatten, next_help_heading = "Whole NixOS systems")]
    pub system: SystemArgs,

    #[command(flatten, next_help_heading = "Hooks")]
    pub hooks: HookArgs,

    #[command(flatten, next_help_heading = "Time bounds")]
    pub time: TimeBounds,
}

/// Time bounds on each step.
#[derive(Debug, Args)]
pub struct TimeBounds {
    /// Longest time `bin/activate` may run before it is stopped and counted as failed.
    #[arg(long, env = "HAIL_ACTIVATION_TIMEOUT", value_name = "PERIOD", default_value = "10m",
          value_parser = parse_duration)]
    pub activation_timeout: Duration,

    /// Longest time realising a build from the binary cache may take.
    #[arg(long, env = "HAIL_REALISE_TIMEOUT", value_name = "PERIOD", default_value = "1h",
          value_parser = parse_duration)]
    pub realise_timeout: Duration,

    /// Longest time one request to Hydra may take, connection and body included.
    #[arg(long, env = "HAIL_HTTP_TIMEOUT", value_name = "PERIOD", default_value = "60s",
          value_parser = parse_duration)]
    pub http_timeout: Duration,
}

/// Which build is deployed, and when.
#[derive(Debug, Args)]
pub struct BuildChoice {
    /// Which build to deploy: the job's latest successful build, or the job's build of the
    /// newest Hydra evaluation of its jobset whose builds all finished and succeeded.
    #[arg(long, env = "HAIL_GATE", value_enum, default_value = "latest")]
    pub gate: GateArg,

    /// How many of the jobset's newest evaluations `--gate evaluation` looks back at.
    #[arg(long, env = "HAIL_GATE_DEPTH", value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=200))]
    pub gate_depth: u16,

    /// Deploy a build whose Hydra id is lower than the deployed build's (by default such a
    /// build waits: builds were deleted, or a gate fell back to an older evaluation).
    #[arg(long, env = "HAIL_ALLOW_DOWNGRADE", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_downgrade: bool,

    /// Deploy a build only once Hydra finished it at least this long ago.
    #[arg(long, env = "HAIL_MIN_BUILD_AGE", value_name = "PERIOD", default_value = "0s",
          value_parser = parse_duration)]
    pub min_build_age: Duration,

    /// Spread a fleet's deployments over this window: this host waits its own fixed delay in
    /// [0, PERIOD), from its machine id (or --rollout-key) and the job; 0s (a canary) goes first.
    #[arg(long, env = "HAIL_ROLLOUT_SPREAD", value_name = "PERIOD", default_value = "0s",
          value_parser = parse_duration)]
    pub rollout_spread: Duration,

    /// What places this host in the rollout window [default: /etc/machine-id].
    #[arg(long, env = "HAIL_ROLLOUT_KEY", value_name = "KEY")]
    pub rollout_key: Option<String>,
}

/// Health checks after each activation.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// A command that must succeed after each activation, besides the profile's own
    /// bin/health-check: split into words as systemd splits ExecStart= (quotes honoured), run
    /// without a shell, retried every --health-interval until --health-timeout.
    #[arg(long, env = "HAIL_HEALTH_CHECK", value_name = "COMMAND")]
    pub health_check: Option<String>,

    /// Time between two tries of a failing health check.
    #[arg(long, env = "HAIL_HEALTH_INTERVAL", value_name = "PERIOD", default_value = "5s",
          value_parser = parse_duration)]
    pub health_interval: Duration,

    /// How long health checks may keep failing before the deployment counts as failed (and is
    /// rolled back).
    #[arg(long, env = "HAIL_HEALTH_TIMEOUT", value_name = "PERIOD", default_value = "2m",
          value_parser = parse_duration)]
    pub health_timeout: Duration,

    /// After the checks pass, hail must reach Hydra again (the request its poll makes) within
    /// this time, or the build is rolled back as for a failed check: a switch that cut the host
    /// off is undone. 0s turns it off [default: 2m with --system, else 0s].
    #[arg(long, env = "HAIL_CONFIRM_TIMEOUT", value_name = "PERIOD", value_parser = parse_duration)]
    pub confirm_timeout: Option<Duration>,
}

/// Operators' commands after each deployment's outcome.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// A command run once a build is deployed and its checks passed: split into words as
    /// --health-check, run without a shell, with HAIL_EVENT=deployed and the deployment's
    /// HAIL_* variables (see "Hooks" in the book, docs/). Its failure is only logged.
    #[arg(long, env = "HAIL_ON_SUCCESS", value_name = "COMMAND")]
    pub on_success: Option<String>,

    /// A command run after a failed deployment (after its rollback), with HAIL_EVENT saying how
    /// it failed: realise-failed, switch-failed, activation-failed, health-check-failed or
    /// contact-lost. Its failure is only logged.
    #[arg(long, env = "HAIL_ON_FAILURE", value_name = "COMMAND")]
    pub on_failure: Option<String>,

    /// Longest time a hook may run; its process group is killed then.
    #[arg(long, env = "HAIL_HOOK_TIMEOUT", value_name = "PERIOD", default_value = "1m",
          value_parser = parse_duration)]
    pub hook_timeout: Duration,
}

/// Deploying whole NixOS systems.
#[derive(Debug, Args)]
pub struct SystemArgs {
    /// The job builds a whole NixOS system (config.system.build.toplevel): hail refuses a path
    /// that is not one, and switches to it with its bin/switch-to-configuration.
    #[arg(long, env = "HAIL_SYSTEM", value_parser = clap::builder::BoolishValueParser::new())]
    pub system: bool,

    /// With --system, what switch-to-configuration does: switch (boot default and now), boot
    /// (boot default, runs after a reboot), test (now only; profile and boot menu untouched).
    #[arg(long, env = "HAIL_SWITCH_ACTION", value_enum, default_value = "switch")]
    pub switch_action: SwitchActionArg,

    /// With --system, the system the host booted, whose kernel, initrd and kernel modules say
    /// whether a reboot is needed.
    #[arg(long, env = "HAIL_BOOTED_SYSTEM", value_name = "PATH", default_value = crate::system::BOOTED_SYSTEM)]
    pub booted_system: PathBuf,

    /// With --system, whether hail reboots (through systemd) when a deployed system needs it:
    /// never (only report it), or when-needed (after a successful switch and health check,
    /// inside --reboot-window if given).
    #[arg(long, env = "HAIL_REBOOT", value_enum, default_value = "never")]
    pub reboot: RebootArg,

    /// With --reboot when-needed, reboot only between these local times, HH:MM-HH:MM (a window
    /// whose end is before its start goes over midnight); hail polls when the window opens.
    #[arg(long, env = "HAIL_REBOOT_WINDOW", value_name = "HH:MM-HH:MM")]
    pub reboot_window: Option<String>,
}

/// `--gate`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GateArg {
    /// The job's latest successful build (Hydra's `/latest`).
    Latest,
    /// The job's build of the newest evaluation whose builds all succeeded.
    Evaluation,
}

/// `--switch-action`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SwitchActionArg {
    /// Make the system the boot default and activate it now.
    Switch,
    /// Make the system the boot default; it runs after the next reboot.
    Boot,
    /// Activate the system now; the profile and the boot menu stay as they are.
    Test,
}

/// `--reboot`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RebootArg {
    /// Only report that a reboot is needed.
    Never,
    /// Reboot after a successful switch and health check, inside --reboot-window.
    WhenNeeded,
}

/// What systemd hands the agent through its environment (read once, in `main`).
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `$CREDENTIALS_DIRECTORY`.
    pub credentials_directory: Option<PathBuf>,
    /// `$STATE_DIRECTORY`.
    pub state_directory: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            credentials_directory: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            state_directory: std::env::var("STATE_DIRECTORY").ok(),
        }
    }
}

/// How long a new system has to reach Hydra again by default: a switch that breaks the network
/// is the worst a whole system can do to a pull-based host.
pub const DEFAULT_SYSTEM_CONFIRM_TIMEOUT: Duration = Duration::from_secs(120);

/// A checked agent configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub profile: PathBuf,
    pub job: Job,
    pub netrc_file: Option<PathBuf>,
    /// `None` for `--oneshot`.
    pub poll_period: Option<Duration>,
    pub activation_timeout: Duration,
    pub realise_timeout: Duration,
    pub http_timeout: Duration,
    pub state_dir: StateDir,
    pub metrics_file: Option<PathBuf>,
    pub keep_generations: usize,
    pub allow_downgrade: bool,
    pub min_build_age: Duration,
    pub rollout_spread: Duration,
    pub rollout_key: Option<String>,
    pub health: HealthChecks,
    /// `--confirm-timeout`: zero when contact is not confirmed.
    pub confirm_timeout: Duration,
    pub hooks: Hooks,
    pub gate: Gate,
    /// `--system`: the job builds NixOS systems.
    pub system: Option<SystemMode>,
}

/// `--on-success`, `--on-failure`, split into words, and their time bound.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub on_success: Option<Vec<String>>,
    pub on_failure: Option<Vec<String>>,
    pub timeout: Duration,
}

/// The health checks after an activation.
#[derive(Debug, Clone)]
pub struct HealthChecks {
    /// `--health-check`, split into words.
    pub command: Option<Vec<String>>,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--profile {0:?}: a profile is a name (letters, digits, '.', '_', '-') or an absolute path"
    )]
    BadProfile(String),
    #[error("--job-uri {0:?}: expected an http:// or https:// Hydra job URL")]
    BadJobUri(String),
    #[error("--poll-period must be at least one second")]
    ZeroPollPeriod,
    #[error("--oneshot polls once: it takes no --poll-period (nor HAIL_POLL_PERIOD)")]
    OneshotWithPollPeriod,
    #[error("--health-check {0:?}: unbalanced quotes, or no command")]
    BadHealthCheck(String),
    #[error("--{option} {command:?}: unbalanced quotes, or no command")]
    BadHook {
        option: &'static str,
        command: String,
    },
    #[error("--health-interval must be at least 100ms")]
    BadHealthTiming,
    #[error("no --profile (HAIL_PROFILE) given; it is required unless --system is")]
    NoProfile,
    #[error("--reboot-window {0}")]
    BadRebootWindow(String),
    #[error("--gate evaluation: {0}")]
    NotAJobPath(#[from] crate::hydra::NotAJobPath),
}

impl AgentArgs {
    /// Checks the options; `env` is what systemd set (passed in to keep this pure).
    pub fn into_config(self, env: &Env) -> Result<Config, ConfigError> {
        let profile_arg = match (self.profile, self.system.system) {
            (Some(p), _) => p,
            (None, true) => crate::system::SYSTEM_PROFILE.to_owned(),
            (None, false) => return Err(ConfigError::NoProfile),
        };
        let profile = profile_path(&profile_arg).ok_or(ConfigError::BadProfile(profile_arg))?;
        let window = match self.system.reboot_window.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(w) => Some(RebootWindow::parse(w).map_err(ConfigError::BadRebootWindow)?),
        };
        let system = self.system.system.then_some(SystemMode {
            action: match self.system.switch_action {
                SwitchActionArg::Switch => SwitchAction::Switch,
                SwitchActionArg::Boot => SwitchAction::Boot,
                SwitchActionArg::Test => SwitchAction::Test,
            },
            booted_system: self.system.booted_system,
            reboot: match self.system.reboot {
                RebootArg::Never => RebootPolicy::Never,
                RebootArg::WhenNeeded => RebootPolicy::WhenNeeded(window),
            },
        });
        let job = Job::parse(self.job_uri.as_deref().unwrap_or_default())
            .map_err(ConfigError::BadJobUri)?;
        let poll_period = match (self.oneshot, self.poll_period) {
            (true, Some(_)) => return Err(ConfigError::OneshotWithPollPeriod),
            (true, None) => None,
            (false, period) => {
                let period = period.unwrap_or(DEFAULT_POLL_PERIOD);
                if period < Duration::from_secs(1) {
                    return Err(ConfigError::ZeroPollPeriod);
                }
                Some(period)
            }
        };
        let netrc_file = self
            .netrc_file
            .or_else(|| default_netrc(env.credentials_directory.as_deref()));
        let command = words(self.health.health_check.as_deref())
            .map_err(|c| ConfigError::BadHealthCheck(c.to_owned()))?;
        let hook = |option: &'static str, command: Option<&str>| {
            words(command).map_err(|c| ConfigError::BadHook {
                option,
                command: c.to_owned(),
            })
        };
        let hooks = Hooks {
            on_success: hook("on-success", self.hooks.on_success.as_deref())?,
            on_failure: hook("on-failure", self.hooks.on_failure.as_deref())?,
            timeout: self.hooks.hook_timeout,
        };
        if self.health.health_interval < Duration::from_millis(100) {
            return Err(ConfigError::BadHealthTiming);
        }
        let health = HealthChecks {
            command,
            interval: self.health.health_interval,
            timeout: self.health.health_timeout,
        };
        let gate = match self.choice.gate {
            GateArg::Latest => Gate::Latest,
            GateArg::Evaluation => {
                // Gating reads the job's jobset: the URI must name it.
                job.jobset()?;
                Gate::Evaluation {
                    depth: self.choice.gate_depth.into(),
                }
            }
        };
        let state_dir = match self.state_dir {
            Some(dir) => StateDir::new(dir),
            None => StateDir::default_for(&profile, env.state_directory.as_deref()),
        };
        Ok(Config {
            profile,
            job,
            netrc_file,
            poll_period,
            activation_timeout: self.time.activation_timeout,
            realise_timeout: self.time.realise_timeout,
            http_timeout: self.time.http_timeout,
            state_dir,
            metrics_file: self.metrics_file,
            keep_generations: self.keep_generations,
            allow_downgrade: self.choice.allow_downgrade,
            min_build_age: self.choice.min_build_age,
            rollout_spread: self.choice.rollout_spread,
            rollout_key: self.choice.rollout_key,
            health,
            confirm_timeout: self
                .health
                .confirm_timeout
                .unwrap_or(if self.system.system {
                    DEFAULT_SYSTEM_CONFIRM_TIMEOUT
                } else {
                    Duration::ZERO
                }),
            hooks,
            gate,
            system,
        })
    }
}

/// A command line split into words as systemd splits `ExecStart=` (quotes honoured); `None`
/// when none is given, `Err` with the text when it cannot be split or holds no word.
fn words(command: Option<&str>) -> Result<Option<Vec<String>>, &str> {
    match command.map(str::trim) {
        None | Some("") => Ok(None),
        Some(c) => shlex::split(c).filter(|w| !w.is_empty()).map(Some).ok_or(c),
    }
}

impl Config {
    /// Fields every journal entry of this agent carries, so that `journalctl HAIL_PROFILE=…` or
    /// `HAIL_JOB=…` finds all of them (the job without credentials).
    pub fn journal_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HAIL_JOB", self.job.display().to_owned()),
            ("HAIL_PROFILE", self.profile.display().to_string()),
        ]
    }
}

/// systemd's credential first, then the conventional system-wide file, each only when it exists.
fn default_netrc(credentials_dir: Option<&Path>) -> Option<PathBuf> {
    let candidates = credentials_dir
        .map(|d| d.join("netrc"))
        .into_iter()
        .chain(Some(PathBuf::from("/etc/netrc")));
    candidates.into_iter().find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn oneshot_conflicts_with_poll_period() {
        let r = Cli::try_parse_from([
            "hail",
            "--profile",
            "p",
            "--job-uri",
            "http://h/job/a/b/c",
            "--oneshot",
            "--poll-period",
            "5",
        ]);
        let err = r.unwrap().agent.into_config(&Env::default()).unwrap_err();
        assert!(matches!(err, ConfigError::OneshotWithPollPeriod), "{err}");
    }

    #[test]
    fn default_poll_period_is_five_minutes() {
        let cli =
            Cli::try_parse_from(["hail", "--profile", "p", "--job-uri", "http://h/job/a/b/c"]);
        let config = cli.unwrap().agent.into_config(&Env::default()).unwrap();
        assert_eq!(config.poll_period, Some(Duration::from_secs(300)));
    }

    #[test]
    fn userinfo_is_never_echoed() {
        let cli =
            Cli::try_parse_from(["hail", "--profile", "p", "--job-uri", "ftp://u:s3cret@h/x"])
                .unwrap();
        let err = cli
            .agent
            .into_config(&Env::default())
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn system_mode_defaults_to_the_system_profile() {
        let cli = Cli::try_parse_from([
            "hail",
            "--system",
            "--job-uri",
            "http://h/job/a/b/c",
            "--switch-action",
            "boot",
            "--reboot",
            "when-needed",
            "--reboot-window",
            "23:30-01:00",
        ]);
        let config = cli.unwrap().agent.into_config(&Env::default()).unwrap();
        assert_eq!(config.profile, Path::new("/nix/var/nix/profiles/system"));
        let system = config.system.unwrap();
        assert_eq!(system.action, SwitchAction::Boot);
        assert_eq!(system.booted_system, Path::new("/run/booted-system"));
        assert_eq!(
            system.reboot,
            RebootPolicy::WhenNeeded(Some(RebootWindow::parse("23:30-01:00").unwrap()))
        );
        let cli = Cli::try_parse_from(["hail", "--job-uri", "http://h/job/a/b/c"]);
        let err = cli.unwrap().agent.into_config(&Env::default()).unwrap_err();
        assert!(matches!(err, ConfigError::NoProfile), "{err}");
        let cli = Cli::try_parse_from([
            "hail",
            "--system",
            "--job-uri",
            "http://h/job/a/b/c",
            "--reboot-window",
            "25:00-01:00",
        ]);
        let err = cli.unwrap().agent.into_config(&Env::default()).unwrap_err();
        assert!(matches!(err, ConfigError::BadRebootWindow(_)), "{err}");
    }

    #[test]
    fn job_uri_must_be_http() {
        let cli =
            Cli::try_parse_from(["hail", "--profile", "p", "--job-uri", "ftp://h/x"]).unwrap();
        assert!(matches!(
            cli.agent.into_config(&Env::default()),
            Err(ConfigError::BadJobUri(_))
        ));
    }
}
