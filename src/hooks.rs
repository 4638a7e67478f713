//! Operators' hooks: a command run once after each deployment's outcome (`--on-success`,
//! `--on-failure`), as a health check runs (no shell, its own process group killed after
//! `--hook-timeout`, output to the log), told what happened through `HAIL_*` variables. A hook
//! that fails, hangs or is missing is a warning: it never changes the deployment's outcome, the
//! exit code or the next poll.

use std::path::Path;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::activation;
use crate::cli::Hooks;
use crate::deploy::DeployError;
use crate::process::CommandLine;
use crate::record::DeploymentResult;
use crate::systemd::{self, Watchdog};
use crate::types::Build;

/// How a deployment ended, as `HAIL_EVENT` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Deployed,
    RealiseFailed,
    SwitchFailed,
    ActivationFailed,
    HealthCheckFailed,
    ContactLost,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Deployed => "deployed",
            Event::RealiseFailed => "realise-failed",
            Event::SwitchFailed => "switch-failed",
            Event::ActivationFailed => "activation-failed",
            Event::HealthCheckFailed => "health-check-failed",
            Event::ContactLost => "contact-lost",
        }
    }

    /// The event of a deployment's result; `None` when it has no outcome yet (hail is stopping
    /// and the deployment goes on at its next start).
    pub fn of(result: &Result<(), DeployError>) -> Option<Event> {
        Some(match result {
            Ok(()) => Event::Deployed,
            Err(DeployError::Realise { .. }) => Event::RealiseFailed,
            Err(
                DeployError::Switch { .. } | DeployError::Profile(_) | DeployError::NotASystem(_),
            ) => Event::SwitchFailed,
            Err(e @ (DeployError::Failed { .. } | DeployError::ContactLost { .. })) => {
                match e.verdict().map(|v| v.result) {
                    Some(DeploymentResult::HealthCheckFailed) => Event::HealthCheckFailed,
                    Some(DeploymentResult::ContactLost) => Event::ContactLost,
                    _ => Event::ActivationFailed,
                }
            }
            Err(
                DeployError::Stopped { .. }
                | DeployError::Unchecked { .. }
                | DeployError::Unconfirmed { .. }
                | DeployError::Detached { .. },
            ) => return None,
        })
    }
}

/// What the hook is told.
pub struct Outcome<'a> {
    pub event: Event,
    pub build: &'a Build,
    /// The profile's generation after the outcome.
    pub generation: Option<u64>,
    /// The build deployed before (the last good one).
    pub previous_build: Option<u64>,
    /// Why it failed; `None` on success.
    pub error: Option<String>,
    pub job: &'a str,
    pub profile: &'a Path,
}

impl Outcome<'_> {
    /// The hook's `HAIL_*` variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
        let mut env = vec![
            ("HAIL_EVENT", self.event.as_str().to_owned()),
            ("HAIL_BUILD_ID", self.build.id.to_string()),
            ("HAIL_STORE_PATH", self.build.path.to_string()),
            ("HAIL_GENERATION", number(self.generation)),
            ("HAIL_PREVIOUS_BUILD_ID", number(self.previous_build)),
            (
                "HAIL_ERROR",
                self.error
                    .as_deref()
                    .map(systemd::one_line)
                    .unwrap_or_default(),
            ),
            ("HAIL_JOB_URI", self.job.to_owned()),
            ("HAIL_PROFILE", self.profile.display().to_string()),
        ];
        if let Some(instance) = systemd::instance_name() {
            env.push(("HAIL_INSTANCE", instance));
        }
        env
    }
}

/// The hook set for `event`: its option's name and its words.
pub fn command(hooks: &Hooks, event: Event) -> Option<(&'static str, &[String])> {
    let (option, command) = match event {
        Event::Deployed => ("on-success", &hooks.on_success),
        _ => ("on-failure", &hooks.on_failure),
    };
    Some((option, command.as_deref()?))
}

/// Runs the hook for `outcome`, if one is set; logs how it went.
pub async fn run(hooks: &Hooks, outcome: &Outcome<'_>, watchdog: &Watchdog) {
    let Some((option, words)) = command(hooks, outcome.event) else {
        return;
    };
    let Some((program, args)) = words.split_first() else {
        return;
    };
    let cmd = CommandLine::new(program).args(args);
    let event = outcome.event.as_str();
    let id = outcome.build.id;
    info!(
        hail.event = "hook",
        hail.build_id = id,
        "--{option} for {event}: running {}",
        cmd.display()
    );
    // A hook is not cut short by a stop: it is bounded by its timeout alone.
    let (_keep, mut never) = watch::channel(false);
    let env = outcome.env();
    let ran = activation::run(&cmd, &env, hooks.timeout, watchdog, &mut never, |line| {
        info!(
            hail.event = "hook-output",
            hail.build_id = id,
            "hook: {line}"
        );
    })
    .await;
    match ran {
        Ok(()) => info!(
            hail.event = "hook",
            hail.build_id = id,
            "--{option} hook done"
        ),
        Err(e) => warn!(
            hail.event = "hook-failed",
            hail.build_id = id,
            hail.error = %e,
            "--{option} hook for {event} failed: {e}; the deployment's outcome stands"
        ),
    }
}
