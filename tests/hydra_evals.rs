//! hail's Hydra client for evaluations against the Hydra-compatible test server: what it asks
//! (and how little), what it makes of the answers, and how it refuses hostile ones.

use std::time::Duration;

use hail::hydra::{EvalVerdict, HydraClient, HydraError, Job, MAX_STREAMED_BODY};
use hail::netrc::Credentials;
use hail_testkit::hydra::{BuildSpec, HydraServer, Override};
use serde_json::json;

const WEB: &str = "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-web";
const OTHER: &str = "/nix/store/8w1kfj0bqdwy3a0ysqr03yx58hjx8r6q-other";

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

struct Rig {
    hydra: HydraServer,
    job: Job,
    client: HydraClient,
}

impl Rig {
    fn new() -> Rig {
        // Long enough for a large answer parsed by a debug build on a busy machine: the tests
        // check what is asked and answered, not how fast.
        Rig::with(None, Duration::from_secs(600))
    }

    fn with(credentials: Option<Credentials>, timeout: Duration) -> Rig {
        // As the agent does before it builds its client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let hydra = HydraServer::start();
        let job = Job::parse(&hydra.default_job_uri()).unwrap();
        let client = HydraClient::new(&job, credentials, timeout).unwrap();
        Rig { hydra, job, client }
    }

    /// An evaluation holding the job's build and `others` successful builds of other jobs.
    fn eval(&self, others: usize) -> (u64, u64) {
        let e = self.hydra.add_eval("hail", "test");
        let b = self
            .hydra
            .add_build(BuildSpec::succeeded(WEB).in_evals(&[e]));
        self.hydra
            .add_other_builds(e, others, &BuildSpec::succeeded(OTHER));
        (e, b)
    }

    fn latest_finished(&self) -> Result<Option<u64>, HydraError> {
        block_on(self.client.latest_finished_eval(&self.job))
    }

    fn recent(&self, depth: usize) -> Result<Vec<u64>, HydraError> {
        block_on(self.client.recent_evals(&self.job, depth))
    }

    fn verdict(&self, eval: u64) -> Result<EvalVerdict, HydraError> {
        block_on(self.client.eval_verdict(&self.job, eval))
    }
}

#[test]
fn latest_finished_eval_reads_the_redirect_without_following_it() {
    let r = Rig::new();
    assert_eq!(r.latest_finished().unwrap(), None);
    let (done, _) = r.eval(3);
    let running = r.hydra.add_eval("hail", "test");
    let q = r
        .hydra
        .add_build(BuildSpec::queued(WEB).in_evals(&[running]));
    assert_eq!(r.latest_finished().unwrap(), Some(done));
    r.hydra.finish(q, 1);
    assert_eq!(r.latest_finished().unwrap(), Some(running));
    // One request a time, and the evaluation itself was never fetched.
    let paths: Vec<String> = r
        .hydra
        .requests()
        .iter()
        .map(|q| q.target.clone())
        .collect();
    assert!(
        paths.iter().all(|p| p == "/jobset/hail/test/latest-eval"),
        "{paths:?}"
    );
    assert_eq!(paths.len(), 3);
}

#[test]
fn latest_finished_eval_refuses_what_is_not_an_evaluation() {
    let r = Rig::new();
    let path = "/jobset/hail/test/latest-eval";
    // Another 404 than "No evaluation found." is an error, not "none yet".
    let job = Job::parse(&r.hydra.job_uri("hail", "gone", "profile")).unwrap();
    let err = block_on(r.client.latest_finished_eval(&job)).unwrap_err();
    assert!(
        err.to_string()
            .contains("404 Not Found for http://127.0.0.1")
            && err.to_string().contains("Jobset ‘gone’ doesn't exist."),
        "{err}"
    );
    r.hydra
        .override_path(path, Override::redirect("http://127.0.0.1:1/build/5"));
    let err = r.latest_finished().unwrap_err();
    assert!(matches!(err, HydraError::BadRedirect { .. }), "{err}");
    assert!(err.to_string().contains("/build/5"), "{err}");
    r.hydra
        .override_path(path, Override::respond(200, "application/json", "{}"));
    let err = r.latest_finished().unwrap_err();
    assert!(
        err.to_string()
            .contains("is not a redirect to an evaluation"),
        "{err}"
    );
    r.hydra
        .override_path(path, Override::respond(200, "text/html", "<html>"));
    assert!(matches!(
        r.latest_finished().unwrap_err(),
        HydraError::NotJson { .. }
    ));
}

