//! Every bad answer from Hydra makes `hail --oneshot` exit 5 with nothing changed on disk and
//! nothing asked of the binary cache; a failing service does not poll back to back.
//!
//! Where it matters, the bad answer names a real, signed, published closure, so a hail that
//! ignored the problem would deploy it and the test would fail.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::fixture::{Fixture, RUN, assert_running, wait_until};
use hail_testkit::hail::{Finished, Running};
use hail_testkit::hydra::{BuildSpec, DEFAULT_JOB, DEFAULT_JOBSET, DEFAULT_PROJECT, Override};

/// Runs `hail --oneshot`, expects exit 5 and an untouched system.
fn refused(f: &Fixture, extra: &[&str]) -> Finished {
    refused_case(f, extra, "")
}

/// As [`refused`]; failures name `case`.
fn refused_case(f: &Fixture, extra: &[&str], case: &str) -> Finished {
    let r = f.hail.oneshot(extra, RUN);
    assert_eq!(r.code(), Some(5), "{case}: {}", r.output);
    f.assert_untouched(&r.output);
    r
}

/// Makes `/latest` redirect to build `id` whatever its state (Hydra itself only redirects to
/// successful builds; a proxy, a cache or a Hydra bug might not).
fn latest_points_at(f: &Fixture, id: u64) {
    let location = format!("{}/build/{id}", f.hydra.url());
    f.hydra.override_path(
        &f.hydra.default_latest_path(),
        Override::redirect(&location),
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn unfinished_build() {
    let f = Fixture::new();
    let p = f.publish("1");
    let id = f.hydra.add_build(BuildSpec::queued(&p.out_path));
    latest_points_at(&f, id);
    refused(&f, &[]);
}

/// A build being built (`starttime` set, `stoptime` null, `finished` 0) is never deployed: Hydra's
/// `/latest` passes over it, and a `/latest` pointing at it anyway is refused.
#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_running_build_is_never_deployed() {
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    let v2 = f.publish("2");
    let running = f.hydra.add_build(BuildSpec::running(&v2.out_path));
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));

    latest_points_at(&f, running);
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(5), "{}", r.output);
    assert!(
        r.output
            .contains(&format!("build {running} has not finished")),
        "{}",
        r.output
    );
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert!(
        !Path::new(&v2.out_path).exists(),
        "the running build was realised"
    );
}

