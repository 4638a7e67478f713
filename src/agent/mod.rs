//! The agent: start-up, the poll → decide → deploy → report loop, signals, operators' requests,
//! and `--oneshot`. It performs the effects; what they mean for hail's state is decided in
//! [`crate::state`], and [`report`] writes the journal entries.

mod books;
mod confirm;
mod gate;
mod reboot;
mod report;
mod signals;
mod start;

use books::Books;
use signals::{Signals, stopped};

use gate::Offer;

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::watch;
use tracing::{info, warn};

pub use report::{
    MSG_ACTIVATION_FAILED, MSG_CONTACT_LOST, MSG_DEPLOY_FAILED, MSG_DEPLOYED,
    MSG_HEALTH_CHECK_FAILED, MSG_MANUAL_CHANGE, MSG_NOT_RECORDED, MSG_POLL_FAILED,
    MSG_REBOOT_NEEDED, MSG_STATE_RESET,
};

use crate::cli::Config;
use crate::decide;
use crate::deploy::{self, DeployError, Deployment, Limits, Stage};
use crate::hooks;
use crate::hydra::{self, HydraClient, HydraError};
use crate::netrc::NetrcError;
use crate::profile::{Profile, ProfileError};
use crate::record::{DeploymentResult, Verdict};
use crate::state::{Activity, DeployFailure, Event, Next, Round};
use crate::state_file::StateError;
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
    /// The documented exit codes (docs/src/reference/exit-codes.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Signals(_) | AgentError::Runtime(_) | AgentError::Stopping => 1,
            AgentError::Netrc(_) | AgentError::HttpClient(_) => 3,
            AgentError::Profile(ProfileError::Locked { .. }) => 4,
            AgentError::State(StateError::Held { .. }) => 4,
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

/// How [`Agent::see_through`] takes a deployment up.
pub(super) enum Through {
    /// A new deployment.
    Deploy,
    /// One the last hail switched to but did not see through.
    Resume,
    /// One the last hail had judged (this verdict) and was rolling back.
    RollBack(Verdict),
}

/// Runs the agent to completion.
pub fn run(config: Config) -> Result<(), AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // A handful of sockets and pipes at a time: no need for room for 1,024 events.
        .max_io_events_per_tick(64)
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
    /// `--reboot-window`: the wait for the window was logged.
    reboot_announced: bool,
    /// A deployment the last hail did not see through, and how it is taken up once hail runs.
    unfinished: Option<(Build, Through)>,
}