/// A renamed jobset: Hydra answers 301 to the same route under the new name. Its builds carry
/// the new name, so the client says so (and where to) rather than follow it.
#[test]
fn a_renamed_jobsets_301_is_reported_with_the_new_name() {
    let r = Rig::new();
    r.eval(2);
    r.hydra.rename_jobset("hail", "test", "renamed");
    let err = r.latest_finished().unwrap_err();
    assert!(matches!(err, HydraError::Moved { .. }), "{err}");
    let new = format!("{}/jobset/hail/renamed/latest-eval", r.hydra.url());
    assert!(
        err.to_string().contains(&format!("{new:?}"))
            && err.to_string().contains("job URI under its new name"),
        "{err}"
    );
}

#[test]
fn recent_evals_pages_only_as_far_as_needed() {
    let r = Rig::new();
    assert_eq!(r.recent(10).unwrap(), Vec::<u64>::new());
    let ids: Vec<u64> = (0..45).map(|_| r.eval(0).0).collect();
    let newest: Vec<u64> = ids.iter().rev().copied().collect();
    let evals = "/jobset/hail/test/evals";
    let asked = |r: &Rig| r.hydra.requests_to(evals).len();
    let before = asked(&r);
    assert_eq!(r.recent(10).unwrap(), newest[..10]);
    assert_eq!(asked(&r) - before, 1);
    assert_eq!(r.recent(25).unwrap(), newest[..25]);
    assert_eq!(asked(&r) - before, 3);
    assert_eq!(r.recent(100).unwrap(), newest);
    assert_eq!(asked(&r) - before, 6);
    assert_eq!(r.recent(0).unwrap(), Vec::<u64>::new());
    assert_eq!(asked(&r) - before, 6);
    let pages: Vec<String> = r
        .hydra
        .requests_to(evals)
        .iter()
        .map(|q| q.target.clone())
        .collect();
    assert!(pages.contains(&format!("{evals}?page=3")), "{pages:?}");

    // A page that does not parse is an error naming it.
    r.hydra
        .override_path(evals, Override::respond(200, "application/json", "[]"));
    let err = r.recent(5).unwrap_err();
    assert!(
        err.to_string().contains("is not a page of evaluations"),
        "{err}"
    );
}

#[test]
fn a_verdict_counts_builds_and_finds_the_jobs() {
    let r = Rig::new();
    let (e, web) = r.eval(200);
    let failed = r.hydra.add_other_builds(e, 3, &BuildSpec::failed(OTHER, 1));
    let queued = r.hydra.add_other_builds(e, 2, &BuildSpec::queued(OTHER));
    let v = r.verdict(e).unwrap();
    assert_eq!((v.eval, v.total, v.failed, v.unfinished), (e, 206, 3, 2));
    let b = v.job_build.as_ref().unwrap();
    assert_eq!((b.id, b.path.as_str()), (web, WEB));
    assert_eq!(
        v.refusal().unwrap().to_string(),
        format!("evaluation {e}: 3 of 206 builds failed, 2 unfinished")
    );
    for id in failed.iter().chain(&queued) {
        r.hydra.finish(*id, 0);
    }
    let v = r.verdict(e).unwrap();
    assert_eq!(v.passed().map(|b| b.id), Some(web));
    assert!(v.is_final());

    // One request each, its bytes known.
    let asked = r.hydra.requests_to(&format!("/eval/{e}/builds"));
    assert_eq!(asked.len(), 2);
    assert!(asked[1].response_bytes.unwrap() > 206 * 500);

    let (other, _) = {
        let e = r.hydra.add_eval("hail", "test");
        (
            e,
            r.hydra.add_other_builds(e, 2, &BuildSpec::succeeded(OTHER)),
        )
    };
    let v = r.verdict(other).unwrap();
    assert_eq!(
        v.refusal().unwrap().to_string(),
        format!("evaluation {other} has no build of job profile")
    );
}

