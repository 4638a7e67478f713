//! Putting the previous generation (or system) back after a failed activation or health check.

use std::fmt;

use tokio::sync::watch;

use super::{Limits, SWITCH_TIMEOUT, activate_path};
use crate::nix;
use crate::profile::Profile;
use crate::store_path::StorePath;
use crate::systemd::Watchdog;
use crate::types::ProfileState;

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
    /// There was no earlier generation to return to: the profile stays at the failed one.
    NoPrevious,
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
            Rollback::NoPrevious => {
                write!(
                    f,
                    "there is no earlier generation to return to; the profile stays at it"
                )
            }
            Rollback::Failed(e) => write!(f, "switching back failed too: {e}"),
        }
    }
}

/// Puts the profile back where it was before a deployment: the earlier generation, or no
/// profile at all after a failed first deployment.
pub(super) async fn restore(
    profile: &Profile,
    before: &ProfileState,
    watchdog: &Watchdog,
) -> Result<Restored, String> {
    let now = profile.state().map_err(|e| e.to_string())?;
    match (before.generation, now.generation) {
        (Some(g), Some(now)) if g == now => Ok(Restored::Generation(g)),
        (Some(g), _) => {
            let cmd = nix::switch_generation(profile.path(), g);
            nix::run(&cmd, SWITCH_TIMEOUT, watchdog)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Restored::Generation(g))
        }
        (None, Some(failed)) if before.current.is_none() => std::fs::remove_file(profile.path())
            .and_then(|()| std::fs::remove_file(profile.generation_link(failed)))
            .map(|()| Restored::Removed)
            .map_err(|e| format!("removing the new profile: {e}")),
        (None, _) => Ok(Restored::NoPrevious),
    }
}

pub(super) enum Restored {
    Generation(u64),
    Removed,
    NoPrevious,
}

pub(super) async fn roll_back(
    profile: &Profile,
    failed_build: Option<u64>,
    before: &ProfileState,
    limits: &Limits<'_>,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Rollback {
    if limits.system.is_some_and(|s| !s.action.sets_profile()) {
        // `test` left the profile alone: activate the system that ran before again.
        let Some(path) = &before.current else {
            return Rollback::NoPrevious;
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
    let generation = match restore(profile, before, watchdog).await {
        Ok(Restored::Generation(g)) => g,
        Ok(Restored::Removed) => return Rollback::Removed,
        Ok(Restored::NoPrevious) => return Rollback::NoPrevious,
        Err(e) => return Rollback::Failed(e),
    };
    tracing::warn!(
        hail.event = "rolled-back",
        hail.build_id = failed_build,
        hail.generation = generation,
        "profile {} switched back to generation {generation}",
        profile.path().display()
    );
    let previous = before.current.as_ref();
    let reactivation = activate_path(profile, previous, None, limits, watchdog, stop)
        .await
        .map_err(|e| e.to_string());
    Rollback::Restored {
        generation,
        reactivation,
    }
}
