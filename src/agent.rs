//! The agent: start-up, the poll → decide → deploy → report loop, signals, and `--oneshot`.
//! It performs the effects; what they mean for hail's state is decided in [`crate::state`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::cli::Config;
use crate::deploy::{self, DeployError, Deployment, Limits};
use crate::format;
use crate::hydra::{self, HydraClient, HydraError};
use crate::netrc::{Netrc, NetrcError};
use crate::profile::{Profile, ProfileError};
use crate::state::{Activity, DeployFailure, Event, Next, Round, State};
use crate::systemd::{self, Watchdog};
use crate::types::{Build, ProfileState};

/// `MESSAGE_ID`s of the events people query and alert on.
pub const MSG_DEPLOYED: &str = "35afcec8bcfb4db0ab3acb30a8cead66";
pub const MSG_ACTIVATION_FAILED: &str = "5be39f6dd3a846e28ede5e841d6f7288";
pub const MSG_POLL_FAILED: &str = "ec2149355bc34fe19a8fc00de4588794";
pub const MSG_DEPLOY_FAILED: &str = "c304e6df32644e788062535ba3a6c98b";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Netrc(#[from] NetrcError),
    #[error(transparent)]
    HttpClient(#[from] hydra::ClientError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// How a `--oneshot` round ended, when it did not end well (already logged where it happened).
    #[error("{0}")]
    Round(Round),
    #[error("stopping")]
    Stopping,
}

impl AgentError {
    /// The documented exit codes (README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Signals(_) | AgentError::Runtime(_) | AgentError::Stopping => 1,
            AgentError::Netrc(_) | AgentError::HttpClient(_) => 3,
            AgentError::Profile(ProfileError::Locked { .. }) => 4,
            AgentError::Profile(ProfileError::CreateDir { .. } | ProfileError::LockFile { .. }) => {
                3
            }
            AgentError::Profile(_) => 6,
            AgentError::Round(round) => round.exit_code(),
        }
    }

    /// Whether the error was logged, with its fields, where it happened.
    pub fn logged(&self) -> bool {
        matches!(self, AgentError::Round(_))
    }
}

/// Runs the agent to completion.
pub fn run(config: Config) -> Result<(), AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    rt.block_on(async { Agent::start(config).await?.run().await })
}

struct Agent {
    config: Config,
    hydra: HydraClient,
    profile: Profile,
    _lock: crate::profile::ProfileLock,
    state: State,
    watchdog: Watchdog,
    stop: watch::Receiver<bool>,
    poll_now: Arc<Notify>,
}

