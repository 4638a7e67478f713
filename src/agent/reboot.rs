//! `--system`: whether the deployed system needs a reboot, and the reboot when the policy and
//! the window allow it.

use std::path::Path;

use jiff::Timestamp;
use tracing::{info, warn};

use super::Agent;
use crate::decide::{self, Reboot};
use crate::state::{Event, WindowWait};
use crate::types::ProfileState;
use crate::{format, system};

impl Agent {
    /// Compares the deployed system with the booted one (the state says so once, in the status
    /// and metrics), then reboots through systemd when `--reboot` and its window say so: only
    /// after a successful deployment (switch and health checks) or a poll that found it current,
    /// and not while paused.
    pub(super) async fn reboot_if_needed(&mut self) {
        let Some(mode) = self.config.system.clone() else {
            return;
        };
        let differs = match &self.books.state.profile().current {
            Some(p) => {
                system::reboot_needed(Path::new(p.as_str()), &mode.booted_system, mode.action)
            }
            None => Vec::new(),
        };
        let needed = !differs.is_empty();
        self.books
            .state
            .apply(Timestamp::now(), Event::Booted(differs));
        let now = crate::systemd::local_time_of_day();
        let decision = decide::reboot(mode.reboot, needed, self.books.state.may_reboot(), now);
        let waits = match decision {
            Reboot::InWindow { window, opens_in } => Some(WindowWait {
                opens_in,
                length: window.length(),
            }),
            _ => None,
        };
        self.books
            .state
            .apply(Timestamp::now(), Event::RebootWaits(waits));
        match decision {
            Reboot::Nothing | Reboot::Report => self.reboot_announced = false,
            Reboot::InWindow { window, opens_in } => {
                if !std::mem::replace(&mut self.reboot_announced, true) {
                    let when = format::duration(opens_in);
                    if self.config.poll_period.is_some() {
                        info!(
                            hail.event = "reboot",
                            "the deployed system needs a reboot: rebooting when the window \
                             {window} (local time) opens, in {when}"
                        );
                    } else {
                        info!(
                            hail.event = "reboot",
                            "the deployed system needs a reboot: not now, outside the window \
                             {window} (local time), which opens in {when}"
                        );
                    }
                }
            }
            Reboot::Now => {
                info!(
                    hail.event = "reboot",
                    "the deployed system needs a reboot: rebooting now"
                );
                // Saved first: the first start after it confirms that the new system reaches
                // Hydra, and goes back to the one booted now if it does not.
                let from = system::booted(&mode.booted_system).map(|path| ProfileState {
                    generation: self.profile.generation_holding(&path),
                    current: Some(path),
                });
                self.books
                    .state
                    .apply(Timestamp::now(), Event::Rebooting { from });
                self.books.settle();
                if let Err(e) = system::reboot(&self.watchdog).await {
                    warn!(hail.event = "reboot", hail.error = %e, "reboot failed: {e}");
                }
            }
        }
    }
}
