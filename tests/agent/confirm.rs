//! Contact confirmation (`--confirm-timeout`): after a deployment passed its checks, hail must
//! reach Hydra again in time, or the good build is put back. The test profile's activation waits
//! until the test has made Hydra stop answering, as a switch that cuts the host off would.

use std::path::{Path, PathBuf};

use hail_testkit::hydra::Override;

use crate::fixture::{Fixture, RUN, activated, wait_until};

/// Releases a build whose activation, the first time, waits for `go` after creating `started`.
fn release_waiting(
    f: &Fixture,
    version: &str,
) -> (hail_testkit::cache::Published, u64, PathBuf, PathBuf) {
    let started = f.tmp.path().join(format!("started-{version}"));
    let go = f.tmp.path().join(format!("go-{version}"));
    let spec = f.spec(version).extra(&format!(
        "touch {0}; while [ ! -e {1} ]; do sleep 0.05; done",
        started.display(),
        go.display()
    ));
    let (p, id) = f.release_spec(&spec);
    (p, id, started, go)
}

/// Once the activation runs, Hydra stops answering; then the activation goes on.
fn cut_contact_during_activation(f: &Fixture, started: &Path, go: &Path) {
    assert!(wait_until(RUN, || started.exists()));
    f.hydra.override_path(
        &f.hydra.default_latest_path(),
        Override::respond(502, "text/html", "<html>Bad Gateway</html>"),
    );
    std::fs::write(go, "").unwrap();
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_deployment_that_cuts_contact_with_hydra_is_rolled_back() {
    let f = Fixture::new();
    let (v1, b1) = f.release("1");
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(0));
    let (_, b2, started, go) = release_waiting(&f, "2");
    let events = f.tmp.path().join("events");
    let hook = format!("/bin/sh -c 'echo $HAIL_EVENT >> {}'", events.display());
    let mut running = f.hail.spawn(&[
        "--oneshot",
        "--confirm-timeout",
        "2s",
        "--on-failure",
        &hook,
    ]);
    cut_contact_during_activation(&f, &started, &go);
    let status = running.wait_timeout(RUN).expect("hail exits");
    let out = running.output();
    assert_eq!(status.code(), Some(7), "{out}");
    assert!(
        out.contains("contact with Hydra was lost after the switch")
            && out.contains("still no contact with Hydra after the rollback"),
        "{out}"
    );
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert_eq!(f.activations().last(), Some(&activated("1", &v1)));
    assert_eq!(std::fs::read_to_string(&events).unwrap(), "contact-lost\n");
    f.hydra.clear_override(&f.hydra.default_latest_path());
    let r = f.hail.run_bare(
        &[
            "status",
            "--profile",
            f.hail.profile.to_str().unwrap(),
            "--json",
        ],
        RUN,
    );
    let s: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    assert_eq!(s["deployed"]["build_id"], b1, "{s}");
    assert_eq!(s["known_bad"][0]["build_id"], b2, "{s}");
    let reason = s["known_bad"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("contact with Hydra lost after the switch"),
        "{s}"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn without_a_confirm_timeout_such_a_build_stays() {
    let f = Fixture::new();
    f.release("1");
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(0));
    let (v2, _, started, go) = release_waiting(&f, "2");
    let mut running = f.hail.spawn(&["--oneshot"]);
    cut_contact_during_activation(&f, &started, &go);
    let status = running.wait_timeout(RUN).expect("hail exits");
    assert_eq!(status.code(), Some(0), "{}", running.output());
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn stopped_while_confirming_the_next_start_confirms_again() {
    let f = Fixture::new();
    f.release("1");
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(0));
    let (v2, b2, started, go) = release_waiting(&f, "2");
    let mut running = f
        .hail
        .spawn(&["--poll-period", "1h", "--confirm-timeout", "1h"]);
    cut_contact_during_activation(&f, &started, &go);
    assert!(
        running.wait_for_output("no contact with Hydra yet", RUN),
        "{}",
        running.output()
    );
    running.terminate(RUN).expect("hail stops");
    assert!(
        running
            .output()
            .contains("contact with Hydra not confirmed yet"),
        "{}",
        running.output()
    );
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));
    // Hydra back: the next start sees the deployment through, contact confirmed.
    f.hydra.clear_override(&f.hydra.default_latest_path());
    let r = f.hail.oneshot(&["--confirm-timeout", "30s"], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert!(
        r.output
            .contains("contact with Hydra confirmed after the switch")
            && r.output.contains(&format!("deployed build {b2}")),
        "{}",
        r.output
    );
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));
}
