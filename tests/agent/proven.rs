//! Deploying only what is proven: health checks (rollback when one never passes, retries, a
//! hanging check bounded, SIGTERM during the checks), no downgrades, and a staged rollout by
//! build age and this host's slot.

use std::path::Path;
use std::time::Duration;

use crate::fixture::{Fixture, RUN, activated, wait_until};
use hail_testkit::notify::NotifySocket;

/// A health check script: `body` in a POSIX shell.
fn check_script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path.display().to_string()
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_failing_health_check_rolls_back_and_the_build_is_known_bad() {
    let f = Fixture::new();
    let v1 = f.deployed("1");
    let (v2, b2) = f.release("2");
    let env_file = f.tmp.path().join("check-env");
    let check = check_script(
        f.tmp.path(),
        "check",
        &format!(
            "env | grep '^HAIL_' | sort > '{}'; echo 'service answered 503'; exit 1",
            env_file.display()
        ),
    );
    let args = [
        "--health-check",
        &check,
        "--health-interval",
        "100ms",
        "--health-timeout",
        "5s",
    ];
    let r = f.hail.oneshot(&args, RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert!(r.output.contains("health check of"), "{}", r.output);
    assert!(r.output.contains("service answered 503"), "{}", r.output);
    // Back at build 1, whose activation ran again.
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert_eq!(
        f.activations(),
        [
            activated("1", &v1),
            activated("2", &v2),
            activated("1", &v1)
        ]
    );
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains(&format!("HAIL_BUILD_ID={b2}\n")), "{env}");
    assert!(
        env.contains(&format!("HAIL_STORE_PATH={}\n", v2.out_path)),
        "{env}"
    );
    assert!(env.contains("HAIL_GENERATION=2\n"), "{env}");
    assert!(
        env.contains(&format!("HAIL_PROFILE={}\n", f.hail.profile.display())),
        "{env}"
    );
    // Known-bad, with the check's last word.
    let r = f.hail.oneshot(&args, RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert!(r.output.contains("health check failed"), "{}", r.output);
    assert!(r.output.contains("service answered 503"), "{}", r.output);
    assert_eq!(f.activations().len(), 3);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_profiles_own_check_passing_on_its_third_try() {
    let f = Fixture::new();
    let tries = f.tmp.path().join("tries");
    // The profile ships bin/health-check: it fails twice, then passes.
    let own = format!(
        "echo x >> '{t}'; [ $(wc -l < '{t}') -ge 3 ]",
        t = tries.display()
    );
    let (v1, b1) = f.release_spec(&f.spec("1").health_check(&own));
    let r = f.hail.oneshot(
        &["--health-interval", "100ms", "--health-timeout", "1m"],
        RUN,
    );
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(std::fs::read_to_string(&tries).unwrap().lines().count(), 3);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert!(
        r.output.contains(&format!("deployed build {b1}")),
        "{}",
        r.output
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_hanging_check_is_bounded_and_the_watchdog_stays_fed() {
    let f = Fixture::new();
    let v1 = f.deployed("1");
    f.release("2");
    let started = f.tmp.path().join("check-started");
    let check = check_script(
        f.tmp.path(),
        "check",
        &format!("touch '{}'; exec sleep 1000", started.display()),
    );
    let notify = NotifySocket::bind();
    let r = f.hail.spawn_env(
        &[
            "--oneshot",
            "--health-check",
            &check,
            "--health-timeout",
            "3s",
        ],
        &[notify.env(), ("WATCHDOG_USEC", "1000000")],
    );
    let r = r.finish_within(RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert!(started.exists());
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    // Pings went on while the check hung (at least one per half-period over the 3 s).
    let pings = notify.lines().iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!(pings >= 4, "{pings} pings: {:?}", notify.lines());
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn sigterm_during_the_checks_keeps_the_generation_and_the_next_start_checks_it() {
    let f = Fixture::new();
    let v1 = f.deployed("1");
    let (v2, b2) = f.release("2");
    let started = f.tmp.path().join("check-started");
    let verdict = f.tmp.path().join("verdict");
    // Waits for a verdict file, then exits with it.
    let check = check_script(
        f.tmp.path(),
        "check",
        &format!(
            "touch '{s}'; while [ ! -e '{v}' ]; do sleep 0.05; done; exit $(cat '{v}')",
            s = started.display(),
            v = verdict.display()
        ),
    );
    let args = [
        "--poll-period",
        "1h",
        "--health-check",
        &check,
        "--health-timeout",
        "10m",
    ];
    let mut running = f.hail.spawn(&args);
    assert!(wait_until(RUN, || started.exists()), "{}", running.output());
    running.signal(libc::SIGTERM);
    // The check gets the stop grace; let it finish as "not yet".
    std::fs::write(&verdict, "1").unwrap();
    let status = running.wait_timeout(RUN).expect("hail stops");
    assert!(status.success(), "{}", running.output());
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));

    // The next start checks build 2 (which now fails) and rolls back.
    let mut running = f.hail.spawn(&[
        "--poll-period",
        "1h",
        "--health-check",
        &check,
        "--health-interval",
        "100ms",
        "--health-timeout",
        "5s",
    ]);
    let v1a = activated("1", &v1);
    let v2a = activated("2", &v2);
    // Deployed, the first agent's start-up, build 2, the second's start-up, back to build 1.
    f.assert_activations(&[v1a.clone(), v1a.clone(), v2a.clone(), v2a, v1a], &running);
    assert!(
        wait_until(RUN, || f.profile_target().as_deref()
            == Some(v1.out_path.as_str())),
        "{}",
        running.output()
    );
    assert!(
        running.wait_for_output(&format!("build {b2} ("), RUN),
        "{}",
        running.output()
    );
    running.terminate(Duration::from_secs(30));
    let r = f.hail.oneshot(&["--health-check", &check], RUN);
    assert_eq!(r.code(), Some(7), "build 2 is known-bad: {}", r.output);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_lower_build_id_is_not_deployed_unless_allowed() {
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    let (v2, b2) = f.release("2");
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(0));
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));
    // Hydra no longer counts build 2 as successful: its latest is the older build 1.
    f.hydra.finish(b2, 1);
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(8), "{}", r.output);
    assert!(r.output.contains("not downgrading"), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));
    let r = f.hail.oneshot(&["--allow-downgrade"], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_young_build_waits_and_is_deployed_at_its_slot_without_a_poll_period() {
    let f = Fixture::new();
    let v1 = f.deployed("1");
    f.release("2");
    // --oneshot: not eligible yet, exit 8, nothing touched.
    let r = f.hail.oneshot(&["--min-build-age", "1h"], RUN);
    assert_eq!(r.code(), Some(8), "{}", r.output);
    assert!(r.output.contains("old enough"), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));

    // A key that puts this host at least a second into a 3 s window.
    let job = f.hail.job_uri.clone();
    let window = Duration::from_secs(3);
    let key = (0..1000)
        .map(|i| format!("host-{i}"))
        .find(|k| hail::decide::rollout_delay(k, &job, window) >= Duration::from_millis(1500))
        .unwrap();
    let (v3, b3) = f.release("3");
    let mut running = f.hail.spawn(&[
        "--poll-period",
        "1h",
        "--rollout-spread",
        "3s",
        "--rollout-key",
        &key,
    ]);
    assert!(
        running.wait_for_output(&format!("build {b3} waits for its rollout slot"), RUN),
        "{}",
        running.output()
    );
    // Deployed at the slot, although the next poll is an hour away.
    assert!(
        wait_until(RUN, || f.profile_target().as_deref()
            == Some(v3.out_path.as_str())),
        "{}",
        running.output()
    );
    running.terminate(Duration::from_secs(30));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn hydras_clock_ahead_holds_no_build_back() {
    let f = Fixture::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Hydra's clock an hour ahead of this host's: its build "finished" an hour from now.
    f.hydra.set_clock_ahead(3600);
    let (v1, _) = f.release("1");
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    // A build that finished two hours ago by Hydra's clock is old enough.
    let (v2, b2) = f.release("2");
    f.hydra.set_stoptime(b2, now + 3600 - 7200);
    let r = f.hail.oneshot(&["--min-build-age", "1h"], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn hydras_clock_behind_fires_no_minimum_age_early() {
    let f = Fixture::new();
    // Hydra's clock an hour behind this host's: a build it finished just now is not an hour old.
    f.hydra.set_clock_ahead(-3600);
    let v1 = f.deployed("1");
    f.release("2");
    let r = f.hail.oneshot(&["--min-build-age", "1h"], RUN);
    assert_eq!(r.code(), Some(8), "{}", r.output);
    let wait = waits_for_age(&r.output);
    assert!(wait > 50 * 60 && wait <= 3600, "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
}

/// This host's clock set five hours forward, then back (a bad real-time clock, an NTP step):
/// build ages are measured on Hydra's clock (its answers' `Date:`), so a minimum age neither
/// fires early nor stalls; without one, time holds no build back.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_faketime),
    ignore = "needs root, Nix and faketime (HAIL_TEST_SKIP_MISSING=1)"
)]
fn this_hosts_clock_set_forward_or_back_neither_fires_early_nor_stalls() {
    let f = Fixture::new();
    let preload = faketime();
    let v1 = f.deployed("1");
    let (v2, _) = f.release("2");
    // hail with its clock set `offset` seconds away (its monotonic clock left alone).
    let faked = |args: &[&str], offset: &str| {
        let env = [
            ("LD_PRELOAD", preload.as_str()),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ];
        f.hail.spawn_env(args, &env).finish_within(RUN)
    };
    for offset in ["+18000", "-18000"] {
        let r = faked(&["--oneshot", "--min-build-age", "1h"], offset);
        assert_eq!(r.code(), Some(8), "{offset}: {}", r.output);
        let wait = waits_for_age(&r.output);
        assert!(wait > 50 * 60 && wait <= 3600, "{offset}: {}", r.output);
        assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    }
    let r = faked(&["--oneshot"], "-18000");
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));
}

/// libfaketime, which sets a process's clock (Debian's `faketime` package).
fn faketime() -> String {
    hail_testkit::prereq::require(&hail_testkit::prereq::FAKETIME);
    let lib = hail_testkit::prereq::library("faketime/libfaketime.so.1").expect("required");
    lib.display().to_string()
}

/// The seconds in `build N waits until it is old enough (in 59m58s)`.
fn waits_for_age(output: &str) -> u64 {
    let start = output.find("old enough (in ").expect("a wait for the age") + 15;
    let text = &output[start..];
    let text = &text[..text.find(')').unwrap()];
    let mut total = 0;
    let mut number = 0;
    for c in text.chars() {
        match c {
            '0'..='9' => number = number * 10 + u64::from(c as u8 - b'0'),
            'h' => (total, number) = (total + number * 3600, 0),
            'm' => (total, number) = (total + number * 60, 0),
            's' => (total, number) = (total + number, 0),
            _ => panic!("not a duration: {text}"),
        }
    }
    total
}
