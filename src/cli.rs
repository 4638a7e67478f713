//! Command line and `HAIL_*` environment: what the operator can set, parsed and checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::hydra::Job;

/// The original's default: five minutes.
pub const DEFAULT_POLL_PERIOD: Duration = Duration::from_secs(300);

/// Where profiles given by name live, as with `nix-env --profile NAME`.
pub const PROFILES_DIR: &str = "/nix/var/nix/profiles";

/// hail: pull-based continuous deployment of a Nix profile from a Hydra job.
///
/// hail polls the job's latest successful build, realises its output from the binary cache,
/// switches the profile to it and runs the profile's `bin/activate`.
#[derive(Debug, Parser)]
#[command(name = "hail", version, about, long_about = None, args_conflicts_with_subcommands = true,
         subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command line and `HAIL_*` variables of this process; exits with a usage message (code
    /// 2) when they are wrong.
    pub fn from_env() -> Cli {
        Cli::parse()
    }
}

/// The deployment agent's options (the default mode of `hail`).
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Profile to deploy to: a name means /nix/var/nix/profiles/NAME, an absolute path is used as is.
    #[arg(long, env = "HAIL_PROFILE", value_name = "PROFILE", required = true)]
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge this host's hail@ instances to a set described in a JSON file
    /// (what a manager profile's `bin/activate` runs).
    ApplyInstances(ApplyArgs),
}

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
}

impl AgentArgs {
    /// Checks the options; `credentials_dir` is `$CREDENTIALS_DIRECTORY` (passed in to keep this pure).
    pub fn into_config(self, credentials_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let profile_arg = self.profile.unwrap_or_default();
        let profile = profile_path(&profile_arg).ok_or(ConfigError::BadProfile(profile_arg))?;
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
        let netrc_file = self.netrc_file.or_else(|| default_netrc(credentials_dir));
        Ok(Config {
            profile,
            job,
            netrc_file,
            poll_period,
            activation_timeout: self.activation_timeout,
            realise_timeout: self.realise_timeout,
            http_timeout: self.http_timeout,
        })
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

/// `NAME` → `/nix/var/nix/profiles/NAME`; an absolute path as is; anything else is refused.
pub fn profile_path(arg: &str) -> Option<PathBuf> {
    if arg.starts_with('/') {
        let p = Path::new(arg);
        let clean = p.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        return (clean && p.file_name().is_some()).then(|| p.to_path_buf());
    }
    let ok = !arg.is_empty()
        && !arg.starts_with('.')
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    ok.then(|| Path::new(PROFILES_DIR).join(arg))
}

/// A poll period: a bare number is minutes (the original's unit), or a number with s, m or h.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        let minutes: u64 = s.parse().map_err(|_| format!("{s:?} is too large"))?;
        return parse_duration(&format!("{minutes}m"));
    }
    parse_duration(s)
}

/// The longest period or timeout accepted: larger ones are surely mistakes (and would overflow
/// a deadline).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration with a unit: `30s`, `5m`, `1h`, `250ms`; at most a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_unbounded(s)?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is too large (at most a year)"));
    }
    Ok(d)
}

fn parse_duration_unbounded(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with a unit, such as 30s, 5m or 1h"))?;
    let secs_per = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m or h)")),
    };
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Options of `hail apply-instances`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// JSON file describing the instance set (a manager profile's `instances.json`).
    #[arg(value_name = "FILE")]
    pub instances: PathBuf,

    /// Apply in this process instead of a transient systemd unit (what that unit runs). An
    /// apply run this way from a hail instance's activation dies if it restarts that instance.
    #[arg(long)]
    pub direct: bool,

    /// Only check the set and print each instance's drop-in; change nothing (no systemd needed).
    #[arg(long, conflicts_with = "direct")]
    pub check: bool,

    /// The hail instance whose activation runs this apply; if the set changes it, it is
    /// restarted last and without waiting [default: the hail@ unit this process runs in].
    #[arg(long, value_name = "NAME", requires = "direct")]
    pub caller: Option<String>,
}

