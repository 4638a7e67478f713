//! The agent: start-up, the poll → decide → deploy → report loop, signals, and `--oneshot`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::cli::{AgentArgs, Config, ConfigError};
use crate::decide::{self, Decision, Remembered};
use crate::deploy::{self, DeployError, Limits, show};
use crate::hydra::{self, Build, HydraClient, HydraError};
use crate::netrc::{Netrc, NetrcError};
use crate::profile::{Profile, ProfileError, ProfileState};
use crate::systemd::{self, Watchdog};

/// `MESSAGE_ID`s of the events people query and alert on.
pub const MSG_DEPLOYED: &str = "35afcec8bcfb4db0ab3acb30a8cead66";
pub const MSG_ACTIVATION_FAILED: &str = "5be39f6dd3a846e28ede5e841d6f7288";
pub const MSG_POLL_FAILED: &str = "ec2149355bc34fe19a8fc00de4588794";
pub const MSG_DEPLOY_FAILED: &str = "c304e6df32644e788062535ba3a6c98b";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Netrc(#[from] NetrcError),
    #[error(transparent)]
    HttpClient(#[from] hydra::ClientError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("poll failed: {0}")]
    Poll(#[from] HydraError),
    #[error("deploying build {id} failed: {source}")]
    Deploy { id: u64, source: DeployError },
    #[error("build {id} ({path}) failed to activate before; waiting for a newer build")]
    KnownBad { id: u64, path: String },
    #[error("stopping")]
    Stopping,
}

impl AgentError {
    /// The documented exit codes (README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Signals(_) | AgentError::Stopping => 1,
            AgentError::Config(_) | AgentError::Netrc(_) | AgentError::HttpClient(_) => 3,
            AgentError::Profile(ProfileError::Locked { .. }) => 4,
            AgentError::Profile(ProfileError::CreateDir { .. } | ProfileError::LockFile { .. }) => {
                3
            }
            AgentError::Profile(_) => 6,
            AgentError::Poll(_) => 5,
            AgentError::Deploy {
                source: DeployError::Activation { .. },
                ..
            }
            | AgentError::KnownBad { .. } => 7,
            AgentError::Deploy { .. } => 6,
        }
    }
}

/// Runs the agent to completion; the process exit code.
pub fn main(args: AgentArgs) -> u8 {
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async {
        let config = args.into_config(credentials_dir.as_deref())?;
        Agent::start(config).await?.run().await
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            // Poll and deployment failures were logged with their fields where they happened.
            if !matches!(
                e,
                AgentError::Poll(_) | AgentError::Deploy { .. } | AgentError::KnownBad { .. }
            ) {
                error!(hail.event = "exit", hail.error = %e, "{e}");
            }
            systemd::status(&format!("failed: {e}"));
            e.exit_code()
        }
    }
}

struct Agent {
    config: Config,
    job: String,
    hydra: HydraClient,
    profile: Profile,
    _lock: crate::profile::ProfileLock,
    state: ProfileState,
    /// The Hydra build id of what the profile points at, once a poll has told us.
    deployed_build: Option<u64>,
    remembered: Remembered,
    /// Why the start-up activation failed; shown in the status until a deployment succeeds.
    startup_failure: Option<String>,
    watchdog: Watchdog,
    stop: watch::Receiver<bool>,
    poll_now: Arc<Notify>,
}

