//! Stopping while a deployment is under way: a realise that hangs (a binary cache that accepts
//! connections and never answers) is cut short by SIGTERM, with the profile untouched.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use hail_testkit::hail::Hail;
use hail_testkit::hydra::{BuildSpec, HydraServer};
use hail_testkit::notify::NotifySocket;

#[test]
fn sigterm_during_a_hanging_realise_stops_promptly() {
    if !hail_testkit::prereq::require_nix() {
        return;
    }
    // Accepts and holds connections; never sends a byte.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let hydra = HydraServer::start();
    // A well-formed path that no store holds, so Nix has to ask the (silent) cache.
    let path = format!("/nix/store/{}-never-answered", random_hash());
    hydra.add_build(BuildSpec::succeeded(&path));
    let nix_config = format!("substituters = http://127.0.0.1:{port}\nconnect-timeout = 0\n");
    let notify = NotifySocket::bind();
    let hail =
        Hail::new(crate::fixture::HAIL, &hydra.default_job_uri(), &nix_config).notify(&notify);
    let mut running = hail.spawn(&["--poll-period", "1h"]);

    let deploying = notify.wait_for(
        |l| l.starts_with("STATUS=") && l.contains("deploying build"),
        Duration::from_secs(30),
    );
    assert!(
        deploying.is_some(),
        "no deployment started: {}",
        running.output()
    );
    std::thread::sleep(Duration::from_secs(1));

    let asked = Instant::now();
    let status = running.terminate(Duration::from_secs(15));
    assert!(
        status.is_some(),
        "hail did not stop within 15 s of SIGTERM: {}",
        running.output()
    );
    assert!(asked.elapsed() < Duration::from_secs(15));
    assert!(
        notify.wait_for_line("STOPPING=1", Duration::from_secs(1)),
        "{:?}",
        notify.lines()
    );
    assert!(!hail.profile.exists(), "the profile was created");
    assert!(!std::path::Path::new(&path).exists());
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
