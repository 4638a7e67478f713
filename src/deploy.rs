//! One deployment: realise, switch, activate, and put the previous generation back when the
//! activation fails.

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;

use crate::activation::{self, ActivationError};
use crate::format;
use crate::nix::{self, NixError};
use crate::profile::{Profile, ProfileError};
use crate::store_path::StorePath;
use crate::systemd::Watchdog;
use crate::types::{Build, ProfileState};

pub struct Limits {
    pub realise: Duration,
    pub activation: Duration,
}

/// Bound on `nix-env --set` / `--switch-generation`: they only write symlinks.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(120);

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
    #[error("activation of {path} failed: {source}; {rollback}")]
    Activation {
        path: StorePath,
        source: ActivationError,
        rollback: Rollback,
    },
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

/// How a deployment ended: the outcome, and what the profile points at afterwards (whatever the
/// outcome, so that nobody needs to read the profile again to learn what happened).
#[derive(Debug)]
pub struct Deployment {
    pub profile: ProfileState,
    pub result: Result<(), DeployError>,
}

/// Deploys `build` to `profile`. Every step is logged with the build id, so
/// `journalctl HAIL_BUILD_ID=…` shows the whole deployment.
pub async fn deploy(
    profile: &Profile,
    build: &Build,
    limits: &Limits,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Deployment {
    // An unreadable profile (pointing outside the store) is replaced; there is nothing to return to.
    let before = profile.state().unwrap_or_default();
    let result = realise_switch_activate(profile, &before, build, limits, watchdog, stop).await;
    let profile = match &result {
        Ok(after) => after.clone(),
        // Nothing was changed.
        Err(DeployError::Realise { .. } | DeployError::Stopped { .. }) => before,
        // A failed switch or activation may have moved the profile: see where it points now.
        Err(_) => profile.state().unwrap_or(before),
    };
    Deployment {
        profile,
        result: result.map(|_| ()),
    }
}

async fn realise_switch_activate(
    profile: &Profile,
    before: &ProfileState,
    build: &Build,
    limits: &Limits,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Result<ProfileState, DeployError> {
    let (path, id) = (&build.path, Some(build.id));
    let root = profile.pending_root();
    let _ = std::fs::remove_file(&root);
    let realise = nix::realise(path, &root);
    let realised = async {
        nix::run(&realise, limits.realise, watchdog).await?;
        nix::check_realised(&realise, &root, path)
    };
    // Nothing has changed yet, so a stop request may cut a long download short (the child is
    // killed when its future is dropped).
    let realised = tokio::select! {
        r = realised => r,
        _ = stop.wait_for(|s| *s) => {
            let _ = std::fs::remove_file(&root);
            return Err(DeployError::Stopped { path: path.clone() });
        }
    };
    if let Err(source) = realised {
        let _ = std::fs::remove_file(&root);
        return Err(DeployError::Realise {
            path: path.clone(),
            source,
        });
    }
    tracing::info!(hail.event = "realised", hail.build_id = id, hail.store_path = %path, "realised {path}");

    let switched = nix::run(
        &nix::set_profile(profile.path(), path),
        SWITCH_TIMEOUT,
        watchdog,
    )
    .await;
    // The profile's own generation link is the GC root from here on.
    let _ = std::fs::remove_file(&root);
    switched.map_err(|source| DeployError::Switch {
        path: path.clone(),
        source,
    })?;
    let after = profile.state()?;
    tracing::info!(
        hail.event = "switched",
        hail.build_id = id,
        hail.store_path = %path,
        hail.generation = after.generation,
        "profile {} switched to {path} (generation {})",
        profile.path().display(),
        format::generation(after.generation),
    );

    match activate(profile, id, limits.activation, watchdog, stop).await {
        Ok(()) => Ok(after),
        Err(source) => {
            let rollback = roll_back(
                profile,
                id,
                before,
                after.generation,
                limits,
                watchdog,
                stop,
            )
            .await;
            Err(DeployError::Activation {
                path: path.clone(),
                source,
                rollback,
            })
        }
    }
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
    activation::run(&script, timeout, watchdog, stop, |line| {
        tracing::info!(
            hail.event = "activation-output",
            hail.build_id = build_id,
            "activate: {line}"
        );
    })
    .await
}

async fn roll_back(
    profile: &Profile,
    failed_build: Option<u64>,
    before: &ProfileState,
    failed_generation: Option<u64>,
    limits: &Limits,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Rollback {
    let Some(generation) = before.generation.filter(|g| Some(*g) != failed_generation) else {
        // A first deployment: put things back as they were, with no profile at all.
        if let (None, Some(failed)) = (&before.current, failed_generation) {
            let removed = std::fs::remove_file(profile.path())
                .and_then(|()| std::fs::remove_file(profile.generation_link(failed)));
            return match removed {
                Ok(()) => Rollback::Removed,
                Err(e) => Rollback::Failed(format!("removing the new profile: {e}")),
            };
        }
        return Rollback::NoPrevious;
    };
    let cmd = nix::switch_generation(profile.path(), generation);
    if let Err(e) = nix::run(&cmd, SWITCH_TIMEOUT, watchdog).await {
        return Rollback::Failed(e.to_string());
    }
    tracing::warn!(
        hail.event = "rolled-back",
        hail.build_id = failed_build,
        hail.generation = generation,
        "profile {} switched back to generation {generation}",
        profile.path().display()
    );
    let reactivation = activate(profile, None, limits.activation, watchdog, stop)
        .await
        .map_err(|e| e.to_string());
    Rollback::Restored {
        generation,
        reactivation,
    }
}
