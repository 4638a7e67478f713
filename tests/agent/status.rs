//! What hail says about itself: the status line after a rolled-back activation still names the
//! build that is deployed, and a host without CA certificates can still follow a plain-http job
//! (https needs them, and says so).

use std::time::Duration;

use crate::fixture::{Fixture, RUN};
use hail_testkit::notify::NotifySocket;

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn status_after_a_rollback_names_the_build_still_deployed() {
    let f = Fixture::new();
    let notify = NotifySocket::bind();
    let (_, b1) = f.release("1");
    let mut running = f.hail.spawn_env(&["--poll-period", "1h"], &[notify.env()]);
    let deployed = format!("STATUS=deployed build {b1} (");
    assert!(
        notify.wait_for(|l| l.starts_with(&deployed), RUN).is_some(),
        "{:?}\n{}",
        notify.lines(),
        running.output()
    );

    let (_, b2) = f.release_spec(&f.spec("2").exit_code(1));
    running.signal(libc::SIGHUP);
    let failed = notify.wait_for(
        |l| l.starts_with("STATUS=") && l.contains(&format!("build {b2}")) && l.contains("failed"),
        RUN,
    );
    let failed = failed.unwrap_or_else(|| panic!("{:?}\n{}", notify.lines(), running.output()));
    assert!(
        failed.starts_with(&deployed),
        "the status lost the deployed build: {failed}"
    );
    assert!(failed.contains("generation 1"), "{failed}");
    running.terminate(Duration::from_secs(30));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn plain_http_works_without_ca_certificates_and_https_says_what_is_missing() {
    let f = Fixture::new();
    let no_certs = f.tmp.path().join("no-certs");
    std::fs::create_dir_all(&no_certs).unwrap();
    let dir = no_certs.to_str().unwrap();
    let without_certs = [
        ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
        ("SSL_CERT_DIR", dir),
    ];
    f.release("1");

    let mut run = f.hail.spawn_env(&["--oneshot"], &without_certs);
    let status = run.wait_timeout(RUN).expect("hail did not finish");
    assert_eq!(status.code(), Some(0), "{}", run.output());

    let https = f
        .hail
        .bare_command(&[])
        .envs(without_certs)
        .args([
            "--profile",
            f.tmp.path().join("https-profile").to_str().unwrap(),
            "--job-uri",
            "https://127.0.0.1:1/job/p/j/x",
            "--oneshot",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&https.stderr);
    assert_eq!(https.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("CA certificates"), "{stderr}");
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_failed_startup_activation_stays_in_the_status() {
    let f = Fixture::new();
    // Activates once (the deployment), fails every time after (the start-up activation).
    let flag = f.tmp.path().join("activated-once");
    let extra = format!("[ -e '{0}' ] && exit 1; touch '{0}'", flag.display());
    let (_, b1) = f.release_spec(&f.spec("1").extra(&extra));
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(0));

    let notify = NotifySocket::bind();
    let mut running = f.hail.spawn_env(&["--poll-period", "1h"], &[notify.env()]);
    let idle = notify.wait_for(
        |l| l.starts_with(&format!("STATUS=deployed build {b1} (")) && l.contains("idle"),
        RUN,
    );
    let idle = idle.unwrap_or_else(|| panic!("{:?}\n{}", notify.lines(), running.output()));
    assert!(idle.contains("start-up activation failed"), "{idle}");
    running.terminate(Duration::from_secs(30));
}