impl Agent {
    /// Checks the configuration, takes the profile, runs the start-up activation, says READY.
    async fn start(config: Config) -> Result<Agent, AgentError> {
        let credentials = match &config.netrc_file {
            Some(path) => {
                let (netrc, warnings) = Netrc::load(path)?;
                for w in warnings {
                    warn!(hail.event = "started", "{w}");
                }
                let host = config.job.latest().host_str().unwrap_or_default();
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
        let hydra = HydraClient::new(&config.job, credentials, config.http_timeout)?;
        let (stop, poll_now) = listen_for_signals()?;
        let profile = Profile::new(config.profile.clone());
        let lock = profile.lock()?;
        // A profile that cannot be read (e.g. it points outside the store) is reported, not
        // fatal: the next deployment replaces it.
        let found = profile.state().unwrap_or_else(|e| {
            warn!(hail.event = "started", hail.error = %e, "{e}; treating it as empty");
            ProfileState::default()
        });
        let mut agent = Agent {
            hydra,
            profile,
            _lock: lock,
            state: State::new(found),
            watchdog: Watchdog::from_env(),
            stop,
            poll_now,
            config,
        };
        info!(
            hail.event = "started",
            "hail {} deploying {} to {}",
            env!("CARGO_PKG_VERSION"),
            agent.config.job.display(),
            agent.profile.path().display()
        );
        if agent.config.poll_period.is_some() && agent.state.profile().current.is_some() {
            agent.startup_activation().await;
        }
        systemd::ready(&agent.state.status_line(Activity::Starting));
        Ok(agent)
    }

    /// Re-applies the deployed generation (e.g. after a reboot), as the original hail did.
    async fn startup_activation(&mut self) {
        self.report(Activity::StartupActivation);
        let result = deploy::activate(
            &self.profile,
            None,
            self.config.activation_timeout,
            &self.watchdog,
            &mut self.stop,
        )
        .await;
        let generation = self.state.profile().generation;
        match &result {
            Ok(()) => info!(
                hail.event = "startup-activation",
                hail.generation = generation,
                "start-up activation of generation {} done",
                format::generation(generation)
            ),
            Err(e) => error!(
                hail.event = "activation-failed",
                message_id = MSG_ACTIVATION_FAILED,
                hail.generation = generation,
                hail.error = %e,
                "start-up activation failed: {e}"
            ),
        }
        self.state
            .apply(Event::StartupActivation(result.map_err(|e| e.to_string())));
    }

    async fn run(mut self) -> Result<(), AgentError> {
        let Some(period) = self.config.poll_period else {
            self.round().await?;
            return match self.state.last_round() {
                Some(r) if r.exit_code() != 0 => Err(AgentError::Round(r.clone())),
                _ => Ok(()),
            };
        };
        let mut ticks = self.watchdog.ticks();
        loop {
            if let Err(AgentError::Stopping) = self.round().await {
                break;
            }
            let wait = self.state.next_wait(period, entropy());
            self.report(Activity::Waiting(wait));
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
        systemd::stopping(&self.state.status_line(Activity::Stopping));
        Ok(())
    }

    /// One round: ask Hydra, decide, deploy if needed; its outcome goes into the state.
    /// `Err` only when hail is stopping.
    async fn round(&mut self) -> Result<(), AgentError> {
        self.report(Activity::Polling);
        let latest = match self.fetch_latest().await? {
            Ok(b) => b,
            Err(e) => {
                let round = Round::PollFailed(e.to_string());
                error!(
                    hail.event = "poll-failed",
                    message_id = MSG_POLL_FAILED,
                    hail.error = %round,
                    "{round}"
                );
                self.state.apply(Event::PollFailed(e.to_string()));
                return Ok(());
            }
        };
        let profile = self.profile.state().unwrap_or_else(|e| {
            warn!(hail.event = "poll", hail.error = %e, "{e}; deploying over it");
            ProfileState::default()
        });
        let next = self.state.apply(Event::Polled {
            profile,
            latest: latest.clone(),
        });
        match next {
            Next::Deploy(build) => self.deploy(build).await,
            Next::Wait => {
                if self.state.last_round() == Some(&Round::UpToDate) {
                    info!(
                        hail.event = "up-to-date",
                        hail.build_id = latest.id,
                        hail.store_path = %latest.path,
                        hail.generation = self.state.profile().generation,
                        "build {} is deployed; nothing to do",
                        latest.id
                    );
                }
                Ok(())
            }
        }
    }

    /// Hydra's answer, or `Err` when hail is stopping.
    async fn fetch_latest(&mut self) -> Result<Result<Build, HydraError>, AgentError> {
        let bound = self.config.http_timeout + Duration::from_secs(5);
        let mut stop = self.stop.clone();
        tokio::select! {
            r = self.watchdog.bounded(bound, self.hydra.latest()) => {
                Ok(r.unwrap_or_else(|()| Err(HydraError::Timeout {
                    url: hydra::redact(self.hydra.latest_url().as_str()),
                    timeout: self.config.http_timeout,
                })))
            }
            _ = stopped(&mut stop) => Err(AgentError::Stopping),
        }
    }

    async fn deploy(&mut self, build: Build) -> Result<(), AgentError> {
        self.report(Activity::Deploying(&build));
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
        let Deployment { profile, result } =
            deploy::deploy(&self.profile, &build, &limits, &self.watchdog, &mut stop).await;
        let generation = profile.generation;
        let result = match result {
            Err(DeployError::Stopped { .. }) => return Err(AgentError::Stopping),
            Ok(()) => {
                info!(
                    hail.event = "deployed",
                    message_id = MSG_DEPLOYED,
                    hail.build_id = build.id,
                    hail.store_path = %build.path,
                    hail.generation = generation,
                    "deployed build {} ({}) as generation {}",
                    build.id,
                    build.path,
                    format::generation(generation)
                );
                Ok(())
            }
            Err(e @ DeployError::Activation { .. }) => {
                error!(
                    hail.event = "activation-failed",
                    message_id = MSG_ACTIVATION_FAILED,
                    hail.build_id = build.id,
                    hail.store_path = %build.path,
                    hail.generation = generation,
                    hail.error = %e,
                    "{e}"
                );
                Err(DeployFailure {
                    activation: true,
                    message: e.to_string(),
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
                Err(DeployFailure {
                    activation: false,
                    message: e.to_string(),
                })
            }
        };
        self.state.apply(Event::Deployed {
            build,
            profile,
            result,
        });
        Ok(())
    }

    fn report(&self, activity: Activity) {
        systemd::status(&self.state.status_line(activity));
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
