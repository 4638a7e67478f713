//! Contact confirmation (`--confirm-timeout`): after a deployment passed its checks, and at the
//! first start after a reboot into a new system, hail must reach Hydra again (the request its
//! poll makes) in time; otherwise what cut the host off is undone.

use std::time::Duration;

use jiff::Timestamp;
use tracing::{info, warn};

use super::signals::stopped;
use super::{Agent, AgentError, limits};
use crate::deploy::{self, DeployError, Deployment};
use crate::state::{Activity, Event};
use crate::system::{self, SwitchAction};
use crate::types::Build;

/// How often contact with Hydra is tried while it is being confirmed.
const RETRY: Duration = Duration::from_secs(3);

/// hail stopped while it was confirming.
struct Stopping;

impl Agent {
    /// After a deployment that passed its checks: Hydra reached in time, or the last good build
    /// put back, as for a failed check; then one more try says whether the rollback restored
    /// contact. Stopped while confirming, the deployment stays to be seen through at the next
    /// start.
    pub(super) async fn confirm(
        &mut self,
        build: &Build,
        deployment: Deployment,
    ) -> Result<Deployment, AgentError> {
        let timeout = self.config.confirm_timeout;
        if deployment.result.is_err() || timeout.is_zero() {
            return Ok(deployment);
        }
        let error = match self.reach_hydra(build, timeout).await {
            Err(Stopping) => {
                return Ok(Deployment {
                    result: Err(DeployError::Unconfirmed {
                        path: build.path.clone(),
                    }),
                    ..deployment
                });
            }
            Ok(Ok(())) => {
                info!(
                    hail.event = "confirm",
                    hail.build_id = build.id,
                    "contact with Hydra confirmed after the switch"
                );
                return Ok(deployment);
            }
            Ok(Err(error)) => error,
        };
        self.judge(build, deploy::contact_lost("the switch", &error));
        let limits = limits(&self.config);
        let good = self.books.state.rollback_target();
        let mut stop = self.stop.clone();
        let rollback = deploy::give_back(
            &self.profile,
            build,
            good,
            &limits,
            &self.watchdog,
            &mut stop,
        )
        .await;
        let restored = match self.fetch_offer().await {
            Ok(Ok(_)) => "the rollback restored contact with Hydra".to_owned(),
            Ok(Err(e)) => format!("still no contact with Hydra after the rollback: {e}"),
            Err(_) => "hail is stopping".to_owned(),
        };
        warn!(
            hail.event = "confirm",
            hail.build_id = build.id,
            "{restored}"
        );
        Ok(Deployment {
            profile: self.profile.state().unwrap_or(deployment.profile),
            result: Err(DeployError::ContactLost {
                path: build.path.clone(),
                after: "the switch",
                error,
                rollback,
            }),
        })
    }

    /// At the first start after a reboot hail asked for into `build`: Hydra reached in time, or
    /// the system booted before made the boot default again (`switch-to-configuration boot`),
    /// the build known-bad, and the host rebooted into it, once.
    pub(super) async fn confirm_after_reboot(&mut self, build: Build) -> Result<(), AgentError> {
        let timeout = self.config.confirm_timeout;
        let result = if timeout.is_zero() {
            // Confirmation turned off.
            Ok(Ok(()))
        } else {
            self.reach_hydra(&build, timeout).await
        };
        let result = match result {
            // Confirmed at the next start.
            Err(Stopping) => return Ok(()),
            Ok(r) => r,
        };
        let reached = result.is_ok();
        self.books
            .state
            .apply(Timestamp::now(), Event::RebootChecked { reached });
        let Err(error) = result else {
            info!(
                hail.event = "confirm",
                hail.build_id = build.id,
                "contact with Hydra confirmed after the reboot into build {}",
                build.id
            );
            return Ok(());
        };
        // The verdict is saved before anything is switched.
        self.books.settle();
        // The system booted before becomes the boot default again, then the host reboots into
        // it: the only way back from a kernel that cannot reach the network.
        let back = self.books.state.rollback_target();
        let keep = back.as_ref().and_then(|b| b.generation);
        let mut boot = self.config.clone();
        if let Some(mode) = &mut boot.system {
            mode.action = SwitchAction::Boot;
        }
        let limits = limits(&boot);
        let mut stop = self.stop.clone();
        let rollback = deploy::give_back(
            &self.profile,
            &build,
            back,
            &limits,
            &self.watchdog,
            &mut stop,
        )
        .await;
        let rebooting = matches!(
            rollback,
            deploy::Rollback::Restored {
                reactivation: Ok(()),
                ..
            } | deploy::Rollback::SetAgain {
                reactivation: Ok(()),
                ..
            }
        );
        let deployment = Deployment {
            profile: self.profile.state().unwrap_or_default(),
            result: Err(DeployError::ContactLost {
                path: build.path.clone(),
                after: "the reboot",
                error,
                rollback,
            }),
        };
        self.finish(build, deployment, keep, None).await?;
        self.books.settle();
        if rebooting {
            warn!(
                hail.event = "reboot",
                "rebooting into the system booted before, once"
            );
            if let Err(e) = system::reboot(&self.watchdog).await {
                warn!(hail.event = "reboot", hail.error = %e, "reboot failed: {e}");
            }
        }
        Ok(())
    }

    /// Tries the poll's request until Hydra answers well or `timeout` passes (`Err(why)`, the
    /// last error); `Err(Stopping)` when hail is stopping.
    async fn reach_hydra(
        &mut self,
        build: &Build,
        timeout: Duration,
    ) -> Result<Result<(), String>, Stopping> {
        self.report(Activity::Confirming(build));
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let error = match self.fetch_offer().await {
                Ok(Ok(_)) => return Ok(Ok(())),
                Ok(Err(e)) => e.to_string(),
                Err(_) => return Err(Stopping),
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Err(error));
            }
            warn!(
                hail.event = "confirm",
                hail.build_id = build.id,
                "no contact with Hydra yet: {error}"
            );
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(left.min(RETRY)) => {}
                _ = stopped(&mut stop) => return Err(Stopping),
            }
        }
    }
}
