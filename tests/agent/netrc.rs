//! netrc credentials: sent as HTTP Basic auth to the job URI's host only, curl's netrc syntax
//! (comments, quoted tokens) understood, an unparsable file refused, secrets never printed.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::fixture::{Fixture, RUN, wait_until};
use hail_testkit::hail::Finished;
use hail_testkit::hydra::Override;

const PASSWORD: &str = "s3cret-netrc-pw";

fn write_netrc(f: &Fixture, text: &str) -> PathBuf {
    let path = f.tmp.path().join("netrc");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Runs `hail --oneshot` with a netrc file holding `text`; its result and the file.
fn oneshot_with_netrc(f: &Fixture, text: &str) -> (Finished, PathBuf) {
    let netrc = write_netrc(f, text);
    let r = f
        .hail
        .oneshot(&["--netrc-file", netrc.to_str().unwrap()], RUN);
    (r, netrc)
}

/// The netrc entry of alice, with the password everything checks hail never prints.
fn alice() -> String {
    format!("machine 127.0.0.1 login alice password {PASSWORD}\n")
}

fn basic(login: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{login}:{password}").as_bytes()))
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn assert_no_secret(output: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !output.contains(s),
            "hail printed a secret ({s:?}):\n{output}"
        );
    }
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn credentials_are_sent_to_the_job_uris_host() {
    let f = Fixture::new();
    let (p, _) = f.release("1");
    let (r, _) = oneshot_with_netrc(&f, &alice());
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));

    let latest = f.hydra.requests_to(&f.hydra.default_latest_path());
    assert_eq!(
        latest[0].header("Authorization"),
        Some(basic("alice", PASSWORD).as_str())
    );
    assert_no_secret(
        &r.output,
        &[PASSWORD, &base64(format!("alice:{PASSWORD}").as_bytes())],
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn credentials_are_not_sent_to_another_host_after_a_redirect() {
    let f = Fixture::new();
    let (p, id) = f.release("1");
    // Same server, another host name: what a misconfigured proxy in front of Hydra produces.
    let elsewhere = format!("http://localhost:{}/build/{id}", f.hydra.port());
    f.hydra.override_path(
        &f.hydra.default_latest_path(),
        Override::redirect(&elsewhere),
    );
    let (r, _) = oneshot_with_netrc(&f, &alice());
    let latest = f.hydra.requests_to(&f.hydra.default_latest_path());
    assert_eq!(
        latest[0].header("Authorization"),
        Some(basic("alice", PASSWORD).as_str())
    );
    let followed = f.hydra.requests_to(&format!("/build/{id}"));
    assert!(
        !followed.is_empty(),
        "the redirect was not followed: {}",
        r.output
    );
    for req in &followed {
        assert_eq!(
            req.header("Host"),
            Some(format!("localhost:{}", f.hydra.port()).as_str())
        );
        assert_eq!(
            req.header("Authorization"),
            None,
            "credentials sent to another host"
        );
    }
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn netrc_with_comments_and_quoted_tokens() {
    let f = Fixture::new();
    f.release("1");
    let (r, _) = oneshot_with_netrc(
        &f,
        concat!(
            "# credentials for the test Hydra\n",
            "machine other.example login nobody password nothing\n",
            "machine 127.0.0.1\n",
            "  # the login has a space, the password a quote and a hash\n",
            "  login \"al ice\"\n",
            "  password \"p a\\\"ss#word\"\n",
        ),
    );
    assert_eq!(r.code(), Some(0), "{}", r.output);
    let latest = f.hydra.requests_to(&f.hydra.default_latest_path());
    assert_eq!(
        latest[0].header("Authorization"),
        Some(basic("al ice", "p a\"ss#word").as_str())
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn unparsable_netrc_is_a_configuration_error() {
    let f = Fixture::new();
    f.release("1");
    for text in [
        format!("machine 127.0.0.1 login alice password \"{PASSWORD}\n"),
        "machine 127.0.0.1 login alice password\n".to_string(),
    ] {
        let (r, netrc) = oneshot_with_netrc(&f, &text);
        assert_eq!(r.code(), Some(3), "{text:?}: {}", r.output);
        assert!(
            r.output.contains(netrc.to_str().unwrap()),
            "the message does not name the file: {}",
            r.output
        );
        assert_no_secret(&r.output, &[PASSWORD]);
        f.assert_untouched(&r.output);
    }
    assert_eq!(
        f.latest_requests(),
        0,
        "Hydra was polled despite the configuration error"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn credentials_never_appear_in_the_output() {
    let f = Fixture::new();
    let netrc = write_netrc(&f, &alice());
    let b64 = base64(format!("alice:{PASSWORD}").as_bytes());
    // Failing polls (private Hydra: 403), then a deploy, all at RUST_LOG=debug.
    f.hydra.set_private(true);
    let hail = f.hail.spawn(&[
        "--netrc-file",
        netrc.to_str().unwrap(),
        "--poll-period",
        "1s",
    ]);
    assert!(wait_until(RUN, || f.latest_requests() >= 1));
    assert!(hail.wait_for_output("sign in", RUN), "{}", hail.output());
    f.hydra.set_private(false);
    f.release("1");
    f.wait_activations(1, RUN);
    assert!(
        hail.wait_for_output("deployed build", RUN),
        "{}",
        hail.output()
    );
    hail.signal(libc::SIGTERM);
    let r = hail.finish_within(Duration::from_secs(90));
    assert_eq!(f.activations().len(), 1, "{}", r.output);
    assert_no_secret(&r.output, &[PASSWORD, &b64]);
}

/// A misspelt keyword is skipped, as curl skips it: hail warns (naming the line, not the word)
/// and says that the host's entry gives no password.
#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn misspelt_keyword_is_warned_about_without_the_secret() {
    let f = Fixture::new();
    f.release("1");
    let (r, _) = oneshot_with_netrc(
        &f,
        &format!("machine 127.0.0.1 login alice pasword {PASSWORD}\n"),
    );
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert!(r.output.contains("skipped words"), "{}", r.output);
    assert!(r.output.contains("no password"), "{}", r.output);
    assert_no_secret(&r.output, &[PASSWORD]);
}

/// Without `--netrc-file`, hail reads `/etc/netrc` when it exists (here in a mount namespace of
/// its own, so the host's `/etc` is untouched).
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_namespaces),
    ignore = "needs root, Nix, mount, unshare and nsenter (HAIL_TEST_SKIP_MISSING=1)"
)]
fn etc_netrc_is_the_default() {
    let f = Fixture::new();
    let (p, _) = f.release("1");
    let r = f.oneshot_with_etc(&[("netrc", &alice())], &[]);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));
    let auth: Vec<Option<String>> = f
        .hydra
        .requests_to(&f.hydra.default_latest_path())
        .iter()
        .map(|q| q.header("Authorization").map(str::to_string))
        .collect();
    assert_eq!(auth, [Some(basic("alice", PASSWORD))], "{}", r.output);
    assert_no_secret(&r.output, &[PASSWORD]);
}
