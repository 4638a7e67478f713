//! Settings from the environment, as a unit's `Environment=` or env file gives them:
//! `HAIL_ONESHOT` takes the usual spellings of yes and no, and a "no" never conflicts with a
//! poll period.

use std::path::Path;
use std::process::{Command, Stdio};

use hail_testkit::notify::NotifySocket;

use crate::fixture::{HAIL, RUN, wait_until};

fn hail(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(HAIL);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HAIL_PROFILE", dir.join("profile"))
        // Nothing listens there: a poll fails at once.
        .env("HAIL_JOB_URI", "http://127.0.0.1:9/job/p/j/x")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn hail_oneshot_yes_polls_once_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    for yes in ["1", "true", "yes", "on"] {
        let out = hail(dir.path(), &[("HAIL_ONESHOT", yes)]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "HAIL_ONESHOT={yes}: {stderr}");
    }
}

#[test]
fn hail_oneshot_no_runs_the_service_even_with_a_poll_period() {
    let dir = tempfile::tempdir().unwrap();
    for no in ["0", "false", "no", "off"] {
        let notify = NotifySocket::bind();
        let mut child = hail(
            dir.path(),
            &[
                ("HAIL_ONESHOT", no),
                ("HAIL_POLL_PERIOD", "30s"),
                notify.env(),
            ],
        )
        .spawn()
        .unwrap();
        // The service reports its failed poll and waits for the next; `--oneshot` exits instead.
        let waiting = |l: &String| l.starts_with("STATUS=") && l.contains("retrying in");
        let mut exited = None;
        wait_until(RUN, || {
            exited = child.try_wait().unwrap();
            exited.is_some() || notify.lines().iter().any(waiting)
        });
        if let Some(status) = exited {
            let out = child.wait_with_output().unwrap();
            panic!(
                "HAIL_ONESHOT={no}: exited ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            notify.lines().iter().any(waiting),
            "HAIL_ONESHOT={no}: {:?}",
            notify.lines()
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn oneshot_with_a_poll_period_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = hail(
        dir.path(),
        &[("HAIL_ONESHOT", "1"), ("HAIL_POLL_PERIOD", "30s")],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--oneshot polls once"), "{stderr}");
}
