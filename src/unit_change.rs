//! Settings that changed under a running hail. The NixOS module gives each instance's unit a
//! digest of its settings, `HAIL_UNIT_CONFIG`, and has a system switch reload a changed instance
//! rather than restart it (a restart would cut a deployment short). On a reload (SIGHUP), asked
//! for between two rounds, hail compares the digest it runs with to the one its unit now has
//! (`systemctl show -p Environment`); when they differ it asks systemd to restart it
//! (`systemctl restart --no-block`), so that it runs with the unit's new settings. Without the
//! variable (any other install), a reload only polls.

use std::time::Duration;

use tracing::{info, warn};

use crate::process::{CommandLine, run_captured};

/// The variable holding the digest of the unit's settings.
pub const VAR: &str = "HAIL_UNIT_CONFIG";

/// Bound for one `systemctl` call (both return at once).
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// The value of [`VAR`] in the output of `systemctl show -p Environment --value UNIT`
/// (assignments separated by spaces; the digest itself has none).
pub fn digest_in(environment: &str) -> Option<&str> {
    environment.split_whitespace().find_map(|assignment| {
        assignment
            .trim_matches('"')
            .strip_prefix(VAR)?
            .strip_prefix('=')
    })
}

/// What a reload means for this process: `Some(reason)` when the unit's settings are no longer
/// those it runs with.
pub fn changed(running: &str, unit: &str, current: Option<&str>) -> Option<String> {
    match current {
        Some(current) if current == running => None,
        Some(current) => Some(format!(
            "the settings of {unit} changed ({VAR} {running} -> {current})"
        )),
        None => Some(format!(
            "the settings of {unit} changed ({VAR} {running} -> none)"
        )),
    }
}

/// Called when a reload was asked for and hail is between two rounds. `true` when it asked
/// systemd to restart it: the caller then only waits to be stopped. Any failure to find out is
/// logged and counts as "unchanged" (the reload still polls).
pub async fn restart_if_changed() -> bool {
    let Some(running) = std::env::var(VAR).ok().filter(|v| !v.is_empty()) else {
        return false;
    };
    match tokio::task::spawn_blocking(move || check_and_restart(&running)).await {
        Ok(Ok(restarting)) => restarting,
        Ok(Err(e)) => {
            warn!(hail.event = "restart", hail.error = %e, "cannot check the unit's settings: {e}");
            false
        }
        Err(e) => {
            warn!(
                hail.event = "restart",
                "cannot check the unit's settings: {e}"
            );
            false
        }
    }
}

fn check_and_restart(running: &str) -> Result<bool, String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let unit =
        crate::systemd::unit_of_cgroup(&cgroup).ok_or("hail does not run in a service unit")?;
    let show = CommandLine::new("systemctl").args([
        "show",
        "--property=Environment",
        "--value",
        "--",
        &unit,
    ]);
    let environment = run_captured(&show, SYSTEMCTL_TIMEOUT).map_err(|e| e.to_string())?;
    let Some(reason) = changed(running, &unit, digest_in(&environment)) else {
        return Ok(false);
    };
    info!(
        hail.event = "restart",
        "{reason}: restarting through systemd to apply them"
    );
    let restart = CommandLine::new("systemctl").args(["restart", "--no-block", "--", &unit]);
    run_captured(&restart, SYSTEMCTL_TIMEOUT).map_err(|e| e.to_string())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_comes_from_the_units_environment() {
        let show = "HAIL_JOB_URI=https://h/job/p/j/a \"NIX_CONFIG=a = 1\" HAIL_UNIT_CONFIG=0123abcd PATH=/bin\n";
        assert_eq!(digest_in(show), Some("0123abcd"));
        assert_eq!(digest_in("HAIL_UNIT_CONFIGX=1 A=HAIL_UNIT_CONFIG=2"), None);
        assert_eq!(digest_in(""), None);
    }

    #[test]
    fn only_a_different_digest_is_a_change() {
        assert_eq!(changed("aa", "hail@a.service", Some("aa")), None);
        let reason = changed("aa", "hail@a.service", Some("bb")).unwrap();
        assert!(
            reason.contains("hail@a.service") && reason.contains("aa -> bb"),
            "{reason}"
        );
        assert!(changed("aa", "hail@a.service", None).is_some());
    }
}