/// Hydra answers 301 for a jobset renamed in its settings; hail follows it to the new name.
#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_renamed_jobset_is_followed() {
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    f.hydra
        .rename_jobset(DEFAULT_PROJECT, DEFAULT_JOBSET, "renamed");
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    let moved = format!("/job/{DEFAULT_PROJECT}/renamed/{DEFAULT_JOB}/latest");
    assert_eq!(f.latest_requests(), 1);
    assert_eq!(f.hydra.requests_to(&moved).len(), 1, "{}", r.output);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn failed_build() {
    let f = Fixture::new();
    let p = f.publish("1");
    let id = f.hydra.add_build(BuildSpec::failed(&p.out_path, 1));
    latest_points_at(&f, id);
    refused(&f, &[]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn null_out_path() {
    let f = Fixture::new();
    let p = f.publish("1");
    f.hydra
        .add_build(BuildSpec::succeeded(&p.out_path).outputs(&[("out", None)]));
    refused(&f, &[]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn missing_out_output() {
    let f = Fixture::new();
    let p = f.publish("1");
    f.hydra
        .add_build(BuildSpec::succeeded(&p.out_path).outputs(&[("bin", Some(&p.out_path))]));
    refused(&f, &[]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn paths_that_are_not_store_paths() {
    let f = Fixture::new();
    for bad in [
        "/etc/passwd",
        "/nix/store/../x",
        "/nix/store/../../etc/passwd",
        // 'e', 'o', 'u', 't' are not in Nix's base-32 alphabet.
        "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-profile",
        "/nix/store/L9R346P3D25VS4G5V37F3R3F28JS97KB-profile",
        "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97k-short",
        "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-profile/bin/activate",
        "nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-profile",
        "",
    ] {
        f.hydra.add_build(BuildSpec::succeeded(bad));
        refused_case(&f, &[], &format!("{bad:?}"));
    }
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn html_instead_of_json() {
    let f = Fixture::new();
    let (_, id) = f.release("1");
    let html = "<!DOCTYPE html><html><body>Hydra</body></html>";
    f.hydra.override_path(
        &format!("/build/{id}"),
        Override::respond(200, "text/html; charset=utf-8", html),
    );
    refused(&f, &[]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn json_that_is_not_a_build() {
    let f = Fixture::new();
    let (_, id) = f.release("1");
    let path = format!("/build/{id}");
    for body in [
        r#"{"id": 1, "finished": 1, "buildstatus": 0, "buildoutputs": {"out": {"path": "#
            .to_string(),
        "[]".to_string(),
        r#"{"id": "one", "finished": true}"#.to_string(),
        String::new(),
    ] {
        f.hydra.override_path(
            &path,
            Override::respond(200, "application/json", body.clone()),
        );
        refused_case(&f, &[], &format!("{body:?}"));
    }
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn no_successful_build_404() {
    let f = Fixture::new();
    let p = f.publish("1");
    f.hydra.add_build(BuildSpec::failed(&p.out_path, 1));
    let r = refused(&f, &[]);
    assert!(
        r.output
            .contains("There is no successful build to redirect to."),
        "{}",
        r.output
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn unknown_jobset_404() {
    let f = Fixture::new();
    f.release("1");
    let mut f = f;
    f.hail.job_uri = f.hydra.job_uri("hail", "no-such-jobset", "profile");
    refused(&f, &[]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn private_hydra_403() {
    let f = Fixture::new();
    f.release("1");
    f.hydra.set_private(true);
    let r = refused(&f, &[]);
    assert!(
        r.output.contains("This page requires you to sign in."),
        "{}",
        r.output
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn server_error_500() {
    let f = Fixture::new();
    f.release("1");
    f.hydra.override_path(
        &f.hydra.default_latest_path(),
        Override::respond(500, "text/plain", "Internal Server Error"),
    );
    refused(&f, &[]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn connection_closed_without_answer() {
    let f = Fixture::new();
    f.release("1");
    f.hydra
        .override_path(&f.hydra.default_latest_path(), Override::close());
    refused(&f, &[]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn unreachable_hydra() {
    let f = Fixture::new();
    // A port nobody listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut f = f;
    f.hail.job_uri = format!("http://127.0.0.1:{port}/job/hail/test/profile");
    refused(&f, &[]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn slow_answer_times_out() {
    let f = Fixture::new();
    let (_, id) = f.release("1");
    f.hydra.override_path(
        &format!("/build/{id}"),
        Override::delayed(Duration::from_secs(30)),
    );
    let start = Instant::now();
    refused(&f, &["--http-timeout", "2s"]);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn huge_body_is_refused() {
    let f = Fixture::new();
    let (_, id) = f.release("1");
    // A valid build, padded to 64 MiB: only a size limit refuses it.
    let build = f.hydra.build_json(id);
    f.hydra.override_path(
        &format!("/build/{id}"),
        Override::huge_json(&build, 64 << 20),
    );
    refused(&f, &[]);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_same_build_unpadded_is_deployed() {
    // The counterpart of `huge_body_is_refused`: the override mechanism itself is not what
    // makes hail refuse.
    let f = Fixture::new();
    let (p, id) = f.release("1");
    let build = f.hydra.build_json(id);
    f.hydra
        .override_path(&format!("/build/{id}"), Override::huge_json(&build, 4096));
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));
}

/// Runs the service with `--poll-period 2s` and checks, over 8 s from its first poll, that its
/// failing polls or deploys keep to one poll per period at most (plus the first; a busy loop
/// would make hundreds) and that it stays up.
fn backs_off(f: &Fixture) -> Running {
    let mut hail = f.hail.spawn(&["--poll-period", "2s"]);
    assert!(wait_until(RUN, || f.latest_requests() >= 1));
    std::thread::sleep(Duration::from_secs(8));
    let n = f.latest_requests();
    assert!(
        n <= 6,
        "{n} polls in 8 s with --poll-period 2s:\n{}",
        hail.output()
    );
    assert_running(&mut hail);
    hail
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn failing_polls_back_off() {
    let f = Fixture::new();
    f.hydra.override_path(
        &f.hydra.default_latest_path(),
        Override::respond(500, "text/plain", "down"),
    );
    let hail = backs_off(&f);
    f.assert_untouched(&hail.output());

    // Recovery: once Hydra answers again, the build is deployed.
    f.hydra.clear_override(&f.hydra.default_latest_path());
    f.release("1");
    assert_eq!(f.wait_activations(1, RUN).len(), 1, "{}", hail.output());
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn failing_deploys_back_off() {
    let f = Fixture::new();
    let p = f.cache.publish_unsigned(&f.spec("1"));
    f.make_latest(&p);
    let _hail = backs_off(&f);
    // The deploy was really tried (and refused by Nix), not skipped.
    assert!(
        wait_until(RUN, || f
            .cache
            .requests()
            .iter()
            .any(|r| r.ends_with(".narinfo"))),
        "{:?}",
        f.cache.requests()
    );
    assert_eq!(f.activations(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn failing_polls_back_off_as_the_agent_runs() {
    let f = Fixture::new();
    let latest = f.hydra.default_latest_path();
    f.hydra
        .override_path(&latest, Override::respond(500, "text/plain", "down"));
    let mut running = f.hail.spawn(&["--poll-period", "1s"]);
    assert!(
        wait_until(RUN, || f.hydra.requests_to(&latest).len() >= 5),
        "{}",
        running.output()
    );
    running.terminate(RUN);
    // Each wait at least doubles (1 s, 2 s, 4 s, 8 s; jitter only adds), where a fixed period
    // would poll every second.
    let at: Vec<Instant> = f.hydra.requests_to(&latest).iter().map(|r| r.at).collect();
    for (i, pair) in at.windows(2).take(4).enumerate() {
        let waited = pair[1] - pair[0];
        let least =
            std::time::Duration::from_millis(1000 << i) - std::time::Duration::from_millis(50);
        assert!(waited >= least, "wait {i}: {waited:?} < {least:?}");
    }
}
