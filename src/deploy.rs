//! One deployment: realise, switch, activate, check its health, and put the previous generation
//! back when the activation or a health check fails.

use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use crate::activation::{self, ActivationError};
use crate::cli::HealthChecks;
use crate::format;
use crate::health::{self, HealthError};
use crate::nix::{self, NixError};
use crate::process::CommandLine;
use crate::profile::{Profile, ProfileError};
use crate::record::{DeploymentResult, Verdict};
use crate::store_path::StorePath;
use crate::system::{self, NotASystem, SystemMode};
use crate::systemd::Watchdog;
use crate::types::{Build, ProfileState};

mod rollback;
pub use rollback::{Rollback, Target};
use rollback::{restore, roll_back};

/// The bounds of a deployment's steps, and what its activation is.
pub struct Limits<'a> {
    pub realise: Duration,
    pub activation: Duration,
    pub health: &'a HealthChecks,
    /// `--system`: the activation is the system's switch-to-configuration.
    pub system: Option<&'a SystemMode>,
    /// Where a system's switch leaves how it ended, for a hail it restarts (the state
    /// directory).
    pub switch_results: &'a Path,
}

/// Bound on `nix-env --set` / `--switch-generation`: they only write symlinks.
pub(super) const SWITCH_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("realising {path} failed: {source}")]
    Realise { path: StorePath, source: NixError },
    #[error("switching the profile to {path} failed: {source}")]
    Switch { path: StorePath, source: NixError },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("hail is stopping; realising {path} was cancelled (the profile is untouched)")]
    Stopped { path: StorePath },
    #[error("{0}; the profile is untouched")]
    NotASystem(#[from] NotASystem),
    /// Stopped while the system's switch runs in its own unit: it goes on, and the next start
    /// checks what it left.
    #[error("hail is stopping; the switch to {path} goes on in the unit {unit}")]
    Detached { path: StorePath, unit: String },
    /// The activation or a health check failed; the profile went back (see `rollback`).
    #[error("{}; {rollback}", .cause.describe(.path))]
    Failed {
        path: StorePath,
        cause: Cause,
        rollback: Rollback,
    },
    /// Hydra could not be reached within `--confirm-timeout` after the switch (or the reboot).
    #[error("contact with Hydra was lost after {after} to {path} ({error}); {rollback}")]
    ContactLost {
        path: StorePath,
        /// `the switch` or `the reboot`.
        after: &'static str,
        error: String,
        rollback: Rollback,
    },
    /// Stopped while confirming contact with Hydra: the new generation stays, and is seen
    /// through (contact confirmed) at the next start.
    #[error("hail is stopping; {path} stays deployed, contact with Hydra not confirmed yet")]
    Unconfirmed { path: StorePath },
    /// Stopped while health checks ran: the new generation stays, and is checked at the next
    /// start.
    #[error("hail is stopping; {path} stays deployed, unchecked: {source}")]
    Unchecked {
        path: StorePath,
        source: HealthError,
    },
}

impl DeployError {
    /// Why the build is known-bad after this failure (`None`: the build is not to blame).
    pub fn verdict(&self) -> Option<Verdict> {
        match self {
            DeployError::Failed { cause, .. } => Some(cause.verdict()),
            DeployError::ContactLost { after, error, .. } => Some(contact_lost(after, error)),
            _ => None,
        }
    }
}

/// Why a deployment failed, before its rollback.
#[derive(Debug)]
pub enum Cause {
    Activation(ActivationError),
    HealthCheck(HealthError),
    /// Saved by a hail stopped during the rollback, which the next one finished.
    Recorded(Verdict),
}

impl Cause {
    /// The verdict on the build: what `hail status` and the known-bad list say.
    pub fn verdict(&self) -> Verdict {
        match self {
            Cause::Activation(e) => Verdict {
                result: DeploymentResult::ActivationFailed,
                reason: format!("activation failed: {e}"),
            },
            Cause::HealthCheck(e) => Verdict {
                result: DeploymentResult::HealthCheckFailed,
                reason: format!("health check failed: {e}"),
            },
            Cause::Recorded(v) => v.clone(),
        }
    }

    fn describe(&self, path: &StorePath) -> String {
        match self {
            Cause::Activation(e) => format!("activation of {path} failed: {e}"),
            Cause::HealthCheck(e) => format!("health check of {path} failed: {e}"),
            Cause::Recorded(v) => format!("{path}: {} (before hail was stopped)", v.reason),
        }
    }
}

