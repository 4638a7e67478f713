//! Operators' hooks (`--on-success`, `--on-failure`): run once after each deployment's outcome
//! with the deployment's `HAIL_*` variables; a failing, hanging or missing hook changes neither the
//! outcome nor the exit code.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::fixture::{Fixture, RUN, wait_until};

/// A hook that appends its `HAIL_*` variables to `file`, one run per paragraph.
fn recording_hook(file: &Path) -> String {
    format!(
        "/bin/sh -c 'env | grep ^HAIL_ | sort >> {0}; echo >> {0}; echo hook ran'",
        file.display()
    )
}

/// The runs `recording_hook` recorded: each a map of its variables.
fn runs(file: &Path) -> Vec<BTreeMap<String, String>> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn each_outcome_runs_its_hook_with_the_deployments_variables() {
    let f = Fixture::new();
    let success = f.tmp.path().join("success");
    let failure = f.tmp.path().join("failure");
    let (on_success, on_failure) = (recording_hook(&success), recording_hook(&failure));
    let hooks = [
        "--on-success",
        on_success.as_str(),
        "--on-failure",
        on_failure.as_str(),
        "--health-interval",
        "100ms",
        "--health-timeout",
        "5s",
    ];
    let profile = f.hail.profile.display().to_string();

    let (v1, b1) = f.release("1");
    let r = f.hail.oneshot(&hooks, RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert!(r.output.contains("hook: hook ran"), "{}", r.output);
    let run = &runs(&success)[0];
    for (var, value) in [
        ("HAIL_EVENT", "deployed".to_owned()),
        ("HAIL_BUILD_ID", b1.to_string()),
        ("HAIL_STORE_PATH", v1.out_path.clone()),
        ("HAIL_GENERATION", "1".to_owned()),
        ("HAIL_PREVIOUS_BUILD_ID", String::new()),
        ("HAIL_ERROR", String::new()),
        ("HAIL_JOB_URI", f.hail.job_uri.clone()),
        ("HAIL_PROFILE", profile.clone()),
    ] {
        assert_eq!(run.get(var), Some(&value), "{var}: {run:?}");
    }

    let (_, b2) = f.release_spec(&f.spec("2").exit_code(1));
    assert_eq!(f.hail.oneshot(&hooks, RUN).code(), Some(7));
    let (_, b3) = f.release_spec(&f.spec("3").health_check("echo still starting; exit 1"));
    assert_eq!(f.hail.oneshot(&hooks, RUN).code(), Some(7));
    let unsigned = f.cache.publish_unsigned(&f.spec("4"));
    let b4 = f.make_latest(&unsigned);
    assert_eq!(f.hail.oneshot(&hooks, RUN).code(), Some(6));

    let failed = runs(&failure);
    let seen: Vec<(&str, String, &str)> = failed
        .iter()
        .map(|r| {
            (
                r["HAIL_EVENT"].as_str(),
                r["HAIL_BUILD_ID"].clone(),
                r["HAIL_PREVIOUS_BUILD_ID"].as_str(),
            )
        })
        .collect();
    let b1s = b1.to_string();
    assert_eq!(
        seen,
        [
            ("activation-failed", b2.to_string(), b1s.as_str()),
            ("health-check-failed", b3.to_string(), b1s.as_str()),
            ("realise-failed", b4.to_string(), b1s.as_str()),
        ]
    );
    for r in &failed {
        // After the rollback: the generation the profile is at, build 1's.
        assert_eq!(r["HAIL_GENERATION"], "1", "{r:?}");
        assert!(
            !r["HAIL_ERROR"].is_empty() && !r["HAIL_ERROR"].contains('\n'),
            "{r:?}"
        );
    }
    assert!(
        failed[1]["HAIL_ERROR"].contains("still starting"),
        "{:?}",
        failed[1]
    );
    // No success hook for the failures, no failure hook for a poll with nothing to do.
    assert_eq!(runs(&success).len(), 1);
    assert_eq!(f.hail.oneshot(&hooks, RUN).code(), Some(6));
    assert_eq!(
        runs(&failure).len(),
        4,
        "the unsigned build is tried, and fails, again"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_failing_hanging_or_missing_hook_changes_nothing() {
    let f = Fixture::new();
    let child = f.tmp.path().join("hook-child.pid");
    let hanging = format!(
        "/bin/sh -c 'sleep 3600 & echo $! > {}; wait'",
        child.display()
    );
    let cases = [
        (
            "failing",
            "/bin/sh -c 'echo no chat server; exit 3'".to_owned(),
        ),
        ("hanging", hanging),
        ("missing", "/nonexistent/notify-chat".to_owned()),
    ];
    for (i, (what, hook)) in cases.into_iter().enumerate() {
        let (v, _) = f.release(&(i + 1).to_string());
        let r = f
            .hail
            .oneshot(&["--on-success", &hook, "--hook-timeout", "1s"], RUN);
        assert_eq!(r.code(), Some(0), "{what}: {}", r.output);
        assert_eq!(
            f.profile_target().as_deref(),
            Some(v.out_path.as_str()),
            "{what}"
        );
        assert!(
            r.output.contains("--on-success hook for deployed failed")
                && r.output.contains("the deployment's outcome stands"),
            "{what}: {}",
            r.output
        );
    }
    // The hanging hook's process group was killed at its timeout.
    let pid: i32 = std::fs::read_to_string(&child)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || {
            // SAFETY: kill with signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            !alive
        }),
        "the hook's child {pid} survived"
    );
    // Unbalanced quotes are a configuration error at start, named.
    let r = f.hail.oneshot(&["--on-failure", "/bin/sh -c 'oops"], RUN);
    assert_eq!(r.code(), Some(3), "{}", r.output);
    assert!(r.output.contains("--on-failure"), "{}", r.output);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_path_that_is_not_a_system_is_a_switch_failure_for_the_hook() {
    let f = Fixture::new();
    let failure = f.tmp.path().join("failure");
    let hook = recording_hook(&failure);
    let (p, b) = f.release("1");
    let r = f.hail.oneshot(&["--system", "--on-failure", &hook], RUN);
    assert_eq!(r.code(), Some(6), "{}", r.output);
    let run = &runs(&failure)[0];
    assert_eq!(run["HAIL_EVENT"], "switch-failed", "{run:?}");
    assert_eq!(run["HAIL_BUILD_ID"], b.to_string(), "{run:?}");
    assert_eq!(run["HAIL_STORE_PATH"], p.out_path, "{run:?}");
    assert!(
        run["HAIL_ERROR"].contains("is not a NixOS system"),
        "{run:?}"
    );
}
