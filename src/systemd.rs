//! Talking to the service manager: readiness, status line, watchdog, stopping.
//! Every function is a no-op when hail does not run under systemd (no `NOTIFY_SOCKET`).

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;

/// Variables that belong to hail alone: a child that inherited them could send notifications
/// in hail's name (or be refused by `NotifyAccess=main` and confuse the operator).
pub const NOTIFY_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Removes [`NOTIFY_VARS`] from a child's environment. (Unsetting them in hail itself would be
/// unsound once threads exist.)
pub fn strip_notify_env(cmd: &mut tokio::process::Command) {
    for var in NOTIFY_VARS {
        cmd.env_remove(var);
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(&one_line(status))]);
}

pub fn stopping(status: &str) {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status(&one_line(status)),
    ]);
}

/// `s` with every control character (a newline, an escape sequence's start) made a space:
/// STATUS= is one line by protocol, and a newline would end the message.
/// Whether a unit's exit status is one of systemd's own, for a process it could not set up (a
/// cgroup, namespace or exec step: 200–243, systemd.exec(5)): not the program's doing, and worth
/// one more try.
pub fn setup_failed(status: i32) -> bool {
    (200..=243).contains(&status)
}

pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `NAME` of the `hail@NAME.service` this process runs in, if it does.
pub fn instance_name() -> Option<String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let unit = unit_of_cgroup(&cgroup)?;
    let name = unit.strip_prefix("hail@")?.strip_suffix(".service")?;
    Some(name.to_owned())
}

/// The service unit a process runs in, from its `/proc/self/cgroup` (the unified hierarchy's
/// line, or systemd's own on a legacy one).
pub fn unit_of_cgroup(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| {
            let (id_controllers, path) = line.rsplit_once(':')?;
            matches!(id_controllers, "0:" | "1:name=systemd").then_some(path)
        })
        .filter_map(|path| path.rsplit('/').next())
        .find(|last| last.ends_with(".service"))
        .map(str::to_string)
}

/// The host's local time of day (for `--reboot-window`), as the C library reads the host's time
/// zone (`TZ`, else /etc/localtime): the same local time systemd's timers and the journal use.
pub fn local_time_of_day() -> jiff::civil::Time {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: localtime_r reads `now` and writes only into `tm`, which it fully initialises on
    // success; on failure (null) the zeroed value (midnight) is used.
    let tm = unsafe {
        libc::localtime_r(&now, tm.as_mut_ptr());
        tm.assume_init()
    };
    jiff::civil::Time::new(
        tm.tm_hour as i8,
        tm.tm_min as i8,
        tm.tm_sec.min(59) as i8,
        0,
    )
    .unwrap_or(jiff::civil::Time::midnight())
}

/// Watchdog pings, sent only from the main loop's own awaits: while hail waits for a bounded step
/// (an HTTP request, a nix command, an activation, the sleep between polls) it pings; when the
/// loop is stuck (or stopped), the pings stop and systemd restarts hail.
#[derive(Debug, Clone)]
pub struct Watchdog {
    /// Half of `WATCHDOG_USEC`, or `None` when the watchdog is off.
    interval: Option<Duration>,
}

impl Watchdog {
    pub fn from_env() -> Self {
        Watchdog {
            interval: sd_notify::watchdog_enabled().map(|d| d / 2),
        }
    }

    pub fn disabled() -> Self {
        Watchdog { interval: None }
    }

    pub fn ping(&self) {
        if self.interval.is_some() {
            send(&[NotifyState::Watchdog]);
        }
    }

    /// Awaits `fut` for at most `limit`, pinging the watchdog meanwhile. `Err(())` on timeout.
    pub async fn bounded<F: Future>(&self, limit: Duration, fut: F) -> Result<F::Output, ()> {
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(fut, deadline);
        let mut ticks = self.ticks();
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                _ = &mut deadline => return Err(()),
                _ = tick(&mut ticks) => self.ping(),
            }
        }
    }

    pub fn ticks(&self) -> Option<tokio::time::Interval> {
        self.interval.map(|i| {
            let mut t = tokio::time::interval(i);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        })
    }
}

/// The next tick, or never when the watchdog is off.
pub async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_comes_from_the_cgroup() {
        assert_eq!(
            unit_of_cgroup("0::/system.slice/system-hail.slice/hail@web-prod.service\n"),
            Some("hail@web-prod.service".to_string())
        );
        let legacy = "12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/system-hail.slice/hail@a.service\n0::/\n";
        assert_eq!(unit_of_cgroup(legacy), Some("hail@a.service".to_string()));
        assert_eq!(
            unit_of_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(unit_of_cgroup(""), None);
    }
}