#[test]
fn a_verdict_refuses_hostile_answers() {
    let r = Rig::with(
        Some(Credentials {
            login: "u".into(),
            password: "s3cret".into(),
        }),
        Duration::from_secs(10),
    );
    let (e, _) = r.eval(1);
    let path = format!("/eval/{e}/builds");
    let error = |r: &Rig| {
        let err = r.verdict(e).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(&format!("/eval/{e}/builds")), "{shown}");
        err
    };

    let err = r.verdict(999).unwrap_err();
    assert!(
        err.to_string().contains("Evaluation 999 doesn't exist."),
        "{err}"
    );
    r.hydra.override_path(
        &path,
        Override::respond(200, "text/html; charset=utf-8", "<html>"),
    );
    assert!(matches!(error(&r), HydraError::NotJson { .. }));
    r.hydra.override_path(
        &path,
        Override::respond(200, "application/json", "[{\"id\": 1,"),
    );
    let err = error(&r);
    assert!(err.to_string().contains("is not a list of builds"), "{err}");
    // Announced as larger than the bound: refused before reading a byte of it.
    r.hydra.override_path(
        &path,
        Override::streamed_json("[", &json!(1), MAX_STREAMED_BODY / 2 + 1, "]", false),
    );
    let err = error(&r);
    assert!(
        matches!(err, HydraError::TooLarge { limit, .. } if limit == MAX_STREAMED_BODY),
        "{err}"
    );
    r.hydra
        .override_path(&path, Override::redirect("ftp://127.0.0.1/x"));
    assert!(matches!(error(&r), HydraError::BadRedirect { .. }));

    // A redirect to another origin is followed without the credentials.
    let elsewhere = HydraServer::start();
    r.hydra.override_path(
        &path,
        Override::redirect(&format!("{}/eval/{e}/builds", elsewhere.url())),
    );
    let err = r.verdict(e).unwrap_err();
    assert!(err.to_string().contains(&elsewhere.url()), "{err}");
    assert!(
        r.hydra
            .requests_to(&path)
            .iter()
            .all(|q| q.header("Authorization").is_some())
    );
    assert!(
        elsewhere
            .requests()
            .iter()
            .all(|q| q.header("Authorization").is_none())
    );
    assert_eq!(elsewhere.requests().len(), 1);
}

#[test]
fn a_slow_evaluation_times_out() {
    let r = Rig::with(None, Duration::from_secs(1));
    let (e, _) = r.eval(1);
    r.hydra.override_path(
        &format!("/eval/{e}/builds"),
        Override::delayed(Duration::from_secs(5)),
    );
    let err = r.verdict(e).unwrap_err();
    assert!(matches!(err, HydraError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("/builds"), "{err}");
}

#[test]
fn a_job_uri_of_another_shape_cannot_gate() {
    let r = Rig::new();
    let job = Job::parse(&format!("{}/custom/latest-web", r.hydra.url())).unwrap();
    let err = block_on(r.client.eval_verdict(&job, 1)).unwrap_err();
    assert!(matches!(err, HydraError::NotAJobPath(_)), "{err}");
    for err in [
        block_on(r.client.recent_evals(&job, 1)).unwrap_err(),
        block_on(r.client.latest_finished_eval(&job))
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(matches!(err, HydraError::NotAJobPath(_)), "{err}");
    }
    assert!(r.hydra.requests().is_empty());
}

#[test]
fn a_large_evaluation_is_streamed_in_little_memory() {
    let r = Rig::new();
    let (e, web) = r.eval(0);
    let other = r
        .hydra
        .add_build(BuildSpec::succeeded(OTHER).job("hail", "test", "other"));
    // The job's build first, then 50 000 others (about 35 MB), made as they are sent and
    // without a length, so only reading tells the size.
    let head = format!("[{},", r.hydra.build_json(web));
    let build = r.hydra.build_json(other);
    let n = 50_000;
    r.hydra.override_path(
        &format!("/eval/{e}/builds"),
        Override::streamed_json(&head, &build, n, "]", true),
    );
    let before = hail_testkit::peak_rss_kib();
    let v = r.verdict(e).unwrap();
    let grown = hail_testkit::peak_rss_kib() - before;
    eprintln!("peak memory grew by {grown} KiB from {before} KiB");
    assert_eq!((v.total, v.failed, v.unfinished), (n + 1, 0, 0));
    assert_eq!(v.passed().map(|b| b.id), Some(web));
    let sent = r.hydra.requests().last().unwrap().response_bytes.unwrap();
    assert!(sent > n * 600, "{sent}");
    assert!(grown < 16 << 10, "peak memory grew by {grown} KiB");
}
