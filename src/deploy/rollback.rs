//! Putting the previous generation (or system) back after a failed activation or health check.

use std::fmt;

use tokio::sync::watch;

use super::{Limits, SWITCH_TIMEOUT, activate_path};
use crate::nix;
use crate::profile::Profile;
use crate::store_path::StorePath;
use crate::systemd::Watchdog;
use crate::types::ProfileState;

/// Where a failed deployment returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The last build known to run well and the generation that held it (hail's record);
    /// `None` when nothing good is known.
    pub good: Option<ProfileState>,
    /// The profile did not exist before the deployment: without a good build, it is removed
    /// again.
    pub fresh: bool,
}

impl Target {
    /// Exactly where the profile was (a switch that failed or was cut short).
    pub fn was(before: &ProfileState) -> Target {
        Target {
            good: before.current.is_some().then(|| before.clone()),
            fresh: before.current.is_none(),
        }
    }
}

/// What happened to the profile after a failed activation.
#[derive(Debug)]
pub enum Rollback {
    /// Switched back to this generation and re-ran its activation (with this outcome).
    Restored {
        generation: u64,
        reactivation: Result<(), String>,
    },
    /// The profile did not exist before this deployment: it was removed again.
    Removed,
    /// `--switch-action test`: the system running before was activated again (with this
    /// outcome); the profile was never touched.
    Reactivated {
        path: StorePath,
        reactivation: Result<(), String>,
    },
    /// The good build's generation had been deleted: the profile was set to it again, as a new
    /// generation, and it was re-activated (with this outcome).
    SetAgain {
        path: StorePath,
        generation: u64,
        reactivation: Result<(), String>,
    },
    /// No build is known to be good: the profile stays at the failed one.
    NoGood,
    /// Switching back failed: the profile still points at the failed build.
    Failed(String),
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rollback::Restored {
                generation,
                reactivation: Ok(()),
            } => {
                write!(
                    f,
                    "profile switched back to generation {generation} and re-activated"
                )
            }
            Rollback::Restored {
                generation,
                reactivation: Err(e),
            } => write!(
                f,
                "profile switched back to generation {generation}, but its re-activation failed: {e}"
            ),
            Rollback::Reactivated {
                path,
                reactivation: Ok(()),
            } => write!(f, "{path} activated again"),
            Rollback::Reactivated {
                path,
                reactivation: Err(e),
            } => write!(f, "activating {path} again failed: {e}"),
            Rollback::Removed => {
                write!(f, "the profile was removed again, as before the deployment")
            }
            Rollback::SetAgain {
                path,
                generation,
                reactivation,
            } => {
                write!(
                    f,
                    "the last good build {path} set again as generation {generation} (its \
                     generation had been deleted)"
                )?;
                match reactivation {
                    Ok(()) => write!(f, " and re-activated"),
                    Err(e) => write!(f, ", but its re-activation failed: {e}"),
                }
            }
            Rollback::NoGood => {
                write!(
                    f,
                    "no build is known to be good to return to; the profile stays at it"
                )
            }
            Rollback::Failed(e) => write!(f, "switching back failed too: {e}"),
        }
    }
}

/// Puts the profile back at `to`: the generation that holds the good build (its own, if it
/// still does, else the newest that does), or the good build set again as a new generation
/// (substituted if it was collected), or no profile at all after a failed first deployment.
pub(super) async fn restore(
    profile: &Profile,
    to: &Target,
    realise: std::time::Duration,
    watchdog: &Watchdog,
) -> Result<Restored, String> {
    let now = profile.state().map_err(|e| e.to_string())?;
    let Some((path, recorded)) = to
        .good
        .as_ref()
        .and_then(|g| Some((g.current.clone()?, g.generation)))
    else {
        return match now.generation {
            Some(failed) if to.fresh => std::fs::remove_file(profile.path())
                .and_then(|()| std::fs::remove_file(profile.generation_link(failed)))
                .map(|()| Restored::Removed)
                .map_err(|e| format!("removing the new profile: {e}")),
            // Removed already (by a rollback a stop cut short).
            None if to.fresh => Ok(Restored::Removed),
            _ => Ok(Restored::NoGood),
        };
    };
    let held = recorded
        .filter(|g| profile.generation_target(*g).as_ref() == Some(&path))
        .or_else(|| profile.generation_holding(&path));
    if let Some(g) = held {
        if now.generation != Some(g) {
            let cmd = nix::switch_generation(profile.path(), g);
            nix::run(&cmd, SWITCH_TIMEOUT, watchdog)
                .await
                .map_err(|e| e.to_string())?;
        }
        return Ok(Restored::Generation(g));
    }
    // Its generation was deleted (`nix-collect-garbage -d`): the path is recorded.
    let cmd = nix::set_profile(profile.path(), &path);
    nix::run(&cmd, realise + SWITCH_TIMEOUT, watchdog)
        .await
        .map_err(|e| e.to_string())?;
    let generation = profile
        .state()
        .map_err(|e| e.to_string())?
        .generation
        .ok_or("the profile has no generation after setting it")?;
    Ok(Restored::SetAgain(path, generation))
}

pub(super) enum Restored {
    Generation(u64),
    SetAgain(StorePath, u64),
    Removed,
    NoGood,
}

/// Puts the good build back after a failed activation or health check (see [`restore`]) and
/// runs its activation again.
pub(super) async fn roll_back(
    profile: &Profile,
    failed_build: Option<u64>,
    to: &Target,
    limits: &Limits<'_>,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Rollback {
    if limits.system.is_some_and(|s| !s.action.sets_profile()) {
        // `test` left the profile alone: activate the system that ran well again.
        let Some(path) = to.good.as_ref().and_then(|g| g.current.as_ref()) else {
            return Rollback::NoGood;
        };
        tracing::warn!(
            hail.event = "rolled-back",
            hail.build_id = failed_build,
            "activating {path} again"
        );
        let reactivation = activate_path(profile, Some(path), None, limits, watchdog, stop)
            .await
            .map_err(|e| e.to_string());
        return Rollback::Reactivated {
            path: path.clone(),
            reactivation,
        };
    }
    let (generation, again) = match restore(profile, to, limits.realise, watchdog).await {
        Ok(Restored::Generation(g)) => (g, None),
        Ok(Restored::SetAgain(path, g)) => (g, Some(path)),
        Ok(Restored::Removed) => return Rollback::Removed,
        Ok(Restored::NoGood) => {
            tracing::error!(
                hail.event = "rolled-back",
                hail.build_id = failed_build,
                "no build is known to be good: {} stays at the failed build",
                profile.path().display()
            );
            return Rollback::NoGood;
        }
        Err(e) => return Rollback::Failed(e),
    };
    tracing::warn!(
        hail.event = "rolled-back",
        hail.build_id = failed_build,
        hail.generation = generation,
        "profile {} switched back to generation {generation}",
        profile.path().display()
    );
    let good = to.good.as_ref().and_then(|g| g.current.as_ref());
    let reactivation = activate_path(profile, good, None, limits, watchdog, stop)
        .await
        .map_err(|e| e.to_string());
    match again {
        Some(path) => Rollback::SetAgain {
            path,
            generation,
            reactivation,
        },
        None => Rollback::Restored {
            generation,
            reactivation,
        },
    }
}