/// Checks an agent's settings exactly as `hail` checks its own at start-up, and returns the
/// configuration they make. `env` is the agent's environment (variables not starting with
/// `HAIL_` are not hail's and pass unchecked); `args` are its arguments after the program name
/// and win over the variable of the same option, as in hail. This process's own environment is
/// not consulted. The error is one line.
pub fn check_agent_settings(
    env: &std::collections::BTreeMap<String, String>,
    args: &[String],
) -> Result<Config, String> {
    use clap::{CommandFactory, FromArgMatches};

    let option_of_var: std::collections::BTreeMap<String, String> = Cli::command()
        .get_arguments()
        .filter_map(|a| {
            Some((
                a.get_env()?.to_str()?.to_string(),
                a.get_long()?.to_string(),
            ))
        })
        .collect();
    let mut argv = vec!["hail".to_string()];
    for (key, value) in env.iter().filter(|(k, _)| k.starts_with("HAIL_")) {
        let Some(long) = option_of_var.get(key) else {
            let known: Vec<&str> = option_of_var.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown hail setting {key} (hail reads {})",
                known.join(", ")
            ));
        };
        argv.push(format!("--{long}={value}"));
    }
    if !env.contains_key("HAIL_JOB_URI") && !args.iter().any(|a| a.starts_with("--job-uri")) {
        return Err("no job URI (HAIL_JOB_URI)".to_string());
    }
    argv.extend(args.iter().cloned());
    // The variables are passed as options above: clap must not also read this process's.
    // Options given twice (variable, then argument): the argument wins, as in hail.
    let command = Cli::command()
        .mut_args(|a| a.env(None::<&'static str>))
        .args_override_self(true);
    let matches = command.try_get_matches_from(&argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        first.trim_start_matches("error: ").to_string()
    })?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    if cli.command.is_some() {
        return Err("the arguments run a subcommand, not the agent".to_string());
    }
    cli.agent.into_config(None).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_number_is_minutes() {
        assert_eq!(parse_period("5"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_period("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn units() {
        assert_eq!(parse_period("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_period("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_period("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_period("5x").is_err());
        assert!(parse_period("").is_err());
        assert!(parse_period("-1").is_err());
        assert!(parse_period("99999999999999999999").is_err());
        assert!(parse_period("999999999999999999m").is_err());
        assert!(parse_duration("5000000000000000h").is_err());
        assert!(parse_period("527041").is_err());
        assert_eq!(parse_duration("8784h"), Ok(MAX_DURATION));
    }

    #[test]
    fn profile_names_and_paths() {
        assert_eq!(
            profile_path("web"),
            Some(PathBuf::from("/nix/var/nix/profiles/web"))
        );
        assert_eq!(
            profile_path("/srv/p/web"),
            Some(PathBuf::from("/srv/p/web"))
        );
        assert_eq!(profile_path("../etc"), None);
        assert_eq!(profile_path("a/b"), None);
        assert_eq!(profile_path(""), None);
        assert_eq!(profile_path("/srv/../etc"), None);
        assert_eq!(profile_path("/"), None);
    }

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
        let err = r.unwrap().agent.into_config(None).unwrap_err();
        assert!(matches!(err, ConfigError::OneshotWithPollPeriod), "{err}");
    }

    #[test]
    fn default_poll_period_is_five_minutes() {
        let cli =
            Cli::try_parse_from(["hail", "--profile", "p", "--job-uri", "http://h/job/a/b/c"]);
        let config = cli.unwrap().agent.into_config(None).unwrap();
        assert_eq!(config.poll_period, Some(Duration::from_secs(300)));
    }

    #[test]
    fn userinfo_is_never_echoed() {
        let cli =
            Cli::try_parse_from(["hail", "--profile", "p", "--job-uri", "ftp://u:s3cret@h/x"])
                .unwrap();
        let err = cli.agent.into_config(None).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn job_uri_must_be_http() {
        let cli =
            Cli::try_parse_from(["hail", "--profile", "p", "--job-uri", "ftp://h/x"]).unwrap();
        assert!(matches!(
            cli.agent.into_config(None),
            Err(ConfigError::BadJobUri(_))
        ));
    }
}