impl Agent {
    /// Checks the configuration, takes the profile, runs the start-up activation, says READY.
    async fn start(config: Config) -> Result<Agent, AgentError> {
        let latest = hydra::latest_url(&config.job_uri)
            .map_err(|_| ConfigError::BadJobUri(crate::cli::without_userinfo(&config.job_uri)))?;
        let job = hydra::job_display(&config.job_uri).unwrap_or_default();
        let credentials = match &config.netrc_file {
            Some(path) => {
                let (netrc, warnings) = Netrc::load(path)?;
                for w in warnings {
                    warn!(hail.event = "started", "{w}");
                }
                let host = latest.host_str().unwrap_or_default();
                let credentials = netrc.credentials_for(host);
                if credentials.is_none() && netrc.has_entry_for(host) {
                    warn!(
                        hail.event = "started",
                        "netrc file {}: the entry for {host} has no password; sending no credentials",
                        path.display()
                    );
                }
                credentials
            }
            None => None,
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let hydra = HydraClient::new(latest, credentials, config.http_timeout)?;
        let (stop, poll_now) = listen_for_signals()?;
        let profile = Profile::new(config.profile.clone());
        let lock = profile.lock()?;
        // A profile that cannot be read (e.g. it points outside the store) is reported, not
        // fatal: the next deployment replaces it.
        let state = profile.state().unwrap_or_else(|e| {
            warn!(hail.event = "started", hail.error = %e, "{e}; treating it as empty");
            ProfileState::default()
        });
        let watchdog = Watchdog::from_env();
        let mut agent = Agent {
            job,
            hydra,
            profile,
            _lock: lock,
            state,
            deployed_build: None,
            remembered: Remembered::default(),
            startup_failure: None,
            watchdog,
            stop,
            poll_now,
            config,
        };
        info!(
            hail.event = "started",
            "hail {} deploying {} to {}",
            env!("CARGO_PKG_VERSION"),
            agent.job,
            agent.profile.path().display()
        );
        if agent.config.poll_period.is_some() && agent.state.current.is_some() {
            agent.startup_activation().await;
        }
        systemd::ready(&agent.status_line("starting"));
        Ok(agent)
    }

    /// Re-applies the deployed generation (e.g. after a reboot), as the original hail did.
    async fn startup_activation(&mut self) {
        self.report("running the start-up activation");
        let result = deploy::activate(
            &self.profile,
            None,
            self.config.activation_timeout,
            &self.watchdog,
            &mut self.stop,
        )
        .await;
        match result {
            Ok(()) => info!(
                hail.event = "startup-activation",
                hail.generation = self.state.generation,
                "start-up activation of generation {} done",
                show(self.state.generation)
            ),
            Err(e) => {
                error!(
                    hail.event = "activation-failed",
                    message_id = MSG_ACTIVATION_FAILED,
                    hail.generation = self.state.generation,
                    hail.error = %e,
                    "start-up activation failed: {e}"
                );
                self.startup_failure = Some(e.to_string());
            }
        }
    }

    async fn run(mut self) -> Result<(), AgentError> {
        let Some(period) = self.config.poll_period else {
            return self.poll().await;
        };
        let mut ticks = self.watchdog.ticks();
        loop {
            let activity = match self.poll().await {
                Ok(()) => {
                    self.remembered.failures = 0;
                    None
                }
                Err(AgentError::Stopping) => break,
                // Polling worked; there is just nothing new to deploy yet.
                Err(e @ AgentError::KnownBad { .. }) => {
                    self.remembered.failures = 0;
                    Some(e)
                }
                Err(e) => {
                    self.remembered.failures += 1;
                    Some(e)
                }
            };
            let wait = decide::with_jitter(
                decide::next_wait(period, self.remembered.failures),
                entropy(),
            );
            let activity = match activity {
                None => match &self.startup_failure {
                    None => format!("idle, next poll in {}", human(wait)),
                    Some(e) => format!(
                        "idle, next poll in {} (start-up activation failed: {e})",
                        human(wait)
                    ),
                },
                Some(e @ AgentError::KnownBad { .. }) => {
                    format!("{e}; next poll in {}", human(wait))
                }
                Some(e) => format!("{e}; retrying in {}", human(wait)),
            };
            self.report(&activity);
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = self.poll_now.notified() => {
                        info!(hail.event = "poll", "reload requested: polling now");
                        break;
                    }
                    _ = self.stop.changed() => break,
                    _ = systemd::tick(&mut ticks) => self.watchdog.ping(),
                }
            }
            if *self.stop.borrow() {
                break;
            }
        }
        info!(hail.event = "stopping", "stopping");
        systemd::stopping(&self.status_line("stopping"));
        Ok(())
    }

    /// One poll: ask Hydra, decide, deploy if needed. Errors are reported here and returned.
    async fn poll(&mut self) -> Result<(), AgentError> {
        self.report("polling Hydra");
        let latest = match self.fetch_latest().await {
            Ok(b) => b,
            Err(AgentError::Stopping) => return Err(AgentError::Stopping),
            Err(e) => {
                error!(
                    hail.event = "poll-failed",
                    message_id = MSG_POLL_FAILED,
                    hail.error = %e,
                    "{e}"
                );
                return Err(e);
            }
        };
        self.state = self.profile.state().unwrap_or_else(|e| {
            warn!(hail.event = "poll", hail.error = %e, "{e}; deploying over it");
            ProfileState::default()
        });
        match decide::decide(self.state.current.as_ref(), &self.remembered, &latest) {
            Decision::UpToDate => {
                self.deployed_build = Some(latest.id);
                info!(
                    hail.event = "up-to-date",
                    hail.build_id = latest.id,
                    hail.store_path = %latest.path,
                    hail.generation = self.state.generation,
                    "build {} is deployed; nothing to do",
                    latest.id
                );
                Ok(())
            }
            Decision::SkipKnownBad => Err(AgentError::KnownBad {
                id: latest.id,
                path: latest.path.to_string(),
            }),
            Decision::Deploy => self.deploy(latest).await,
        }
    }

    async fn fetch_latest(&mut self) -> Result<Build, AgentError> {
        let bound = self.config.http_timeout + Duration::from_secs(5);
        let mut stop = self.stop.clone();
        tokio::select! {
            r = self.watchdog.bounded(bound, self.hydra.latest()) => {
                r.unwrap_or_else(|()| Err(HydraError::Timeout {
                    url: hydra::redact(self.hydra.latest_url()),
                    timeout: self.config.http_timeout,
                })).map_err(AgentError::Poll)
            }
            _ = stopped(&mut stop) => Err(AgentError::Stopping),
        }
    }

    async fn deploy(&mut self, build: Build) -> Result<(), AgentError> {
        self.report(&format!(
            "deploying build {} ({})",
            build.id,
            build.path.short()
        ));
        info!(
            hail.event = "deploying",
            hail.build_id = build.id,
            hail.store_path = %build.path,
            "deploying build {} ({})",
            build.id,
            build.path
        );
        let limits = Limits {
            realise: self.config.realise_timeout,
            activation: self.config.activation_timeout,
        };
        let mut stop = self.stop.clone();
        let before = (self.state.current.clone(), self.deployed_build);
        let result =
            deploy::deploy(&self.profile, &build, &limits, &self.watchdog, &mut stop).await;
        // Whatever happened, report what the profile points at now.
        self.state = self.profile.state().unwrap_or_else(|_| self.state.clone());
        match result {
            Err(DeployError::Stopped { .. }) => Err(AgentError::Stopping),
            Ok(state) => {
                self.state = state;
                self.deployed_build = Some(build.id);
                self.remembered.bad_path = None;
                self.startup_failure = None;
                info!(
                    hail.event = "deployed",
                    message_id = MSG_DEPLOYED,
                    hail.build_id = build.id,
                    hail.store_path = %build.path,
                    hail.generation = self.state.generation,
                    "deployed build {} ({}) as generation {}",
                    build.id,
                    build.path,
                    show(self.state.generation)
                );
                Ok(())
            }
            Err(e @ DeployError::Activation { .. }) => {
                self.remembered.bad_path = Some(build.path.clone());
                // Rolled back to what was deployed before: that build id still describes it.
                self.deployed_build = if self.state.current == before.0 {
                    before.1
                } else {
                    None
                };
                error!(
                    hail.event = "activation-failed",
                    message_id = MSG_ACTIVATION_FAILED,
                    hail.build_id = build.id,
                    hail.store_path = %build.path,
                    hail.generation = self.state.generation,
                    hail.error = %e,
                    "{e}"
                );
                Err(AgentError::Deploy {
                    id: build.id,
                    source: e,
                })
            }
            Err(e) => {
                error!(
                    hail.event = "deploy-failed",
                    message_id = MSG_DEPLOY_FAILED,
                    hail.build_id = build.id,
                    hail.store_path = %build.path,
                    hail.error = %e,
                    "{e}"
                );
                Err(AgentError::Deploy {
                    id: build.id,
                    source: e,
                })
            }
        }
    }

    /// `deployed <what>; <activity>`: the one line systemd shows under the unit.
    fn status_line(&self, activity: &str) -> String {
        let what = match (&self.state.current, self.deployed_build) {
            (None, _) => "nothing".to_owned(),
            (Some(p), Some(id)) => {
                format!(
                    "build {id} ({}), generation {}",
                    p.short(),
                    show(self.state.generation)
                )
            }
            (Some(p), None) => format!("{}, generation {}", p.short(), show(self.state.generation)),
        };
        format!("deployed {what}; {activity}")
    }

    fn report(&self, activity: &str) {
        systemd::status(&self.status_line(activity));
    }
}

/// SIGTERM/SIGINT set the stop flag; SIGHUP asks for a poll now.
fn listen_for_signals() -> Result<(watch::Receiver<bool>, Arc<Notify>), AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
    let (tx, rx) = watch::channel(false);
    let poll_now = Arc::new(Notify::new());
    let notify = poll_now.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { let _ = tx.send(true); }
                _ = int.recv() => { let _ = tx.send(true); }
                _ = hup.recv() => notify.notify_one(),
            }
        }
    });
    Ok((rx, poll_now))
}

/// Resolves once the stop flag is set.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A different value at every call (std's hasher keys are random per process and per call).
fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `90s` → `1m30s`, `300s` → `5m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if sec > 0 || out.is_empty() {
        out += &format!("{sec}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::human;
    use std::time::Duration;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(0)), "0s");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(330)), "5m30s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_millis(32_900)), "32s");
    }
}
