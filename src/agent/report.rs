//! The agent's journal entries for what happened: each outcome with its fields and, for those
//! people query and alert on, its `MESSAGE_ID`.

use tracing::{error, info, warn};

use crate::deploy::DeployError;
use crate::format;
use crate::record::DeploymentResult;
use crate::state::{Notice, Round};
use crate::types::Build;

/// `MESSAGE_ID`s of the events people query and alert on (docs/src/reference/journal-fields.md).
pub const MSG_DEPLOYED: &str = "35afcec8bcfb4db0ab3acb30a8cead66";
pub const MSG_ACTIVATION_FAILED: &str = "5be39f6dd3a846e28ede5e841d6f7288";
pub const MSG_POLL_FAILED: &str = "ec2149355bc34fe19a8fc00de4588794";
pub const MSG_DEPLOY_FAILED: &str = "c304e6df32644e788062535ba3a6c98b";
pub const MSG_HEALTH_CHECK_FAILED: &str = "4c2d7e91a0b34f58a6e3d9c1b7f05e28";
pub const MSG_MANUAL_CHANGE: &str = "9a41f4d3b2c84e0f8d6e1c7b5a3f2e90";
pub const MSG_STATE_RESET: &str = "e3c0a8b5d7f14a2c9b6e4d1f0a8c7b35";
pub const MSG_REBOOT_NEEDED: &str = "7d3b9e21c4a84f6b8e05d2a19f6c4b73";
pub const MSG_NOT_RECORDED: &str = "b6f0d2e84c1a4f3d9e7b5a2c8d0e6f14";
pub const MSG_CONTACT_LOST: &str = "2f9c4e71d8a34b6e9c0d5a7f1e3b8c62";

pub fn poll_failed(message: &str) {
    error!(
        hail.event = "poll-failed",
        message_id = MSG_POLL_FAILED,
        hail.error = %message,
        "{message}"
    );
}

pub fn up_to_date(latest: &Build, generation: Option<u64>) {
    info!(
        hail.event = "up-to-date",
        hail.build_id = latest.id,
        hail.store_path = %latest.path,
        hail.generation = generation,
        "build {} is deployed; nothing to do",
        latest.id
    );
}

/// Hydra's latest build is not deployed now (known-bad, or hail is paused).
pub fn held_back(latest: &Build, why: &Round) {
    info!(
        hail.event = "held-back",
        hail.build_id = latest.id,
        hail.store_path = %latest.path,
        "{why}"
    );
}

/// `--gate evaluation` passed over newer evaluations to offer `build`.
pub fn passed_over(build: &Build, why: &[String]) {
    info!(
        hail.event = "gate",
        hail.build_id = build.id,
        hail.store_path = %build.path,
        "gate: build {} from an evaluation that passed; newer ones passed over: {}",
        build.id,
        why.join("; ")
    );
}

/// `--gate evaluation` found no evaluation that passes.
pub fn none_eligible(round: &Round) {
    info!(hail.event = "gate", "{round}");
}

pub fn deploying(build: &Build) {
    info!(
        hail.event = "deploying",
        hail.build_id = build.id,
        hail.store_path = %build.path,
        "deploying build {} ({})",
        build.id,
        build.path
    );
}

