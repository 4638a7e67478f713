//! The real hail binary deploying real closures from a signed binary cache: first deploy,
//! no-op polls, new builds, start-up activation, refused signatures, failed activations,
//! SIGHUP, the profile lock and the exit codes of `--oneshot`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::fixture::{Fixture, RUN, activated, assert_running, wait_until};
use hail_testkit::notify::NotifySocket;

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn first_deploy_substitutes_switches_and_activates_once() {
    let f = Fixture::new();
    let (p, _) = f.release("1");
    assert!(!Path::new(&p.out_path).exists());

    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);

    assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));
    assert_eq!(f.activations(), [activated("1", &p)]);
    assert_eq!(f.generations().len(), 1, "{:?}", f.generations());
    // Really substituted from the cache, closure included.
    let fetched = f.cache.requests();
    let hash = &p.out_path["/nix/store/".len()..][..32];
    assert!(fetched.contains(&format!("/{hash}.narinfo")), "{fetched:?}");
    assert!(
        fetched.iter().filter(|r| r.starts_with("/nar/")).count() >= 2,
        "{fetched:?}"
    );
    for path in &p.closure {
        assert!(Path::new(path).exists(), "{path} missing after the deploy");
    }
    // hail asked with Accept: application/json.
    let latest = f.hydra.requests_to(&f.hydra.default_latest_path());
    assert_eq!(latest[0].header("Accept"), Some("application/json"));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn oneshot_again_is_a_no_op() {
    let f = Fixture::new();
    let p = f.deployed("1");
    let fetched = f.cache.requests().len();

    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.activations(), [activated("1", &p)], "{}", r.output);
    assert_eq!(f.generations().len(), 1, "{:?}", f.generations());
    assert_eq!(
        f.cache.requests().len(),
        fetched,
        "the cache was asked again"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn trailing_slash_and_environment_variables() {
    let f = Fixture::new();
    let (p, _) = f.release("1");
    let job = format!("{}/", f.hail.job_uri);
    let profile = f.hail.profile.to_str().unwrap().to_string();
    let mut c = f.hail.bare_command(&[]);
    c.env("HAIL_PROFILE", &profile)
        .env("HAIL_JOB_URI", &job)
        .env("HAIL_ONESHOT", "true");
    let r = hail_testkit::hail::Running::start(c).finish_within(RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));
    let paths: Vec<String> = f
        .hydra
        .requests()
        .iter()
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(paths[0], f.hydra.default_latest_path(), "{paths:?}");
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn output_is_plain_text_when_not_a_terminal() {
    // stderr is a pipe here (as under a supervisor that is not journald, or `2> file`):
    // the "readable lines" must not carry terminal colour codes.
    let f = Fixture::new();
    f.release("1");
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert!(
        !r.output.contains('\x1b'),
        "escape sequences in the output:\n{:?}",
        r.output
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn service_no_op_polls_then_deploys_the_next_build_once() {
    let f = Fixture::new();
    let (p1, _) = f.release("1");
    let mut hail = f.hail.spawn(&["--poll-period", "1s"]);

    let acts = f.wait_activations(1, RUN);
    assert_eq!(acts, [activated("1", &p1)], "{}", hail.output());
    // Several more polls of the same build: no new generation, no activation.
    let polls = f.latest_requests();
    assert!(
        wait_until(RUN, || f.latest_requests() >= polls + 3),
        "{}",
        hail.output()
    );
    assert_eq!(f.activations(), [activated("1", &p1)], "{}", hail.output());
    assert_eq!(f.generations().len(), 1);

    let (p2, _) = f.release("2");
    f.assert_activations(&[activated("1", &p1), activated("2", &p2)], &hail);
    assert_eq!(f.profile_target().as_deref(), Some(p2.out_path.as_str()));
    let polls = f.latest_requests();
    assert!(wait_until(RUN, || f.latest_requests() >= polls + 3));
    assert_eq!(f.activations().len(), 2, "{}", hail.output());
    assert_eq!(f.generations().len(), 2);
    assert_running(&mut hail);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn startup_activation_runs_once_before_ready() {
    let f = Fixture::new();
    let (p, _) = f.release("1");
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.activations().len(), 1);

    let notify = NotifySocket::bind();
    let hail = f.hail.spawn_env(&["--poll-period", "1h"], &[notify.env()]);
    assert!(
        notify.wait_for_line("READY=1", RUN),
        "no READY=1: {}",
        hail.output()
    );
    // The start-up activation is done before READY=1.
    assert_eq!(
        f.activations(),
        [activated("1", &p), activated("1", &p)],
        "{}",
        hail.output()
    );
    // The first poll finds the profile up to date: no second activation.
    assert!(
        hail.wait_for_output("is deployed; nothing to do", RUN),
        "{}",
        hail.output()
    );
    assert_eq!(f.activations().len(), 2, "{}", hail.output());
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn unsigned_path_is_refused_and_nothing_changes() {
    let f = Fixture::new();
    let p = f.cache.publish_unsigned(&f.spec("1"));
    f.make_latest(&p);

    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(6), "{}", r.output);
    assert!(fs_absent(&f.hail.profile), "{}", r.output);
    assert_eq!(f.generations(), Vec::<String>::new());
    assert_eq!(f.activations(), Vec::<String>::new());
    assert!(
        !Path::new(&p.out_path).exists(),
        "an unsigned path entered the store"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn path_signed_by_an_untrusted_key_is_refused_and_the_profile_stays() {
    let f = Fixture::new();
    let p1 = f.deployed("1");

    let p2 = f.cache.publish_untrusted(&f.spec("2"));
    f.make_latest(&p2);
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(6), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(p1.out_path.as_str()));
    assert_eq!(f.generations().len(), 1, "{:?}", f.generations());
    assert!(
        !f.activations()
            .iter()
            .any(|l| l.starts_with("activated 2 ")),
        "{:?}",
        f.activations()
    );
    assert!(!Path::new(&p2.out_path).exists());
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn failed_activation_exits_7_and_switches_back() {
    let f = Fixture::new();
    let p1 = f.deployed("1");

    let (p2, _) = f.release_spec(&f.spec("2").exit_code(3));
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert_eq!(
        f.profile_target().as_deref(),
        Some(p1.out_path.as_str()),
        "{}",
        r.output
    );
    // The failed activation ran, then the previous generation's activation ran again.
    let acts = f.activations();
    assert_eq!(
        acts[acts.len() - 2..],
        [activated("2", &p2), activated("1", &p1)],
        "{acts:?}"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn activation_timeout_exits_7_and_switches_back() {
    let f = Fixture::new();
    let p1 = f.deployed("1");

    f.release_spec(&f.spec("2").sleep(60.0));
    let start = Instant::now();
    let r = f.hail.oneshot(&["--activation-timeout", "2s"], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "the activation was not stopped"
    );
    assert_eq!(f.profile_target().as_deref(), Some(p1.out_path.as_str()));
    let acts = f.activations();
    assert!(
        !acts.iter().any(|l| l.starts_with("activated 2 ")),
        "{acts:?}"
    );
    assert_eq!(acts.last(), Some(&activated("1", &p1)), "{acts:?}");
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn service_does_not_redeploy_a_build_whose_activation_failed() {
    let f = Fixture::new();
    let (p1, _) = f.release("1");
    let mut hail = f.hail.spawn(&["--poll-period", "1s"]);
    f.wait_activations(1, RUN);

    let (p2, _) = f.release_spec(&f.spec("2").exit_code(1));
    f.assert_activations(
        &[
            activated("1", &p1),
            activated("2", &p2),
            activated("1", &p1),
        ],
        &hail,
    );
    let polls = f.latest_requests();
    assert!(
        wait_until(RUN, || f.latest_requests() >= polls + 3),
        "{}",
        hail.output()
    );
    assert_eq!(
        f.activations().len(),
        3,
        "the failed build was deployed again: {}",
        hail.output()
    );
    assert_eq!(f.profile_target().as_deref(), Some(p1.out_path.as_str()));

    // A different build is deployed.
    let (p3, _) = f.release("3");
    let acts = f.wait_activations(4, RUN);
    assert_eq!(acts.last(), Some(&activated("3", &p3)), "{}", hail.output());
    assert_running(&mut hail);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn sighup_polls_at_once() {
    let f = Fixture::new();
    let (p1, _) = f.release("1");
    let notify = NotifySocket::bind();
    let hail = f.hail.spawn_env(&["--poll-period", "1h"], &[notify.env()]);
    f.wait_activations(1, RUN);
    assert!(notify.wait_for_line("READY=1", RUN));
    // Let the first poll (and its deploy) finish before publishing.
    assert!(
        wait_until(RUN, || notify.lines().iter().any(|l| l.contains("idle"))),
        "{:?}",
        notify.lines()
    );

    let (p2, _) = f.release("2");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        f.activations(),
        [activated("1", &p1)],
        "deployed without SIGHUP"
    );
    hail.signal(libc::SIGHUP);
    f.assert_activations(&[activated("1", &p1), activated("2", &p2)], &hail);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn second_hail_on_the_same_profile_exits_4() {
    let f = Fixture::new();
    f.release("1");
    let notify = NotifySocket::bind();
    let mut first = f.hail.spawn_env(&["--poll-period", "1h"], &[notify.env()]);
    assert!(notify.wait_for_line("READY=1", RUN), "{}", first.output());

    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(4), "{}", r.output);
    // The first has deployed build 1 and waits an hour: nothing else activates.
    assert!(
        first.wait_for_output("deployed build", RUN),
        "{}",
        first.output()
    );
    let before = f.activations();
    assert_eq!(before.len(), 1, "{before:?}");
    let r = f.hail.run(&["--poll-period", "1h"], RUN);
    assert_eq!(r.code(), Some(4), "{}", r.output);
    // The profile lock comes first: the second hail ran no start-up activation.
    assert_eq!(f.activations(), before, "{}", r.output);
    assert_running(&mut first);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn an_activation_timeout_kills_what_the_activation_started() {
    let f = Fixture::new();
    f.deployed("1");
    let child = f.tmp.path().join("child.pid");
    let spec = f.spec("2").extra(&format!(
        "sleep 3600 & echo $! > {}; sleep 3600",
        child.display()
    ));
    f.release_spec(&spec);
    let r = f.hail.oneshot(&["--activation-timeout", "1s"], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    // Its whole process group was killed: the background child too.
    let pid: u32 = std::fs::read_to_string(&child)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || crate::fixture::gone(pid)),
        "the activation's child {pid} survived"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn oneshot_usage_and_configuration_errors() {
    let f = Fixture::new();
    let profile = f.hail.profile.to_str().unwrap().to_string();
    let job = f.hail.job_uri.clone();
    let with_job = |extra: &[&str]| -> Vec<String> {
        ["--oneshot", "--profile", &profile, "--job-uri", &job]
            .iter()
            .chain(extra)
            .map(|a| a.to_string())
            .collect()
    };
    let owned = |args: &[&str]| -> Vec<String> { args.iter().map(|a| a.to_string()).collect() };
    for (args, want) in [
        (with_job(&["--bogus"]), 2),
        (with_job(&["--http-timeout", "soon"]), 2),
        (owned(&["--oneshot", "--profile", &profile]), 2),
        (
            owned(&[
                "--oneshot",
                "--profile",
                &profile,
                "--job-uri",
                "ftp://example.org/job/a/b/c",
            ]),
            3,
        ),
        (
            owned(&["--oneshot", "--profile", "../escape", "--job-uri", &job]),
            3,
        ),
        (with_job(&["--netrc-file", "/nonexistent/netrc"]), 3),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = f.hail.run_bare(&args, RUN);
        assert_eq!(r.code(), Some(want), "{args:?}: {}", r.output);
        assert!(!r.output.trim().is_empty(), "{args:?}: no message");
    }
    f.assert_untouched("");
}

fn fs_absent(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}
