//! Health checks after an activation: the profile's `bin/health-check` and `--health-check`, each
//! run until it exits 0, tried again every interval until one overall deadline. They run as
//! `bin/activate` does (without a shell, output to the log, process group killed on timeout).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::activation::{self, ActivationError};
use crate::cli::HealthChecks;
use crate::format;
use crate::process::CommandLine;
use crate::profile::Profile;
use crate::systemd::{self, Watchdog};
use crate::types::Build;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// `last` is the check's last output line, or how its last try ended.
    #[error("{check} did not pass within {}: {last}", crate::format::duration(*.timeout))]
    Failed {
        check: String,
        last: String,
        timeout: Duration,
    },
    #[error("hail is stopping; {check} had not passed yet")]
    Stopped { check: String },
}

/// How to run the checks.
pub struct Schedule {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Runs every check in turn until each has passed once, all within `schedule.timeout`. `env`
/// tells them what was deployed; their output goes to `on_line`.
pub async fn check(
    checks: &[CommandLine],
    env: &[(&str, String)],
    schedule: &Schedule,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
    mut on_line: impl FnMut(&str),
) -> Result<(), HealthError> {
    let deadline = Instant::now() + schedule.timeout;
    for cmd in checks {
        let check = cmd.display();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut last = String::new();
            let tried = activation::run(cmd, env, left, watchdog, stop, |line| {
                last = line.to_owned();
                on_line(line);
            })
            .await;
            let failed = |how: String| HealthError::Failed {
                check: check.clone(),
                last: if last.is_empty() { how } else { last.clone() },
                timeout: schedule.timeout,
            };
            match tried {
                Ok(()) => break,
                Err(ActivationError::Stopped { .. }) => return Err(HealthError::Stopped { check }),
                Err(e) if Instant::now() + schedule.interval >= deadline => {
                    return Err(failed(e.to_string()));
                }
                Err(_) if *stop.borrow() => return Err(HealthError::Stopped { check }),
                Err(_) => {}
            }
            if !pause(schedule.interval, watchdog, stop).await {
                return Err(HealthError::Stopped { check });
            }
        }
    }
    Ok(())
}

/// Waits `d` (feeding the watchdog); false when hail is asked to stop meanwhile.
async fn pause(d: Duration, watchdog: &Watchdog, stop: &mut watch::Receiver<bool>) -> bool {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    let mut ticks = watchdog.ticks();
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            _ = stop.wait_for(|s| *s) => return false,
            _ = systemd::tick(&mut ticks) => watchdog.ping(),
        }
    }
}

/// Runs the profile's `bin/health-check` (if it has one) and `--health-check` (if given) until
/// each passes; they learn what was deployed from `HAIL_*` variables.
pub async fn check_profile(
    profile: &Profile,
    build: &Build,
    generation: Option<u64>,
    health: &HealthChecks,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), HealthError> {
    let own = profile.health_check_script();
    let checks: Vec<CommandLine> = activation::exists(&own)
        .then(|| CommandLine::new(&own))
        .into_iter()
        .chain(
            health
                .command
                .as_ref()
                .map(|words| CommandLine::new(&words[0]).args(&words[1..])),
        )
        .collect();
    if checks.is_empty() {
        return Ok(());
    }
    let env = [
        ("HAIL_BUILD_ID", build.id.to_string()),
        ("HAIL_STORE_PATH", build.path.to_string()),
        ("HAIL_PROFILE", profile.path().display().to_string()),
        ("HAIL_GENERATION", format::generation(generation)),
    ];
    let schedule = Schedule {
        interval: health.interval,
        timeout: health.timeout,
    };
    tracing::info!(
        hail.event = "health-check",
        hail.build_id = build.id,
        "checking the health of build {}",
        build.id
    );
    check(&checks, &env, &schedule, watchdog, stop, |line| {
        tracing::info!(
            hail.event = "health-check-output",
            hail.build_id = build.id,
            "health-check: {line}"
        );
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_reads_as_people_write_durations() {
        let e = HealthError::Failed {
            check: "bin/health-check".into(),
            last: "connection refused".into(),
            timeout: Duration::from_secs(90),
        };
        assert_eq!(
            e.to_string(),
            "bin/health-check did not pass within 1m30s: connection refused"
        );
    }
}
