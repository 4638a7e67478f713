//! `--gate evaluation`: only the job's build of an evaluation whose builds all succeeded is
//! deployed; newer evaluations with failed or unfinished builds are passed over, and said why;
//! the look-back ends at `--gate-depth`; a finished evaluation's builds are read once; bad
//! answers on the evaluation routes change nothing.

use hail_testkit::cache::Published;
use hail_testkit::hydra::{BuildSpec, DEFAULT_JOBSET, DEFAULT_PROJECT, Override};

use crate::fixture::{Fixture, RUN};

/// A store path of another job's build (never deployed, so it need not exist).
const OTHER: &str = "/nix/store/8w1kfj0bqdwy3a0ysqr03yx58hjx8r6q-other";

impl Fixture {
    /// A new evaluation holding `p` as the job's build and `others` builds of other jobs made
    /// from `other`; returns (evaluation, the job's build id).
    fn eval_with(&self, p: &Published, others: usize, other: &BuildSpec) -> (u64, u64) {
        let e = self.hydra.add_eval(DEFAULT_PROJECT, DEFAULT_JOBSET);
        let b = self
            .hydra
            .add_build(BuildSpec::succeeded(&p.out_path).in_evals(&[e]));
        self.hydra.add_other_builds(e, others, other);
        (e, b)
    }

    fn gated(&self, extra: &[&str]) -> hail_testkit::hail::Finished {
        let mut args = vec!["--gate", "evaluation"];
        args.extend_from_slice(extra);
        self.hail.oneshot(&args, RUN)
    }

