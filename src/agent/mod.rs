//! The agent: start-up, the poll → decide → deploy → report loop, signals, operators' requests,
//! and `--oneshot`. It performs the effects; what they mean for hail's state is decided in
//! [`crate::state`], and [`report`] writes the journal entries.

mod gate;
mod report;

use gate::Offer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

pub use report::{
    MSG_ACTIVATION_FAILED, MSG_DEPLOY_FAILED, MSG_DEPLOYED, MSG_HEALTH_CHECK_FAILED,
    MSG_MANUAL_CHANGE, MSG_POLL_FAILED, MSG_STATE_RESET,
};

use crate::cli::Config;
use crate::decide::{self, Policy};
use crate::deploy::{self, DeployError, Deployment, Limits};
use crate::hydra::{self, HydraClient, HydraError};
use crate::metrics;
use crate::netrc::{Netrc, NetrcError};
use crate::profile::{Profile, ProfileError};
use crate::record::DeploymentResult;
use crate::state::{Activity, DeployFailure, Event, Next, Round, State};
use crate::state_file::{AgentMark, StateDir, StateError};
use crate::systemd::{self, Watchdog};
use crate::types::{Build, ProfileState};

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
    #[error(transparent)]
    State(#[from] StateError),
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
            AgentError::State(StateError::Lock { .. }) => 4,
            AgentError::Profile(ProfileError::CreateDir { .. } | ProfileError::LockFile { .. }) => {
                3
            }
            AgentError::State(_) => 3,
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
    books: Books,
    watchdog: Watchdog,
    stop: watch::Receiver<bool>,
    signals: Arc<Signals>,
}

/// What the agent knows and where it keeps it: the state, its file and the metrics file.
struct Books {
    state: State,
    dir: StateDir,
    _mark: AgentMark,
    metrics_file: Option<std::path::PathBuf>,
    /// An operator asked for a poll now (`hail retry`, `hail resume`).
    poll_now: bool,
}

/// SIGHUP (poll now) and SIGUSR1 (an operator's request is waiting).
#[derive(Default)]
struct Signals {
    poll_now: Notify,
    requests: Notify,
}