/// The verdict on a build whose host lost its contact with Hydra after `after` (the switch, the
/// reboot).
pub fn contact_lost(after: &str, error: &str) -> Verdict {
    Verdict {
        result: DeploymentResult::ContactLost,
        reason: format!("contact with Hydra lost after {after}: {error}"),
    }
}

/// A deployment whose activation or health check failed, before it returns to the last good
/// build: the caller saves the verdict first ([`Failing::verdict`]), so that a hail stopped
/// during the rollback finishes it at its next start instead of activating the build again.
#[derive(Debug)]
pub struct Failing {
    build: Build,
    cause: Cause,
    to: Target,
    /// Where the profile pointed when the failure was found.
    at: ProfileState,
}

impl Failing {
    /// The rollback of a deployment a stopped hail had judged (`verdict`) but not finished.
    pub fn recorded(
        profile: &Profile,
        build: &Build,
        good: Option<ProfileState>,
        verdict: Verdict,
    ) -> Failing {
        let (at, to) = half_way(profile, good);
        Failing {
            build: build.clone(),
            cause: Cause::Recorded(verdict),
            to,
            at,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.cause.verdict()
    }

    /// Returns to the good build (or removes a first profile) and re-activates it.
    pub async fn roll_back(
        self,
        profile: &Profile,
        limits: &Limits<'_>,
        watchdog: &Watchdog,
        stop: &mut watch::Receiver<bool>,
    ) -> Deployment {
        let Failing {
            build,
            cause,
            to,
            at,
        } = self;
        let rollback = roll_back(profile, Some(build.id), &to, limits, watchdog, stop).await;
        Deployment {
            profile: profile.state().unwrap_or(at),
            result: Err(DeployError::Failed {
                path: build.path,
                cause,
                rollback,
            }),
        }
    }
}

/// How far a deployment went: to its end, or to a failure whose rollback is still to run.
#[derive(Debug)]
pub enum Stage {
    Done(Deployment),
    Failing(Failing),
}

/// How a deployment ended: the outcome, and what the profile points at afterwards (whatever the
/// outcome, so that nobody needs to read the profile again to learn what happened).
#[derive(Debug)]
pub struct Deployment {
    pub profile: ProfileState,
    pub result: Result<(), DeployError>,
}

/// Deploys `build` to `profile`; a failed activation or health check returns to `good`, the
/// last build known to run well. Every step is logged with the build id, so
/// `journalctl HAIL_BUILD_ID=…` shows the whole deployment.
pub async fn deploy(
    profile: &Profile,
    build: &Build,
    good: Option<ProfileState>,
    limits: &Limits<'_>,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Stage {
    // An unreadable profile (pointing outside the store) is replaced; there is nothing to return to.
    let before = profile.state().unwrap_or_default();
    let to = Target {
        good,
        fresh: before.current.is_none(),
    };
    let result = realise_switch_activate(profile, &before, to, build, limits, watchdog, stop).await;
    let (result, profile) = match result {
        Ok(after) => (Ok(()), after),
        Err(Halt::Failing(failing)) => return Stage::Failing(failing),
        // Where the profile points after a failure and whatever was put back.
        Err(Halt::Error(e)) => (Err(e), profile.state().unwrap_or(before)),
    };
    Stage::Done(Deployment { profile, result })
}

/// Why a deployment stopped short of its end: an error, or a failure whose rollback is still to
/// run.
enum Halt {
    Error(DeployError),
    Failing(Failing),
}

impl<E: Into<DeployError>> From<E> for Halt {
    fn from(e: E) -> Halt {
        Halt::Error(e.into())
    }
}

async fn realise_switch_activate(
    profile: &Profile,
    before: &ProfileState,
    to: Target,
    build: &Build,
    limits: &Limits<'_>,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Result<ProfileState, Halt> {
    let (path, id) = (&build.path, Some(build.id));
    // Removed when the deployment ends: by then the profile (or, after `test`, the running
    // system) roots what was deployed.
    let mut _pending = None;
    if limits.system.is_some() {
        // A system is checked before the profile is touched: it must be fetched first.
        let root = _pending.insert(PendingRoot(profile.pending_root()));
        fetch(path, &root.0, limits.realise, watchdog, stop).await?;
        system::check(std::path::Path::new(path.as_str()))?;
    }
    let sets_profile = limits.system.is_none_or(|s| s.action.sets_profile());
    if sets_profile {
        set(profile, before, path, id, limits, watchdog, stop).await?;
    }
    let after = profile.state()?;
    if sets_profile {
        tracing::info!(
            hail.event = "switched",
            hail.build_id = id,
            hail.store_path = %path,
            hail.generation = after.generation,
            "profile {} switched to {path} (generation {})",
            profile.path().display(),
            format::generation(after.generation),
        );
    }

    let activated = activate_path(profile, Some(path), id, limits, watchdog, stop).await;
    let at = after.clone();
    after_activation(profile, build, at, activated, to, limits, watchdog, stop).await?;
    // What is deployed now (after `--switch-action test`, the system it activated).
    Ok(profile.state().unwrap_or(after))
}

/// After a deployment's activation (or switch) ended at `at`: a failure is to return to `to`,
/// a success goes on to the health checks; a switch that goes on without hail (it is stopping)
/// is left to the next start.
#[allow(clippy::too_many_arguments)]
async fn after_activation(
    profile: &Profile,
    build: &Build,
    at: ProfileState,
    activated: Result<(), ActivationError>,
    to: Target,
    limits: &Limits<'_>,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Halt> {
    let cause = match activated {
        Ok(()) => {
            let generation = at.generation;
            match health::check_profile(profile, build, generation, limits.health, watchdog, stop)
                .await
            {
                Ok(()) => return Ok(()),
                // A stop cuts the checks short and leaves the generation unchecked.
                Err(source @ HealthError::Stopped { .. }) => {
                    return Err(Halt::Error(DeployError::Unchecked {
                        path: build.path.clone(),
                        source,
                    }));
                }
                Err(source) => Cause::HealthCheck(source),
            }
        }
        Err(ActivationError::Detached { unit }) => {
            return Err(Halt::Error(DeployError::Detached {
                path: build.path.clone(),
                unit,
            }));
        }
        Err(source) => Cause::Activation(source),
    };
    Err(Halt::Failing(Failing {
        build: build.clone(),
        cause,
        to,
        at,
    }))
}

/// Where a deployment the last hail left half-way stands: the profile now, and where a failure
/// returns (a first profile, with no other generation, is removed).
fn half_way(profile: &Profile, good: Option<ProfileState>) -> (ProfileState, Target) {
    let now = profile.state().unwrap_or_default();
    let to = Target {
        good,
        fresh: !profile.has_other_generations(now.generation),
    };
    (now, to)
}

/// A temporary GC root, removed when dropped.
struct PendingRoot(std::path::PathBuf);

impl Drop for PendingRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `nix-store --realise` with a temporary GC root, cut short by a stop request.
async fn fetch(
    path: &StorePath,
    gc_root: &std::path::Path,
    timeout: Duration,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), DeployError> {
    let realise = nix::realise(path, gc_root);
    tokio::select! {
        r = nix::run(&realise, timeout, watchdog) => r.map_err(|source| DeployError::Realise {
            path: path.clone(),
            source,
        }),
        _ = stop.wait_for(|s| *s) => Err(DeployError::Stopped { path: path.clone() }),
    }
}

/// Makes `path` the profile's new generation (substituting it first when it is missing); a
/// failed or cancelled switch puts the profile back.
async fn set(
    profile: &Profile,
    before: &ProfileState,
    path: &StorePath,
    id: Option<u64>,
    limits: &Limits<'_>,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), DeployError> {
    // One nix-env both substitutes the path (with nix.conf's signature checks) and makes it the
    // profile's new generation: its temporary GC roots cover the path until the generation link
    // does, so a garbage collection never finds it unrooted.
    let set = nix::set_profile(profile.path(), path);
    let switching = nix::run(&set, limits.realise + SWITCH_TIMEOUT, watchdog);
    // A stop request cuts a long download short (nix-env is killed when its future is dropped).
    let switched = tokio::select! {
        r = switching => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    };
    if let None | Some(Err(_)) = switched {
        // Killed or failed just after it switched: nothing was activated, so put the profile back.
        if profile.state().ok().as_ref() != Some(before) {
            let _ = restore(profile, &Target::was(before), limits.realise, watchdog).await;
        }
    }
    let path_missing = || !std::path::Path::new(path.as_str()).exists();
    match switched {
        None => return Err(DeployError::Stopped { path: path.clone() }),
        // Nix substitutes before it switches: a path still missing was not fetched.
        Some(Err(source)) if path_missing() => {
            return Err(DeployError::Realise {
                path: path.clone(),
                source,
            });
        }
        Some(Err(source)) => {
            return Err(DeployError::Switch {
                path: path.clone(),
                source,
            });
        }
        Some(Ok(())) => {}
    }
    tracing::info!(hail.event = "realised", hail.build_id = id, hail.store_path = %path, "realised {path}");
    Ok(())
}

/// Puts the good build back after a deployment whose build passed its checks but lost the host
/// its contact with Hydra (see [`roll_back`]).
pub async fn give_back(
    profile: &Profile,
    build: &Build,
    good: Option<ProfileState>,
    limits: &Limits<'_>,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Rollback {
    let (_, to) = half_way(profile, good);
    roll_back(profile, Some(build.id), &to, limits, watchdog, stop).await
}

/// Finishes a deployment the last hail left half-way (killed or stopped during the activation,
/// the checks or the confirmation): the profile points at `build`. A profile's activation runs
/// again; a system's switch, which went on in its own unit (often it restarted hail), is
/// followed to its end and judged by its result (run now if it never started). Then its health
/// is checked; a failure of either returns to `good` (or removes a first profile), as the
/// deployment would have.
pub async fn resume(
    profile: &Profile,
    build: &Build,
    good: Option<ProfileState>,
    limits: &Limits<'_>,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Stage {
    let (now, to) = half_way(profile, good);
    let tracked = system::Tracked::new(build.id, limits.switch_results);
    let followed = match (limits.system, &tracked) {
        (Some(mode), Some(t)) => {
            system::follow(t, mode.action, limits.activation, watchdog, stop).await
        }
        _ => system::Followed::NeverRan,
    };
    let activated = match followed {
        system::Followed::Succeeded => Ok(()),
        system::Followed::Failed(e) => Err(e),
        system::Followed::NeverRan => {
            let (path, id) = (&build.path, Some(build.id));
            activate_path(profile, Some(path), id, limits, watchdog, stop).await
        }
    };
    let at = now.clone();
    let result =
        match after_activation(profile, build, at, activated, to, limits, watchdog, stop).await {
            Ok(()) => Ok(()),
            Err(Halt::Failing(failing)) => return Stage::Failing(failing),
            Err(Halt::Error(e)) => Err(e),
        };
    Stage::Done(Deployment {
        profile: profile.state().unwrap_or(now),
        result,
    })
}

/// Runs the profile's `bin/activate`, forwarding its output to the log (with `build_id` when it
/// is known). A profile without one has nothing to activate.
pub async fn activate(
    profile: &Profile,
    build_id: Option<u64>,
    timeout: Duration,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ActivationError> {
    let script = profile.activate_script();
    if !activation::exists(&script) {
        tracing::warn!(
            hail.event = "activation-output",
            hail.build_id = build_id,
            "{} has no bin/activate; nothing to activate",
            profile.path().display()
        );
        return Ok(());
    }
    activation::run(
        &CommandLine::new(&script),
        &[],
        timeout,
        watchdog,
        stop,
        |line| {
            tracing::info!(
                hail.event = "activation-output",
                hail.build_id = build_id,
                "activate: {line}"
            );
        },
    )
    .await
}

/// Activates what was deployed: the profile's `bin/activate`, or under `--system` the system
/// `path`'s switch-to-configuration (nothing without a path).
pub(super) async fn activate_path(
    profile: &Profile,
    path: Option<&StorePath>,
    build_id: Option<u64>,
    limits: &Limits<'_>,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ActivationError> {
    let Some(mode) = limits.system else {
        return activate(profile, build_id, limits.activation, watchdog, stop).await;
    };
    let Some(path) = path else { return Ok(()) };
    let log = |line: &str| {
        tracing::info!(
            hail.event = "activation-output",
            hail.build_id = build_id,
            "switch-to-configuration: {line}"
        );
    };
    let system = std::path::Path::new(path.as_str());
    // A deployment's switch (not a rollback's) can be followed by a hail it restarts.
    let tracked = build_id.and_then(|id| system::Tracked::new(id, limits.switch_results));
    system::switch(
        system,
        mode.action,
        tracked.as_ref(),
        limits.activation,
        watchdog,
        stop,
        log,
    )
    .await
}