    fn builds_reads(&self, eval: u64) -> usize {
        self.hydra
            .requests_to(&format!("/eval/{eval}/builds"))
            .len()
    }
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_failed_newest_evaluation_is_passed_over_for_the_last_green_one() {
    let f = Fixture::new();
    let (v1, v2) = (f.publish("1"), f.publish("2"));
    let (_, b1) = f.eval_with(&v1, 5, &BuildSpec::succeeded(OTHER));
    let (e2, _) = f.eval_with(&v2, 2, &BuildSpec::succeeded(OTHER));
    f.hydra
        .add_other_builds(e2, 1, &BuildSpec::failed(OTHER, 1));
    let r = f.gated(&[]);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert!(
        r.output.contains(&format!("deployed build {b1}")),
        "{}",
        r.output
    );
    assert!(
        r.output
            .contains(&format!("evaluation {e2}: 1 of 4 builds failed")),
        "{}",
        r.output
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn an_unfinished_newest_evaluation_is_passed_over_unread() {
    let f = Fixture::new();
    let (v1, v2) = (f.publish("1"), f.publish("2"));
    f.eval_with(&v1, 2, &BuildSpec::succeeded(OTHER));
    let (e2, _) = f.eval_with(&v2, 2, &BuildSpec::succeeded(OTHER));
    f.hydra.add_other_builds(e2, 1, &BuildSpec::queued(OTHER));
    let r = f.gated(&[]);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert!(
        r.output
            .contains(&format!("evaluation {e2} has unfinished builds")),
        "{}",
        r.output
    );
    assert_eq!(
        f.builds_reads(e2),
        0,
        "an unfinished evaluation's builds were read"
    );
}

/// The job's build running again in an evaluation Hydra had called finished (a build restarted
/// between `latest-eval` and the read of its builds): it is not deployed, and said why.
#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_running_build_of_a_finished_evaluation_is_not_deployed() {
    let f = Fixture::new();
    let (v1, v2) = (f.publish("1"), f.publish("2"));
    let (_, b1) = f.eval_with(&v1, 2, &BuildSpec::succeeded(OTHER));
    let e2 = f.hydra.add_eval(DEFAULT_PROJECT, DEFAULT_JOBSET);
    f.hydra
        .add_build(BuildSpec::running(&v2.out_path).in_evals(&[e2]));
    f.hydra
        .add_other_builds(e2, 2, &BuildSpec::succeeded(OTHER));
    let latest_eval = format!("/jobset/{DEFAULT_PROJECT}/{DEFAULT_JOBSET}/latest-eval");
    let at = format!("{}/eval/{e2}?name={DEFAULT_JOBSET}", f.hydra.url());
    f.hydra
        .override_path(&latest_eval, Override::redirect(&at).times(1));
    let r = f.gated(&[]);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert!(
        r.output.contains(&format!("deployed build {b1}")),
        "{}",
        r.output
    );
    assert!(
        r.output
            .contains(&format!("evaluation {e2}: 1 of 3 builds unfinished")),
        "{}",
        r.output
    );
    assert_eq!(f.builds_reads(e2), 1);
}

/// A renamed jobset: Hydra answers 301 on its evaluation routes too. Under the gate hail stops
/// there and names the new place (exit 5, nothing touched).
#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_renamed_jobset_is_reported_by_the_gate() {
    let f = Fixture::new();
    let v1 = f.publish("1");
    f.eval_with(&v1, 2, &BuildSpec::succeeded(OTHER));
    f.hydra
        .rename_jobset(DEFAULT_PROJECT, DEFAULT_JOBSET, "renamed");
    let r = f.gated(&[]);
    assert_eq!(r.code(), Some(5), "{}", r.output);
    f.assert_untouched(&r.output);
    assert!(
        r.output
            .contains(&format!("/jobset/{DEFAULT_PROJECT}/renamed/latest-eval\""))
            && r.output.contains("job URI under its new name"),
        "{}",
        r.output
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn all_green_deploys_the_newest_and_steady_polls_read_no_builds() {
    let f = Fixture::new();
    let (v1, v2) = (f.publish("1"), f.publish("2"));
    f.eval_with(&v1, 3, &BuildSpec::succeeded(OTHER));
    let (e2, b2) = f.eval_with(&v2, 3, &BuildSpec::succeeded(OTHER));
    let r = f.gated(&[]);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));
    assert!(
        r.output.contains(&format!("deployed build {b2}")),
        "{}",
        r.output
    );
    assert_eq!(f.builds_reads(e2), 1);

    // Nothing changed at Hydra: one small request, no evaluation read again.
    let before = f.hydra.requests().len();
    let r = f.gated(&[]);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    let asked: Vec<String> = f.hydra.requests()[before..]
        .iter()
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(
        asked,
        [format!(
            "/jobset/{DEFAULT_PROJECT}/{DEFAULT_JOBSET}/latest-eval"
        )]
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_look_back_ends_at_the_gate_depth() {
    let f = Fixture::new();
    let (v1, v2) = (f.publish("1"), f.publish("2"));
    f.eval_with(&v1, 1, &BuildSpec::succeeded(OTHER));
    let (e2, _) = f.eval_with(&v2, 1, &BuildSpec::succeeded(OTHER));
    f.hydra
        .add_other_builds(e2, 1, &BuildSpec::failed(OTHER, 2));
    let r = f.gated(&["--gate-depth", "1"]);
    assert_eq!(r.code(), Some(8), "{}", r.output);
    assert!(
        r.output.contains("no evaluation passes the gate"),
        "{}",
        r.output
    );
    f.assert_untouched(&r.output);
    let r = f.gated(&["--gate-depth", "2"]);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn bad_answers_on_the_evaluation_routes_change_nothing() {
    let f = Fixture::new();
    let v1 = f.publish("1");
    let (e1, _) = f.eval_with(&v1, 2, &BuildSpec::succeeded(OTHER));
    let builds = format!("/eval/{e1}/builds");
    let evals = format!("/jobset/{DEFAULT_PROJECT}/{DEFAULT_JOBSET}/evals");
    let cases = [
        (
            evals.as_str(),
            Override::respond(404, "application/json", r#"{"error": "gone"}"#),
            "404",
        ),
        (
            builds.as_str(),
            Override::respond(200, "text/html", "<html></html>"),
            "instead of JSON",
        ),
        (
            builds.as_str(),
            // Announced as larger than hail reads: refused before a byte of it is read.
            Override::streamed_json("[", &serde_json::json!({}), (600 << 20) / 3, "]", false),
            "larger than",
        ),
    ];
    for (path, o, says) in cases {
        f.hydra.override_path(path, o);
        let r = f.gated(&[]);
        assert_eq!(r.code(), Some(5), "{path}: {}", r.output);
        assert!(r.output.contains(says), "{path}: {}", r.output);
        f.assert_untouched(&r.output);
        f.hydra.clear_override(path);
    }
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_job_uri_without_a_jobset_cannot_be_gated() {
    let f = Fixture::new();
    let uri = format!("{}/not-a-job", f.hydra.url());
    let profile = f.hail.profile.to_str().unwrap().to_owned();
    let r = f.hail.run_bare(
        &[
            "--oneshot",
            "--profile",
            &profile,
            "--job-uri",
            &uri,
            "--gate",
            "evaluation",
        ],
        RUN,
    );
    assert_eq!(r.code(), Some(3), "{}", r.output);
    assert!(r.output.contains("--gate evaluation"), "{}", r.output);
}