impl Agent {
    /// Checks the configuration, takes the profile and the state, runs the start-up activation,
    /// says READY.
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
        let (stop, signals) = listen_for_signals()?;
        let profile = Profile::new(config.profile.clone());
        let lock = profile.lock()?;
        let dir = config.state_dir.clone();
        dir.create()?;
        let mark = dir.mark_agent()?;
        let now = Timestamp::now();
        let (record, problem) = dir.load(now);
        if let Some(problem) = problem {
            report::state_reset(&problem);
        }
        // A profile that cannot be read (e.g. it points outside the store) is reported, not
        // fatal: the next deployment replaces it.
        let found = profile.state().unwrap_or_else(|e| {
            warn!(hail.event = "started", hail.error = %e, "{e}; treating it as empty");
            ProfileState::default()
        });
        let profile_path = profile.path().display().to_string();
        let policy = Policy {
            allow_downgrade: config.allow_downgrade,
            min_build_age: config.min_build_age,
            rollout_delay: rollout_delay(&config),
        };
        let state = State::new(
            record,
            policy,
            config.job.display(),
            &profile_path,
            found,
            now,
        );
        info!(
            hail.event = "started",
            "hail {} deploying {} to {}",
            env!("CARGO_PKG_VERSION"),
            config.job.display(),
            profile_path
        );
        let mut agent = Agent {
            hydra,
            profile,
            _lock: lock,
            books: Books {
                state,
                dir,
                _mark: mark,
                metrics_file: config.metrics_file.clone(),
                poll_now: false,
            },
            watchdog: Watchdog::from_env(),
            stop,
            signals,
            config,
        };
        agent.books.take_requests();
        agent.books.settle();
        let deployed = agent.books.state.profile().current.is_some();
        if agent.config.poll_period.is_some() && deployed {
            agent.startup_activation().await;
        }
        if let Some(b) = agent.books.state.take_unchecked()
            && let Ok(path) = crate::store_path::StorePath::parse(&b.store_path)
        {
            agent.recheck(Build::new(b.build_id, path)).await?;
        }
        systemd::ready(&agent.books.state.status_line(Activity::Starting));
        Ok(agent)
    }

    /// Re-applies the deployed generation (e.g. after a reboot), as the original hail did.
    async fn startup_activation(&mut self) {
        self.report(Activity::StartupActivation);
        let activation = deploy::activate(
            &self.profile,
            None,
            self.config.activation_timeout,
            &self.watchdog,
            &mut self.stop,
        );
        let result = self
            .books
            .with_requests(&self.signals, activation)
            .await
            .map_err(|e| e.to_string());
        report::startup_activation(self.books.state.profile().generation, &result);
        self.books
            .state
            .apply(Timestamp::now(), Event::StartupActivation(result));
    }

    async fn run(mut self) -> Result<(), AgentError> {
        let Some(period) = self.config.poll_period else {
            let round = self.round().await;
            self.books.settle();
            round?;
            return match self.books.state.last_round() {
                Some(r) if r.exit_code() != 0 => Err(AgentError::Round(r.clone())),
                _ => Ok(()),
            };
        };
        let mut ticks = self.watchdog.ticks();
        loop {
            if let Err(AgentError::Stopping) = self.round().await {
                break;
            }
            if std::mem::take(&mut self.books.poll_now) {
                continue;
            }
            let wait = self
                .books
                .state
                .schedule(Timestamp::now(), period, entropy());
            self.books.settle();
            self.report(Activity::Waiting(wait));
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = self.signals.poll_now.notified() => {
                        // Changed unit settings: systemd restarts hail (see unit_change).
                        if crate::unit_change::restart_if_changed().await {
                            continue;
                        }
                        info!(hail.event = "poll", "reload requested: polling now");
                        break;
                    }
                    _ = self.signals.requests.notified() => {
                        self.books.take_requests();
                        self.books.settle();
                        if std::mem::take(&mut self.books.poll_now) {
                            break;
                        }
                        self.report(Activity::Waiting(
                            sleep.deadline().saturating_duration_since(tokio::time::Instant::now()),
                        ));
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
        systemd::stopping(&self.books.state.status_line(Activity::Stopping));
        Ok(())
    }

    /// One round: ask Hydra, decide, deploy if needed; its outcome goes into the state, which
    /// the caller saves (once a round: a no-op poll costs one write). `Err` only when hail is
    /// stopping.
    async fn round(&mut self) -> Result<(), AgentError> {
        self.books.take_requests();
        self.report(Activity::Polling);
        let (latest, passed_over) = match self.fetch_offer().await? {
            Ok(Offer::Build { build, passed_over }) => (build, passed_over),
            Ok(Offer::Nothing(why)) => {
                let event = Event::NoneEligible(why);
                self.books.state.apply(Timestamp::now(), event);
                if let Some(round) = self.books.state.last_round() {
                    report::none_eligible(round);
                }
                return Ok(());
            }
            Err(e) => {
                let round = Round::PollFailed(e.to_string());
                report::poll_failed(&round.to_string());
                self.books
                    .state
                    .apply(Timestamp::now(), Event::PollFailed(e.to_string()));
                return Ok(());
            }
        };
        let profile = self.profile.state().unwrap_or_else(|e| {
            warn!(hail.event = "poll", hail.error = %e, "{e}; deploying over it");
            ProfileState::default()
        });
        if !passed_over.is_empty() {
            report::passed_over(&latest, &passed_over);
        }
        let event = Event::Polled {
            profile,
            latest: latest.clone(),
            passed_over,
        };
        match self.books.state.apply(Timestamp::now(), event) {
            Next::Deploy(build) => {
                // Saved before a deployment: it says one is under way.
                self.books.settle();
                self.deploy(build).await?;
            }
            Next::PollNow | Next::Wait => match self.books.state.last_round() {
                Some(Round::UpToDate) => {
                    report::up_to_date(&latest, self.books.state.profile().generation)
                }
                Some(round) => report::held_back(&latest, round),
                None => {}
            },
        }
        Ok(())
    }

    /// What Hydra offers, or `Err` when hail is stopping.
    async fn fetch_offer(&mut self) -> Result<Result<Offer, HydraError>, AgentError> {
        let mut stop = self.stop.clone();
        let mut memory = self.books.state.gate().clone();
        let ask = gate::offer(
            &self.hydra,
            &self.config.job,
            self.config.gate,
            &mut memory,
            &self.watchdog,
            self.config.http_timeout,
        );
        let fetch = async {
            tokio::select! {
                offer = ask => Ok(offer),
                _ = stopped(&mut stop) => Err(AgentError::Stopping),
            }
        };
        let offer = self.books.with_requests(&self.signals, fetch).await;
        self.books.state.remember_gate(memory);
        offer
    }

    async fn deploy(&mut self, build: Build) -> Result<(), AgentError> {
        self.report(Activity::Deploying(&build));
        report::deploying(&build);
        let limits = limits(&self.config);
        let rollback_to = self.books.state.profile().generation;
        let mut stop = self.stop.clone();
        let deployment = deploy::deploy(&self.profile, &build, &limits, &self.watchdog, &mut stop);
        let deployment = self.books.with_requests(&self.signals, deployment).await;
        self.conclude(build, deployment, rollback_to)
    }

    /// Checks a build the last hail switched to but did not see through (see
    /// [`State::take_unchecked`]).
    async fn recheck(&mut self, build: Build) -> Result<(), AgentError> {
        let limits = limits(&self.config);
        let rollback_to = self.profile.before(self.books.state.profile().generation);
        let mut stop = self.stop.clone();
        let deployment = deploy::recheck(&self.profile, &build, &limits, &self.watchdog, &mut stop);
        let deployment = self.books.with_requests(&self.signals, deployment).await;
        self.conclude(build, deployment, rollback_to.generation)
    }

    /// Logs how a deployment ended and feeds it to the state; `Err` when hail is stopping.
    fn conclude(
        &mut self,
        build: Build,
        Deployment { profile, result }: Deployment,
        rollback_to: Option<u64>,
    ) -> Result<(), AgentError> {
        report::deployment(&build, profile.generation, &result);
        let result = match result {
            Err(DeployError::Stopped { .. } | DeployError::Unchecked { .. }) => {
                return Err(AgentError::Stopping);
            }
            Ok(()) => {
                self.prune(profile.generation, rollback_to);
                Ok(())
            }
            Err(e) => Err(failure(&e)),
        };
        let event = Event::Deployed {
            build,
            profile,
            result,
        };
        self.books.state.apply(Timestamp::now(), event);
        Ok(())
    }

    /// Deletes the generations beyond `--keep-generations` after a successful deployment.
    fn prune(&self, current: Option<u64>, rollback_to: Option<u64>) {
        let keep = self.config.keep_generations;
        let pruned = self.profile.generations().and_then(|all| {
            let old = decide::generations_to_delete(&all, keep, current, rollback_to);
            self.profile.delete_generations(&old).map(|()| old)
        });
        match pruned {
            Ok(old) if old.is_empty() => {}
            Ok(old) => info!(
                hail.event = "pruned",
                "deleted generations {old:?} of {} (keeping {keep})",
                self.profile.path().display()
            ),
            Err(e) => warn!(hail.event = "pruned", hail.error = %e, "{e}"),
        }
    }

    fn report(&self, activity: Activity) {
        systemd::status(&self.books.state.status_line(activity));
    }
}

impl Books {
    /// Awaits `work`, applying operators' requests as they come (a pause asked for during a
    /// deployment is recorded at once; the deployment under way completes).
    async fn with_requests<T>(&mut self, signals: &Signals, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = signals.requests.notified() => {
                    self.take_requests();
                    self.settle();
                }
            }
        }
    }

    /// Applies the requests waiting in the state directory.
    fn take_requests(&mut self) {
        for request in self.dir.take_requests() {
            match request {
                Ok(r) => {
                    info!(hail.event = "request", "operator's request: {r:?}");
                    if self.state.apply(Timestamp::now(), Event::Control(r)) == Next::PollNow {
                        self.poll_now = true;
                    }
                }
                Err(e) => warn!(hail.event = "request", "{e}"),
            }
        }
    }

    /// Logs what the state noticed, saves it, and writes the metrics.
    fn settle(&mut self) {
        for notice in self.state.take_notices() {
            report::notice(&notice);
        }
        let record = self.state.record();
        if let Err(e) = self.dir.save(record) {
            report::not_saved("state", &e);
        }
        if let Some(path) = &self.metrics_file
            && let Err(e) = metrics::write(path, record)
        {
            report::not_saved("metrics", &e);
        }
    }
}