/// A deployment's outcome: `Ok` as deployed, an activation failure (rolled back), or any other
/// failure (nothing changed).
pub fn deployment(build: &Build, generation: Option<u64>, result: &Result<(), DeployError>) {
    match result {
        Ok(()) => info!(
            hail.event = "deployed",
            message_id = MSG_DEPLOYED,
            hail.build_id = build.id,
            hail.store_path = %build.path,
            hail.generation = generation,
            "deployed build {} ({}) as generation {}",
            build.id,
            build.path,
            format::generation(generation)
        ),
        Err(e @ (DeployError::Failed { .. } | DeployError::ContactLost { .. })) => {
            match e.verdict().map(|v| v.result) {
                Some(DeploymentResult::HealthCheckFailed) => error!(
                    hail.event = "health-check-failed",
                    message_id = MSG_HEALTH_CHECK_FAILED,
                    hail.build_id = build.id,
                    hail.store_path = %build.path,
                    hail.generation = generation,
                    hail.error = %e,
                    "{e}"
                ),
                Some(DeploymentResult::ContactLost) => error!(
                    hail.event = "contact-lost",
                    message_id = MSG_CONTACT_LOST,
                    hail.build_id = build.id,
                    hail.store_path = %build.path,
                    hail.generation = generation,
                    hail.error = %e,
                    "{e}"
                ),
                _ => error!(
                    hail.event = "activation-failed",
                    message_id = MSG_ACTIVATION_FAILED,
                    hail.build_id = build.id,
                    hail.store_path = %build.path,
                    hail.generation = generation,
                    hail.error = %e,
                    "{e}"
                ),
            }
        }
        Err(e @ DeployError::Unconfirmed { .. }) => warn!(
            hail.event = "confirm",
            hail.build_id = build.id,
            hail.store_path = %build.path,
            hail.generation = generation,
            "{e}"
        ),
        Err(e @ DeployError::Unchecked { .. }) => warn!(
            hail.event = "health-check",
            hail.build_id = build.id,
            hail.store_path = %build.path,
            hail.generation = generation,
            "{e}"
        ),
        Err(e) => error!(
            hail.event = "deploy-failed",
            message_id = MSG_DEPLOY_FAILED,
            hail.build_id = build.id,
            hail.store_path = %build.path,
            hail.error = %e,
            "{e}"
        ),
    }
}

pub fn startup_activation(generation: Option<u64>, result: &Result<(), String>) {
    match result {
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
}

pub fn notice(notice: &Notice) {
    match notice {
        Notice::ManualChange {
            build_id,
            from,
            to,
            generation,
        } => {
            let build = build_id.map_or_else(|| "the build".to_owned(), |id| format!("build {id}"));
            let to = to.as_ref().map_or_else(
                || "no profile at all".to_owned(),
                |p| format!("{p} (generation {})", format::generation(*generation)),
            );
            warn!(
                hail.event = "manual-change",
                message_id = MSG_MANUAL_CHANGE,
                hail.build_id = build_id,
                hail.store_path = %from,
                hail.generation = generation,
                "the profile was moved away from {build} ({from}) to {to} by hand; keeping it, \
                 and not deploying {build} again"
            );
        }
        Notice::RebootNeeded(differs) => warn!(
            hail.event = "reboot-needed",
            message_id = MSG_REBOOT_NEEDED,
            "the deployed system needs a reboot: its {} differ from the booted system's",
            differs.join(", ")
        ),
        Notice::Forgotten(builds) if builds.is_empty() => {
            info!(
                hail.event = "retry",
                "no known-bad build to forget; polling now"
            )
        }
        Notice::Forgotten(builds) => {
            for b in builds {
                info!(
                    hail.event = "retry",
                    hail.build_id = b.build_id,
                    hail.store_path = %b.store_path,
                    "forgot known-bad {} ({}); polling now",
                    b.build_id.map_or_else(|| "build".to_owned(), |id| format!("build {id}")),
                    b.store_path
                );
            }
        }
    }
}

pub fn state_reset(problem: &str) {
    warn!(
        hail.event = "state-reset",
        message_id = MSG_STATE_RESET,
        hail.error = %problem,
        "state file: {problem}"
    );
}

/// hail keeps deploying when its state cannot be written; it says so each time.
pub fn not_saved(what: &str, e: &dyn std::error::Error) {
    warn!(hail.event = "state-not-saved", hail.error = %e, "{what} not written: {e}");
}

/// A deployment not started because the state saying it was about to be could not be written.
pub fn not_recorded(build: &Build, round: &Round) {
    error!(
        hail.event = "not-recorded",
        message_id = MSG_NOT_RECORDED,
        hail.build_id = build.id,
        hail.store_path = %build.path,
        "{round}"
    );
}

/// The state directory had gone (removed while hail ran) and was made again.
pub fn state_dir_remade(dir: &std::path::Path) {
    warn!(
        hail.event = "state-not-saved",
        "the state directory {} had been removed; made it again",
        dir.display()
    );
}
