//! What a service manager sees of hail through `NOTIFY_SOCKET` (READY=1, STATUS=, WATCHDOG=1,
//! STOPPING=1), and that hail's children do not inherit the notification variables.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::fixture::{Fixture, RUN, wait_until};
use hail_testkit::notify::NotifySocket;

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn ready_status_watchdog_and_stopping() {
    let f = Fixture::new();
    let (p, id) = f.release("1");
    let notify = NotifySocket::bind();
    let mut hail = f.hail.spawn_env(
        &["--poll-period", "1h"],
        &[notify.env(), ("WATCHDOG_USEC", "1000000")],
    );

    assert!(
        notify.wait_for_line("READY=1", RUN),
        "no READY=1: {}",
        hail.output()
    );
    let deployed = notify.wait_for(
        |l| l.starts_with("STATUS=deployed build ") && l.contains("idle"),
        RUN,
    );
    let deployed = deployed.unwrap_or_else(|| panic!("{:?}\n{}", notify.lines(), hail.output()));
    assert!(
        deployed.starts_with(&format!("STATUS=deployed build {id} (")),
        "{deployed}"
    );
    let base = p.out_path.trim_start_matches("/nix/store/");
    assert!(
        deployed.contains(&base[..8]),
        "{deployed} does not name {}",
        p.out_path
    );
    for l in notify.lines().iter().filter(|l| l.starts_with("STATUS=")) {
        assert!(
            l.contains("; "),
            "STATUS must read `deployed <what>; <activity>`: {l}"
        );
    }

    // Pings at about half of WATCHDOG_USEC while idle: each within WATCHDOG_USEC of the one
    // before, as systemd requires, and not in a busy loop.
    let before = count(&notify, "WATCHDOG=1");
    let watching = Instant::now();
    assert!(
        wait_until(RUN, || count(&notify, "WATCHDOG=1") >= before + 3),
        "{:?}",
        notify.lines()
    );
    let (pings, elapsed) = (count(&notify, "WATCHDOG=1") - before, watching.elapsed());
    assert!(
        pings as u128 <= elapsed.as_millis() / 250 + 2,
        "{pings} watchdog pings in {elapsed:?} with WATCHDOG_USEC=1s"
    );
    let at: Vec<Instant> = notify
        .messages()
        .iter()
        .filter(|m| m.at >= watching && m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|m| m.at)
        .collect();
    for gap in at.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap <= Duration::from_secs(1),
            "{gap:?} between watchdog pings with WATCHDOG_USEC=1s"
        );
    }

    let status = hail
        .terminate(Duration::from_secs(70))
        .expect("hail exits on SIGTERM");
    assert!(
        notify.wait_for_line("STOPPING=1", RUN),
        "{:?}",
        notify.lines()
    );
    assert!(
        status.success(),
        "exit on SIGTERM: {status:?}\n{}",
        hail.output()
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn no_watchdog_pings_without_watchdog_usec() {
    let f = Fixture::new();
    f.release("1");
    let notify = NotifySocket::bind();
    let hail = f.hail.spawn_env(&["--poll-period", "1h"], &[notify.env()]);
    assert!(notify.wait_for_line("READY=1", RUN), "{}", hail.output());
    f.wait_activations(1, RUN);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&notify, "WATCHDOG=1"), 0, "{:?}", notify.lines());
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn status_reports_a_failing_poll() {
    let f = Fixture::new();
    f.hydra.set_private(true);
    let notify = NotifySocket::bind();
    let hail = f.hail.spawn_env(&["--poll-period", "1h"], &[notify.env()]);
    let status = notify.wait_for(
        |l| l.starts_with("STATUS=") && l.contains("poll failed"),
        RUN,
    );
    let status = status.unwrap_or_else(|| panic!("{:?}\n{}", notify.lines(), hail.output()));
    assert!(
        status.contains("This page requires you to sign in."),
        "{status}"
    );
    assert!(
        notify.lines().contains(&"READY=1".to_string()),
        "a failing poll must not hold back READY=1"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn ready_waits_for_a_slow_startup_activation() {
    let f = Fixture::new();
    f.release_spec(&f.spec("1").sleep(3.0));
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    let notify = NotifySocket::bind();
    let hail = f.hail.spawn_env(&["--poll-period", "1h"], &[notify.env()]);
    assert!(notify.wait_for_line("READY=1", RUN), "{}", hail.output());
    assert_eq!(
        f.activations().len(),
        2,
        "READY=1 before the start-up activation finished"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn children_do_not_inherit_the_notification_variables() {
    let f = Fixture::new();
    let dump = f.tmp.path().join("activate-env");
    let spec = f.spec("1").extra(&format!(
        "env >> '{}'; echo ---- >> '{}'",
        dump.display(),
        dump.display()
    ));
    f.release_spec(&spec);
    let notify = NotifySocket::bind();
    let env = [
        notify.env(),
        ("WATCHDOG_USEC", "5000000"),
        ("HAIL_TEST_MARKER_VAR", "kept"),
    ];
    let hail = f.hail.spawn_env(&["--poll-period", "1h"], &env);
    f.wait_activations(1, RUN);
    drop(hail);

    // Start-up activation too: a second run on the deployed profile.
    let hail = f.hail.spawn_env(&["--poll-period", "1h"], &env);
    assert!(
        wait_until(RUN, || f.activations().len() >= 2),
        "{}",
        hail.output()
    );

    let text = std::fs::read_to_string(&dump).unwrap();
    let runs: Vec<BTreeMap<&str, &str>> = text
        .split("----\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.lines().filter_map(|l| l.split_once('=')).collect())
        .collect();
    assert_eq!(runs.len(), 2, "{text}");
    for env in runs {
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            assert!(
                !env.contains_key(var),
                "bin/activate inherited {var}: {env:?}"
            );
        }
        // The rest of hail's environment is passed on.
        assert_eq!(env.get("HAIL_TEST_MARKER_VAR"), Some(&"kept"), "{env:?}");
        assert!(env.contains_key("NIX_CONFIG"), "{env:?}");
    }
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn stopping_waits_for_a_running_activation() {
    let f = Fixture::new();
    // The activation holds until the test removes `hold`.
    let (started, hold) = (f.tmp.path().join("started"), f.tmp.path().join("hold"));
    std::fs::write(&hold, "").unwrap();
    let extra = format!(
        "touch '{}'; while [ -e '{}' ]; do sleep 0.1; done",
        started.display(),
        hold.display()
    );
    f.release_spec(&f.spec("1").extra(&extra));
    let notify = NotifySocket::bind();
    let mut hail = f.hail.spawn_env(&["--poll-period", "1h"], &[notify.env()]);
    assert!(
        wait_until(RUN, || started.exists()),
        "the activation did not start: {}",
        hail.output()
    );
    hail.signal(libc::SIGTERM);
    assert!(
        hail.wait_timeout(Duration::from_secs(1)).is_none(),
        "hail did not wait for its activation: {}",
        hail.output()
    );
    std::fs::remove_file(&hold).unwrap();
    let status = hail
        .wait_timeout(Duration::from_secs(70))
        .expect("hail exits on SIGTERM");
    assert_eq!(
        f.activations().len(),
        1,
        "the activation was cut short: {}",
        hail.output()
    );
    assert!(status.success(), "{status:?}: {}", hail.output());
}

fn count(n: &NotifySocket, line: &str) -> usize {
    n.lines().iter().filter(|l| *l == line).count()
}