/// SIGTERM/SIGINT set the stop flag; SIGHUP asks for a poll now; SIGUSR1 says an operator's
/// request waits in the state directory.
fn listen_for_signals() -> Result<(watch::Receiver<bool>, Arc<Signals>), AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(AgentError::Signals)?;
    let (tx, rx) = watch::channel(false);
    let signals = Arc::new(Signals::default());
    let notify = signals.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { let _ = tx.send(true); }
                _ = int.recv() => { let _ = tx.send(true); }
                _ = hup.recv() => notify.poll_now.notify_one(),
                _ = usr1.recv() => notify.requests.notify_one(),
            }
        }
    });
    Ok((rx, signals))
}

/// This host's delay in the rollout window, from `--rollout-key` or the machine id.
fn rollout_delay(config: &Config) -> Duration {
    if config.rollout_spread.is_zero() {
        return Duration::ZERO;
    }
    let key = config.rollout_key.clone().or_else(|| {
        let id = std::fs::read_to_string(MACHINE_ID).ok()?;
        Some(id.trim().to_owned()).filter(|id| !id.is_empty())
    });
    let key = key.unwrap_or_else(|| {
        warn!(
            hail.event = "started",
            "no {MACHINE_ID} and no --rollout-key: this host takes the slot of the empty key"
        );
        String::new()
    });
    let delay = decide::rollout_delay(&key, config.job.display(), config.rollout_spread);
    info!(
        hail.event = "started",
        "rollout slot: {} after a build is eligible (spread {})",
        crate::format::duration(delay),
        crate::format::duration(config.rollout_spread)
    );
    delay
}

fn limits(config: &Config) -> Limits<'_> {
    Limits {
        realise: config.realise_timeout,
        activation: config.activation_timeout,
        health: &config.health,
    }
}

/// Where systemd keeps this host's id.
const MACHINE_ID: &str = "/etc/machine-id";

/// What the state needs to know of a failed deployment.
fn failure(e: &DeployError) -> DeployFailure {
    let (result, reason) = match e {
        DeployError::Activation { source, .. } => (
            DeploymentResult::ActivationFailed,
            format!("activation failed: {source}"),
        ),
        DeployError::HealthCheck { source, .. } => (
            DeploymentResult::HealthCheckFailed,
            format!("health check failed: {source}"),
        ),
        _ => (DeploymentResult::Failed, String::new()),
    };
    DeployFailure {
        result,
        message: e.to_string(),
        reason,
    }
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