impl Agent {
    async fn run(mut self) -> Result<(), AgentError> {
        let started = self.after_start().await;
        let Some(period) = self.config.poll_period else {
            started?;
            let round = self.round().await;
            self.reboot_if_needed().await;
            self.books.settle();
            round?;
            return match self.books.state.last_round() {
                Some(r) if r.exit_code() != 0 => Err(AgentError::Round(r.clone())),
                _ => Ok(()),
            };
        };
        let mut ticks = self.watchdog.ticks();
        loop {
            if started.is_err() {
                break;
            }
            if let Err(AgentError::Stopping) = self.round().await {
                break;
            }
            self.reboot_if_needed().await;
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
        // What the last round learnt, if a stop cut it short before the wait saved it.
        self.books.settle();
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
                let event = Event::PollFailed(e.to_string());
                self.books.state.apply(Timestamp::now(), event);
                if let Some(round) = self.books.state.last_round() {
                    report::poll_failed(&round.to_string());
                }
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
            hydra_ahead: self.hydra.clock_ahead(),
        };
        match self.books.state.apply(Timestamp::now(), event) {
            Next::Deploy(build) => {
                // Nothing is switched that is not recorded first: the saved state says a
                // deployment is under way, so that a hail killed during it knows what it did.
                if let Err(e) = self.books.settle_before_switch() {
                    let event = Event::NotRecorded {
                        build: build.clone(),
                        error: e.to_string(),
                    };
                    self.books.state.apply(Timestamp::now(), event);
                    if let Some(round) = self.books.state.last_round() {
                        report::not_recorded(&build, round);
                    }
                    return Ok(());
                }
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
        report::deploying(&build);
        self.see_through(build, Through::Deploy).await
    }

    /// Deploys `build`, or sees through a deployment of it the last hail switched to but did
    /// not finish (see [`State::take_unfinished`]: a profile's is activated again, a system's
    /// switch followed to its end, a rollback under way finished); then its checks,
    /// confirmation, outcome and hook.
    async fn see_through(&mut self, build: Build, how: Through) -> Result<(), AgentError> {
        self.report(Activity::Deploying(&build));
        let limits = limits(&self.config);
        let good = self.books.state.rollback_target();
        let keep = good.as_ref().and_then(|g| g.generation);
        let previous = self.previous_build();
        let (profile, watchdog) = (&self.profile, &self.watchdog);
        let mut stop = self.stop.clone();
        let stage = match how {
            Through::Deploy => {
                let deploy = deploy::deploy(profile, &build, good, &limits, watchdog, &mut stop);
                self.books.with_requests(&self.signals, deploy).await
            }
            Through::Resume => {
                let resume = deploy::resume(profile, &build, good, &limits, watchdog, &mut stop);
                self.books.with_requests(&self.signals, resume).await
            }
            Through::RollBack(verdict) => {
                Stage::Failing(deploy::Failing::recorded(profile, &build, good, verdict))
            }
        };
        let deployment = match stage {
            Stage::Done(deployment) => self.confirm(&build, deployment).await?,
            Stage::Failing(failing) => self.roll_back(&build, failing).await,
        };
        self.finish(build, deployment, keep, previous).await
    }

    /// A failed deployment's verdict is saved (the build known-bad, the rollback under way),
    /// then the profile returns to the last good build. A hail stopped during the rollback
    /// finishes it at its next start; the failed build is not activated again.
    async fn roll_back(&mut self, build: &Build, failing: deploy::Failing) -> Deployment {
        self.judge(build, failing.verdict());
        let limits = limits(&self.config);
        let mut stop = self.stop.clone();
        let roll = failing.roll_back(&self.profile, &limits, &self.watchdog, &mut stop);
        self.books.with_requests(&self.signals, roll).await
    }

    /// Records the verdict on `build` before its rollback starts. Unsaved, the rollback goes
    /// ahead all the same (the state write failure is in the journal): running the last good
    /// build matters more.
    fn judge(&mut self, build: &Build, verdict: Verdict) {
        let event = Event::Failing {
            build: build.clone(),
            verdict,
        };
        self.books.state.apply(Timestamp::now(), event);
        let _ = self.books.settle_before_switch();
    }

    /// The build deployed before a deployment (the last good one), for the hooks.
    fn previous_build(&self) -> Option<u64> {
        self.books
            .state
            .record()
            .good
            .as_ref()
            .and_then(|g| g.build_id)
    }

    /// Concludes a deployment, then runs the operator's hook for its outcome (once the outcome
    /// is saved: a hook that hangs or takes hail down loses nothing).
    async fn finish(
        &mut self,
        build: Build,
        deployment: Deployment,
        keep: Option<u64>,
        previous: Option<u64>,
    ) -> Result<(), AgentError> {
        let event = hooks::Event::of(&deployment.result);
        let error = deployment.result.as_ref().err().map(|e| e.to_string());
        let generation = deployment.profile.generation;
        self.conclude(build.clone(), deployment, keep)?;
        // A switch's result, left for a hail it restarted, is not needed once the outcome is
        // saved; nor is a hook run before it is.
        let result = crate::system::Tracked::new(build.id, self.config.state_dir.path())
            .map(|t| t.result)
            .filter(|r| r.exists());
        let hook = event.filter(|e| hooks::command(&self.config.hooks, *e).is_some());
        if result.is_some() || hook.is_some() {
            self.books.settle();
        }
        if let Some(result) = result {
            let _ = std::fs::remove_file(result);
        }
        let Some(event) = hook else {
            return Ok(());
        };
        let outcome = hooks::Outcome {
            event,
            build: &build,
            generation,
            previous_build: previous,
            error,
            job: self.config.job.display(),
            profile: &self.config.profile,
        };
        hooks::run(&self.config.hooks, &outcome, &self.watchdog).await;
        Ok(())
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
            Err(
                DeployError::Stopped { .. }
                | DeployError::Unchecked { .. }
                | DeployError::Unconfirmed { .. }
                | DeployError::Detached { .. },
            ) => {
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
    /// Not under `--system`: the boot menu lists the system's generations (NixOS's own
    /// garbage collection and boot loader settings prune them).
    fn prune(&self, current: Option<u64>, rollback_to: Option<u64>) {
        if self.config.system.is_some() {
            return;
        }
        let keep = self.config.keep_generations;
        let pruned = self.profile.generations().and_then(|all| {
            let old = decide::generations_to_delete(&all, keep, current, rollback_to);
            self.profile.delete_generations(&old).map(|()| old)
        });
        match pruned {
            Ok(old) if old.is_empty() => {}
            Ok(old) => {
                let numbers: Vec<String> = old.iter().map(u64::to_string).collect();
                let noun = if old.len() == 1 {
                    "generation"
                } else {
                    "generations"
                };
                info!(
                    hail.event = "pruned",
                    "deleted {noun} {} of {} (keeping {keep})",
                    numbers.join(", "),
                    self.profile.path().display()
                )
            }
            Err(e) => warn!(hail.event = "pruned", hail.error = %e, "{e}"),
        }
    }

    fn report(&self, activity: Activity) {
        systemd::status(&self.books.state.status_line(activity));
    }
}

fn limits(config: &Config) -> Limits<'_> {
    Limits {
        realise: config.realise_timeout,
        activation: config.activation_timeout,
        health: &config.health,
        system: config.system.as_ref(),
        switch_results: config.state_dir.path(),
    }
}

/// What the state needs to know of a failed deployment.
fn failure(e: &DeployError) -> DeployFailure {
    let verdict = e.verdict().unwrap_or(Verdict {
        result: DeploymentResult::Failed,
        reason: String::new(),
    });
    DeployFailure {
        result: verdict.result,
        message: e.to_string(),
        reason: verdict.reason,
    }
}

/// A different value at every call (std's hasher keys are random per process and per call).
fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
