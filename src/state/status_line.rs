//! The wait before the next poll, and the one line systemd shows under the unit.

use std::time::Duration;

use jiff::Timestamp;

use super::{Activity, MIN_WAIT, Round, State};

/// The longest wait for a reboot window before the local clock is read again.
const REBOOT_RECHECK: Duration = Duration::from_secs(3600);
use crate::{decide, format};

impl State {
    /// How long to wait before the next poll: the period, or a growing backoff after failures,
    /// plus jitter from `entropy`. The time of the next poll goes into the record.
    pub fn schedule(&mut self, now: Timestamp, period: Duration, entropy: u64) -> Duration {
        let mut wait = decide::with_jitter(
            decide::next_wait(period, self.record.consecutive_failures),
            entropy,
        );
        // A build that becomes eligible by itself is deployed when it does, not a poll later.
        if let Some(Round::Held {
            wait: Some(eligible),
            ..
        }) = &self.last
        {
            wait = wait.min(*eligible).max(MIN_WAIT);
        }
        // A reboot waiting for its window happens when the window opens, not a poll later: a
        // second later (the window is judged by the local clock, the wait by a monotonic one),
        // plus up to a tenth of the window (or period) so that a fleet does not poll and reboot
        // in the same second. A wait longer than an hour is cut to an hour, so that a change of
        // the local clock (daylight saving time) is seen before the window.
        if let Some((opens, length)) = self.reboot_window {
            let until = Duration::try_from(now.duration_until(opens)).unwrap_or_default();
            let wake = if until > REBOOT_RECHECK {
                REBOOT_RECHECK
            } else {
                until + MIN_WAIT + decide::jitter(length.min(period), entropy)
            };
            wait = wait.min(wake);
        }
        self.record.next_poll = now.checked_add(wait).ok();
        wait
    }

    /// `deployed <what>; <activity>`: the one line systemd shows under the unit.
    pub fn status_line(&self, activity: Activity) -> String {
        let generation = format::generation(self.profile.generation);
        let what = match (&self.profile.current, self.deployed_build()) {
            (None, _) => "nothing".to_owned(),
            (Some(p), Some(id)) => format!("build {id} ({}), generation {generation}", p.short()),
            (Some(p), None) => format!("{}, generation {generation}", p.short()),
        };
        let activity = match activity {
            Activity::Starting => "starting".to_owned(),
            Activity::StartupActivation => "running the start-up activation".to_owned(),
            Activity::Polling => "polling Hydra".to_owned(),
            Activity::Deploying(b) => format!("deploying build {} ({})", b.id, b.path.short()),
            Activity::Confirming(b) => format!(
                "confirming contact with Hydra after deploying build {}",
                b.id
            ),
            Activity::Stopping => "stopping".to_owned(),
            Activity::Waiting(wait) => self.waiting(wait),
        };
        format!("deployed {what}; {activity}")
    }

    fn waiting(&self, wait: Duration) -> String {
        let wait = format::duration(wait);
        let mut line = match &self.last {
            Some(r) if r.is_failure() => format!("{r}; retrying in {wait}"),
            Some(r @ (Round::KnownBad { .. } | Round::Held { .. } | Round::NoneEligible(_))) => {
                format!("{r}; next poll in {wait}")
            }
            _ if self.record.paused => format!("paused; next poll in {wait}"),
            _ => format!("idle, next poll in {wait}"),
        };
        if let Some(reason) = self
            .record
            .pause_reason
            .as_ref()
            .filter(|_| self.record.paused)
        {
            line += &format!(" (paused: {reason})");
        }
        if let Some(note) = &self.gate_note {
            line += &format!(" (passed over: {note})");
        }
        if !self.record.reboot_needed.is_empty() {
            line += &format!(" (reboot needed: {})", self.record.reboot_needed.join(", "));
        }
        if let Some(e) = &self.startup_failure {
            line += &format!(" (start-up activation failed: {e})");
        }
        line
    }

    /// The Hydra build id of what the profile points at, when hail knows it.
    pub(super) fn deployed_build(&self) -> Option<u64> {
        self.record.deployed.as_ref().and_then(|d| d.build_id)
    }
}
