//! What hail keeps in its state directory and shows: known-bad builds across restarts, a corrupt
//! or newer state file, a manual rollback respected, pause/resume/retry (also racing a
//! deployment), `hail status` and its JSON, the metrics file (read with Prometheus' own parser),
//! and old generations pruned.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::fixture::{Fixture, RUN, activated, wait_until};
use hail_testkit::hail::Running;
use hail_testkit::prometheus;

impl Fixture {
    /// The default state directory: beside the profile.
    pub(crate) fn state_dir(&self) -> PathBuf {
        let mut s = self.hail.profile.clone().into_os_string();
        s.push(".hail-state");
        PathBuf::from(s)
    }

    fn state_json(&self) -> Value {
        let text = std::fs::read(self.state_dir().join("state.json")).expect("state.json");
        serde_json::from_slice(&text).expect("state.json is JSON")
    }

    /// Runs `hail COMMAND --state-dir <this agent's> ARGS…`; returns its output.
    fn control(&self, command: &str, args: &[&str]) -> String {
        let dir = self.state_dir();
        let mut all = vec![command, "--state-dir", dir.to_str().unwrap()];
        all.extend_from_slice(args);
        let r = self.hail.run_bare(&all, RUN);
        assert_eq!(r.code(), Some(0), "hail {all:?}: {}", r.output);
        r.output
    }

    fn status_json(&self) -> Value {
        let out = self.control("status", &["--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `nix-env` on the test profile (what an operator types).
    pub(crate) fn nix_env(&self, args: &[&str]) {
        let status = std::process::Command::new("nix-env")
            .arg("--profile")
            .arg(&self.hail.profile)
            .args(args)
            .status()
            .expect("nix-env runs");
        assert!(status.success(), "nix-env {args:?}");
    }
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_restart_does_not_deploy_a_build_whose_activation_failed() {
    let f = Fixture::new();
    let v1 = f.deployed("1");
    let (_, b2) = f.release_spec(&f.spec("2").exit_code(1));
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    let generations = f.generations();
    let activations = f.activations();

    // A new process: the build is known-bad, nothing is touched.
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert!(r.output.contains(&format!("build {b2}")), "{}", r.output);
    assert_eq!(f.generations(), generations);
    assert_eq!(f.activations(), activations, "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    let bad = &f.state_json()["known_bad"];
    assert_eq!(bad[0]["build_id"], b2, "{bad}");
    assert!(
        bad[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("activation failed")
    );

    // A newer build is deployed.
    let (v3, _) = f.release("3");
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v3.out_path.as_str()));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_corrupt_or_newer_state_file_is_moved_aside_and_deployment_goes_on() {
    let f = Fixture::new();
    let v1 = f.deployed("1");
    let file = f.state_dir().join("state.json");
    for (n, text) in ["{\"version\": 1, \"known_bad\": 7", "{\"version\": 99}"]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&file, text).unwrap();
        let (p, _) = f.release(&format!("{}", n + 2));
        let r = f.hail.oneshot(&[], RUN);
        assert_eq!(r.code(), Some(0), "{}", r.output);
        assert!(r.output.contains("moved aside"), "{}", r.output);
        assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));
        assert_eq!(f.state_json()["version"], 1);
        let aside: Vec<String> = std::fs::read_dir(f.state_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("state.json.corrupt-"))
            .collect();
        assert!(
            aside
                .iter()
                .any(|a| std::fs::read_to_string(f.state_dir().join(a)).unwrap() == text),
            "{aside:?}"
        );
        // Moved aside once: the next run reads its fresh file.
        let r = f.hail.oneshot(&[], RUN);
        assert_eq!(r.code(), Some(0), "{}", r.output);
        assert!(!r.output.contains("moved aside"), "{}", r.output);
    }
    assert_ne!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_manual_rollback_is_kept_and_a_newer_build_is_then_deployed() {
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    f.assert_activations(&[activated("1", &v1)], &running);
    let (v2, b2) = f.release("2");
    running.signal(libc::SIGHUP);
    f.assert_activations(&[activated("1", &v1), activated("2", &v2)], &running);

    f.nix_env(&["--rollback"]);
    running.signal(libc::SIGHUP);
    assert!(
        running.wait_for_output("by hand", RUN),
        "{}",
        running.output()
    );
    wait_for_state(&f, &running, |s| s["known_bad"][0]["build_id"] == b2);
    // Kept: no switch back, no activation.
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert_eq!(f.activations().len(), 2);
    let bad = &f.state_json()["known_bad"];
    assert_eq!(bad[0]["build_id"], b2, "{bad}");
    assert_eq!(bad[0]["reason"], "rolled back by hand");
    running.terminate(Duration::from_secs(30));

    // Also after a restart; then a newer build goes out.
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    let (v3, _) = f.release("3");
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v3.out_path.as_str()));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn pause_and_resume_while_running() {
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    f.assert_activations(&[activated("1", &v1)], &running);

    let said = f.control("pause", &["--reason", "maintenance window"]);
    assert!(said.contains("took the request"), "{said}");
    // The agent says what it was asked, as people write it (not as Rust debugs it).
    assert!(
        running.wait_for_output(
            "operator's request: pause (reason: maintenance window)",
            RUN
        ),
        "{}",
        running.output()
    );
    let status = f.status_json();
    assert_eq!(status["paused"], true, "{status:#}");
    assert_eq!(status["pause_reason"], "maintenance window");

    // Paused: it polls and says what it would deploy, and changes nothing.
    let (v2, b2) = f.release("2");
    running.signal(libc::SIGHUP);
    wait_for_state(&f, &running, |s| s["latest"]["build_id"] == b2);
    assert!(running.wait_for_output(&format!("paused: build {b2}"), RUN));
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert_eq!(f.activations(), [activated("1", &v1)]);
    // A pause survives a restart.
    running.terminate(Duration::from_secs(30));
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(8), "{}", r.output);
    assert_eq!(f.activations(), [activated("1", &v1)]);

