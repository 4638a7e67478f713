//! Stopping while a deployment is under way: a realise that hangs (a binary cache that accepts
//! connections and never answers) is cut short by SIGTERM, with the profile untouched; under
//! `--oneshot` hail then exits 1.

use std::net::TcpListener;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::fixture::{HAIL, RUN, wait_until};

use hail_testkit::hail::Hail;
use hail_testkit::hydra::{BuildSpec, HydraServer};
use hail_testkit::notify::NotifySocket;

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn sigterm_during_a_hanging_realise_stops_promptly() {
    let status = sigterm_during_a_hanging_realise(&["--poll-period", "1h"]);
    assert_eq!(status.code(), Some(0));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn oneshot_stopped_by_sigterm_exits_1() {
    let status = sigterm_during_a_hanging_realise(&["--oneshot"]);
    assert_eq!(status.code(), Some(1));
}

/// Runs hail with `args` until its realise hangs, sends SIGTERM, checks that it stopped promptly
/// with nothing deployed, and returns how it ended.
fn sigterm_during_a_hanging_realise(args: &[&str]) -> ExitStatus {
    let service = !args.contains(&"--oneshot");
    hail_testkit::prereq::require_nix();
    // Accepts and holds connections (counting them); never sends a byte.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
            accepted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let hydra = HydraServer::start();
    // A well-formed path that no store holds, so Nix has to ask the (silent) cache.
    let path = format!("/nix/store/{}-never-answered", random_hash());
    hydra.add_build(BuildSpec::succeeded(&path));
    let nix_config = format!("substituters = http://127.0.0.1:{port}\nconnect-timeout = 0\n");
    let notify = NotifySocket::bind();
    let hail = Hail::new(HAIL, &hydra.default_job_uri(), &nix_config).notify(&notify);
    let mut running = hail.spawn(args);

    // The service tells systemd (`--oneshot` does not).
    if service {
        let deploying = notify.wait_for(
            |l| l.starts_with("STATUS=") && l.contains("deploying build"),
            RUN,
        );
        assert!(
            deploying.is_some(),
            "no deployment started: {}",
            running.output()
        );
    }
    // The realise hangs: Nix has connected to the cache.
    assert!(
        wait_until(RUN, || connections.load(Ordering::SeqCst) >= 1),
        "Nix never asked the cache: {}",
        running.output()
    );

    let asked = Instant::now();
    let status = running
        .terminate(Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "hail did not stop within 15 s of SIGTERM: {}",
                running.output()
            )
        });
    assert!(asked.elapsed() < Duration::from_secs(15));
    if service {
        assert!(
            notify.wait_for_line("STOPPING=1", RUN),
            "{:?}",
            notify.lines()
        );
    }
    assert!(!hail.profile.exists(), "the profile was created");
    assert!(!std::path::Path::new(&path).exists());
    status
}

/// 32 characters of Nix's base-32 alphabet, different in every run.
fn random_hash() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    (0..32)
        .map(|_| {
            let n = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            ALPHABET[(n % 32) as usize] as char
        })
        .collect()
}