    // Resume: the agent polls at once and deploys (after its start-up activation).
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    assert!(running.wait_for_output(&format!("paused: build {b2}"), RUN));
    let said = f.control("resume", &[]);
    assert!(said.contains("took the request"), "{said}");
    assert!(running.wait_for_output("operator's request: resume", RUN));
    let v1 = activated("1", &v1);
    f.assert_activations(&[v1.clone(), v1, activated("2", &v2)], &running);
    assert_eq!(f.status_json()["paused"], false);
    running.terminate(Duration::from_secs(30));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn retry_forgets_a_known_bad_build() {
    let f = Fixture::new();
    f.deployed("1");
    let (v2, b2) = f.release_spec(&f.spec("2").exit_code(1));
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(7));
    assert_eq!(f.state_json()["known_bad"].as_array().unwrap().len(), 1);
    // No agent runs: the request waits for the next one.
    let said = f.control("retry", &["--build", &b2.to_string()]);
    assert!(said.contains("not running"), "{said}");
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    let asked = format!("operator's request: retry (build {b2})");
    assert!(r.output.contains(&asked), "{}", r.output);
    let tries = f
        .activations()
        .iter()
        .filter(|a| **a == activated("2", &v2))
        .count();
    assert_eq!(tries, 2, "{}", r.output);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn status_of_a_never_started_a_running_and_a_stopped_agent() {
    let f = Fixture::new();
    let never = f.status_json();
    assert_eq!(never["started"], false, "{never:#}");
    assert_eq!(never["running"], false);
    assert!(f.control("status", &[]).contains("never ran"));

    let (v1, b1) = f.release("1");
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    wait_for_state(&f, &running, |s| s["deployed"]["build_id"] == b1);
    let s = f.status_json();
    assert_eq!(s["running"], true, "{s:#}");
    assert_eq!(s["pid"], running.id());
    assert_eq!(s["deployed"]["build_id"], b1);
    assert_eq!(s["deployed"]["store_path"], v1.out_path.as_str());
    assert_eq!(s["deployed"]["generation"], 1);
    assert_eq!(s["latest"]["build_id"], b1);
    assert_eq!(s["last_poll"]["ok"], true);
    assert!(
        s["last_poll"]["time"].as_str().unwrap().ends_with('Z'),
        "{s:#}"
    );
    assert!(s["next_poll"].is_string(), "{s:#}");
    assert_eq!(s["history"][0]["result"], "deployed");
    assert_eq!(s["known_bad"], serde_json::json!([]));
    let text = f.control("status", &[]);
    assert!(text.contains(&format!("build {b1} (")), "{text}");
    assert!(text.contains("running (pid"), "{text}");

    running.terminate(Duration::from_secs(30));
    let s = f.status_json();
    assert_eq!(s["running"], false, "{s:#}");
    assert_eq!(s["deployed"]["build_id"], b1);
    // Found by the profile too.
    let profile = f.hail.profile.to_str().unwrap();
    let r = f
        .hail
        .run_bare(&["status", "--profile", profile, "--json"], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert!(
        r.output.contains(&format!("\"build_id\": {b1}")),
        "{}",
        r.output
    );
}

#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_prometheus_parser),
    ignore = "needs root, Nix and python3-prometheus-client (HAIL_TEST_SKIP_MISSING=1)"
)]
fn metrics_through_a_deployment_a_failed_activation_and_a_failed_poll() {
    let f = Fixture::new();
    hail_testkit::prereq::require(&hail_testkit::prereq::PROMETHEUS_PARSER);
    let file = f.tmp.path().join("hail.prom");
    let metrics_file = file.to_str().unwrap();
    let read = || prometheus::parse(&std::fs::read_to_string(&file).expect("metrics file"));
    let value = |s: &[prometheus::Sample], name, labels: &[(&str, &str)]| {
        prometheus::value(s, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}: {s:?}"))
    };

    let (_, b1) = f.release("1");
    let r = f.hail.oneshot(&["--metrics-file", metrics_file], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    let m = read();
    let profile = f.hail.profile.to_str().unwrap();
    assert_eq!(
        value(
            &m,
            "hail_build_info",
            &[("job", &f.hail.job_uri), ("profile", profile)]
        ),
        1.0
    );
    assert_eq!(value(&m, "hail_deployed_build_id", &[]), b1 as f64);
    assert_eq!(value(&m, "hail_deployed_generation", &[]), 1.0);
    assert_eq!(value(&m, "hail_latest_build_id", &[]), b1 as f64);
    assert_eq!(
        value(&m, "hail_deployments_total", &[("result", "deployed")]),
        1.0
    );
    assert_eq!(value(&m, "hail_polls_total", &[("result", "ok")]), 1.0);
    assert!(value(&m, "hail_last_deployment_success_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(value(&m, "hail_known_bad_builds", &[]), 0.0);
    assert_eq!(value(&m, "hail_paused", &[]), 0.0);
    let kind = |name: &str| m.iter().find(|s| s.family == name).map(|s| s.kind.clone());
    assert_eq!(kind("hail_deployments").as_deref(), Some("counter"));

    let (_, b2) = f.release_spec(&f.spec("2").exit_code(1));
    let r = f.hail.oneshot(&["--metrics-file", metrics_file], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    let m = read();
    assert_eq!(value(&m, "hail_deployed_build_id", &[]), b1 as f64);
    assert_eq!(value(&m, "hail_latest_build_id", &[]), b2 as f64);
    let failed = [("result", "activation-failed")];
    assert_eq!(value(&m, "hail_deployments_total", &failed), 1.0);
    assert_eq!(value(&m, "hail_known_bad_builds", &[]), 1.0);
    assert_eq!(value(&m, "hail_consecutive_failures", &[]), 1.0);

    f.hydra.override_path(
        &f.hydra.default_latest_path(),
        hail_testkit::hydra::Override::respond(500, "text/plain", "down"),
    );
    let r = f.hail.oneshot(&["--metrics-file", metrics_file], RUN);
    assert_eq!(r.code(), Some(5), "{}", r.output);
    let m = read();
    assert_eq!(value(&m, "hail_polls_total", &[("result", "failed")]), 1.0);
    assert_eq!(value(&m, "hail_polls_total", &[("result", "ok")]), 2.0);
    assert_eq!(value(&m, "hail_consecutive_failures", &[]), 2.0);
    assert!(
        value(&m, "hail_last_poll_timestamp_seconds", &[])
            > value(&m, "hail_last_poll_success_timestamp_seconds", &[])
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn control_commands_racing_a_deployment_lose_nothing() {
    let f = Fixture::new();
    f.deployed("1");
    f.release_spec(&f.spec("2").exit_code(1));
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(7));

    // Build 3's activation holds until the test lets it go.
    let hold = f.tmp.path().join("hold");
    let started = f.tmp.path().join("started");
    std::fs::write(&hold, "").unwrap();
    let wait = format!(
        "touch '{}'; while [ -e '{}' ]; do sleep 0.05; done",
        started.display(),
        hold.display()
    );
    let (_, b3) = f.release_spec(&f.spec("3").extra(&wait));
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    assert!(wait_until(RUN, || started.exists()), "{}", running.output());

    let dir = f.state_dir();
    let dir = dir.to_str().unwrap();
    let pause = f
        .hail
        .bare_command(&["pause", "--state-dir", dir, "--reason", "racing"]);
    let retry = f.hail.bare_command(&["retry", "--state-dir", dir]);
    let (pause, retry) = (Running::start(pause), Running::start(retry));
    for c in [pause, retry] {
        let r = c.finish_within(RUN);
        assert_eq!(r.code(), Some(0), "{}", r.output);
    }
    std::fs::remove_file(&hold).unwrap();
    wait_for_state(&f, &running, |s| s["deployed"]["build_id"] == b3);
    let s = f.state_json();
    assert_eq!(s["paused"], true, "{s:#}");
    assert_eq!(s["pause_reason"], "racing");
    assert_eq!(s["known_bad"], serde_json::json!([]), "{s:#}");
    assert_eq!(s["history"][0]["build_id"], b3);
    running.terminate(Duration::from_secs(30));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn old_generations_are_pruned_and_a_rollback_still_works() {
    let f = Fixture::new();
    let mut last = Vec::new();
    for v in 1..=12 {
        let (p, _) = f.release(&v.to_string());
        let r = f.hail.oneshot(&["--keep-generations", "3"], RUN);
        assert_eq!(r.code(), Some(0), "{}", r.output);
        if v == 4 {
            let said = format!("deleted generation 1 of {}", f.hail.profile.display());
            assert!(r.output.contains(&said), "{}", r.output);
        }
        last.push(p);
    }
    let gens = f.generations();
    assert_eq!(gens.len(), 3, "{gens:?}");
    let name = f.hail.profile.file_name().unwrap().to_str().unwrap();
    assert!(gens.contains(&format!("{name}-12-link")), "{gens:?}");
    f.nix_env(&["--rollback"]);
    assert_eq!(
        f.profile_target().as_deref(),
        Some(last[10].out_path.as_str())
    );
}

/// Waits until the state file satisfies `cond`.
fn wait_for_state(f: &Fixture, running: &Running, cond: impl Fn(&Value) -> bool) {
    let file = f.state_dir().join("state.json");
    let ok = wait_until(RUN, || {
        std::fs::read(&file)
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
            .is_some_and(|s: Value| cond(&s))
    });
    assert!(
        ok,
        "state never got there: {:?}\n{}",
        std::fs::read_to_string(&file),
        running.output()
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_metrics_files_directory_is_created_when_missing() {
    let f = Fixture::new();
    // As node_exporter's textfile directory on a fresh host: nothing has made it yet.
    let dir = f.tmp.path().join("prometheus-node-exporter-text");
    let file = dir.join("hail-web.prom");
    f.release("1");
    let r = f
        .hail
        .oneshot(&["--metrics-file", file.to_str().unwrap()], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}: {}", r.output));
    assert!(text.contains("hail_deployed_build_id"), "{text}");
    assert!(
        r.output.contains(&format!(
            "created {}, the directory of the metrics file",
            dir.display()
        )),
        "{}",
        r.output
    );
    // What cannot be created is said, and the deployment still counts.
    let blocked = f.tmp.path().join("a-file");
    std::fs::write(&blocked, "").unwrap();
    let r = f.hail.oneshot(
        &[
            "--metrics-file",
            blocked.join("sub/hail.prom").to_str().unwrap(),
        ],
        RUN,
    );
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert!(
        r.output.contains(&format!(
            "metrics not written: cannot create the directory {}/sub",
            blocked.display()
        )),
        "{}",
        r.output
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_request_for_an_instance_that_does_not_exist_fails_naming_those_that_do() {
    let f = Fixture::new();
    let name = format!("no-such-instance-{}", std::process::id());
    let r = f.hail.run_bare(&["pause", &name], RUN);
    assert_eq!(r.code(), Some(3), "{}", r.output);
    assert!(
        r.output
            .contains(&format!("no instance hail@{name} on this host"))
            && r.output.contains("instances here: "),
        "{}",
        r.output
    );
    // Nothing was made for it.
    assert!(!std::path::Path::new("/var/lib/hail").join(&name).exists());
}
