//! Smaller promises, each held by the real binary: `--oneshot` exits 8 while its rollout slot has
//! not come; the slot comes from `/etc/machine-id` without `--rollout-key`; `--poll-period 0` is
//! refused; `--health-check` is split into words as systemd splits them (quotes honoured), and
//! unbalanced quotes are refused; a profile without `bin/activate` deploys; a path Nix missed
//! before it was published is deployed (hail's own `narinfo-cache-negative-ttl 0`); `hail status`,
//! `pause`, `resume` and `retry` exit 2 for a wrongly named instance, and `pause`, `resume` and
//! `retry` 3 for an instance this host does not have (`status` shows it as never run).

use std::process::Command;
use std::time::Duration;

use hail_testkit::hail::{Hail, Running};

use crate::fixture::{Fixture, HAIL, RUN};

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn oneshot_exits_8_while_its_rollout_slot_has_not_come() {
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    // A key whose slot is at least ten minutes into the hour's spread.
    let job = f.hail.job_uri.clone();
    let spread = Duration::from_secs(3600);
    let key = (0..1000)
        .map(|i| format!("host-{i}"))
        .find(|k| hail::decide::rollout_delay(k, &job, spread) >= Duration::from_secs(600))
        .unwrap();
    let args = ["--rollout-spread", "1h", "--rollout-key", &key];
    let r = f.hail.oneshot(&args, RUN);
    assert_eq!(r.code(), Some(8), "{}", r.output);
    assert!(
        r.output.contains("waits for its rollout slot"),
        "{}",
        r.output
    );
    f.assert_untouched(&r.output);
    // The slot of the empty spread is now: deployed.
    let r = f.hail.oneshot(&["--rollout-key", &key], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
}

/// Without `--rollout-key` the slot comes from `/etc/machine-id` (here in a mount namespace of
/// its own, so the host's is untouched).
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_namespaces),
    ignore = "needs root, Nix, mount, unshare and nsenter (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_machine_id_is_the_default_rollout_key() {
    let f = Fixture::new();
    let (v1, b1) = f.release("1");
    // Finished half a minute ago (by Hydra's clock, which is the host's here).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    f.hydra.set_stoptime(b1, now - 30);
    let job = f.hail.job_uri.clone();
    let spread = Duration::from_secs(3600);
    let slot = |id: &str| hail::decide::rollout_delay(id, &job, spread);
    // One id whose slot is at least ten minutes away, one whose slot has come.
    let ids: Vec<String> = (0..100_000u32).map(|i| format!("{i:032x}")).collect();
    let late = ids
        .iter()
        .find(|id| slot(id) >= Duration::from_secs(600))
        .unwrap();
    let now = ids
        .iter()
        .find(|id| slot(id) < Duration::from_secs(5))
        .unwrap();
    let r = f.oneshot_with_etc(
        &[("machine-id", &format!("{late}\n"))],
        &["--rollout-spread", "1h"],
    );
    assert_eq!(r.code(), Some(8), "{}", r.output);
    let said = format!("rollout slot: {} after", hail::format::duration(slot(late)));
    assert!(r.output.contains(&said), "{said}: {}", r.output);
    f.assert_untouched(&r.output);

    let r = f.oneshot_with_etc(
        &[("machine-id", &format!("{now}\n"))],
        &["--rollout-spread", "1h"],
    );
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_poll_period_of_zero_is_refused() {
    let f = Fixture::new();
    for period in ["0", "0s", "500ms"] {
        let r = f.hail.run(&["--poll-period", period], RUN);
        assert_eq!(r.code(), Some(3), "{period}: {}", r.output);
        assert!(
            r.output
                .contains("--poll-period must be at least one second"),
            "{period}: {}",
            r.output
        );
    }
    assert!(f.hydra.requests().is_empty());
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn health_check_words_are_split_with_quotes_honoured() {
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    // Passes only when `a b` arrives as one word, the quoted script as another.
    let check = r#"/bin/sh -c 'test "$#" = 1 && test "$1" = "a b"' sh "a b""#;
    let r = f
        .hail
        .oneshot(&["--health-check", check, "--health-timeout", "10s"], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));

    for bad in [r#"/bin/sh -c 'exit 0"#, r#"/bin/true "a"#, "  "] {
        let r = f.hail.oneshot(&["--health-check", bad], RUN);
        if bad.trim().is_empty() {
            // No command at all is no health check.
            assert_eq!(r.code(), Some(0), "{bad:?}: {}", r.output);
            continue;
        }
        assert_eq!(r.code(), Some(3), "{bad:?}: {}", r.output);
        assert!(
            r.output.contains("unbalanced quotes, or no command"),
            "{bad:?}: {}",
            r.output
        );
    }
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_profile_without_bin_activate_deploys() {
    let f = Fixture::new();
    let file = f.tmp.path().join("no-activate.nix");
    std::fs::write(
        &file,
        r#"{ nonce }: builtins.derivation {
  name = "no-activate";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  inherit nonce;
  args = [ "-c" "/bin/mkdir -p $out/bin && echo 'echo hello' > $out/bin/hello" ];
}
"#,
    )
    .unwrap();
    let nonce = format!("{:?}", std::time::SystemTime::now());
    let p = f.cache.publish_nix(&file, &["--argstr", "nonce", &nonce]);
    let id = f.make_latest(&p);
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(p.out_path.as_str()));
    assert!(
        r.output
            .contains("has no bin/activate; nothing to activate")
            && r.output.contains(&format!("deployed build {id}")),
        "{}",
        r.output
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn control_commands_exit_2_for_a_bad_name_and_3_for_an_unknown_instance() {
    let f = Fixture::new();
    let unknown = format!("hail-test-unknown-{}", std::process::id());
    for command in ["status", "pause", "resume", "retry"] {
        let r = f.hail.run_bare(&[command, "../x"], RUN);
        assert_eq!(r.code(), Some(2), "{command} ../x: {}", r.output);
        assert!(r.output.contains("is not an instance name"), "{}", r.output);

        let r = f.hail.run_bare(&[command, &unknown], RUN);
        if command == "status" {
            // Status shows such an instance as one that never ran.
            assert_eq!(r.code(), Some(0), "{command} {unknown}: {}", r.output);
            assert!(r.output.contains("never ran"), "{}", r.output);
            continue;
        }
        assert_eq!(r.code(), Some(3), "{command} {unknown}: {}", r.output);
        assert!(
            r.output.contains(&format!("no instance hail@{unknown}")),
            "{}",
            r.output
        );
    }
}

/// A path Nix was asked for before it was published (a negative look-up Nix remembers for an
/// hour by default) is still deployed right after it is: hail's own Nix commands set
/// `narinfo-cache-negative-ttl 0`. Here the Nix configuration does not set it.
#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_path_nix_missed_before_it_was_published_is_deployed() {
    let f = Fixture::new();
    let config = format!(
        "substituters = {}\ntrusted-public-keys = {}\n",
        f.cache.url(),
        f.cache.public_key()
    );
    let hail = Hail::new(HAIL, &f.hydra.default_job_uri(), &config);
    let p = f.publish("1");
    let hash = &p.out_path["/nix/store/".len()..][..32];
    let narinfo_path = format!("/{hash}.narinfo");
    let narinfo_asks = || {
        f.cache
            .requests()
            .iter()
            .filter(|r| **r == narinfo_path)
            .count()
    };
    // Nix asks for it, with hail's environment (its home, hence its narinfo cache) and Nix
    // configuration, while its narinfo is hidden: not published yet.
    let realise = || {
        let hails = hail.bare_command(&[]);
        Command::new("nix-store")
            .env_clear()
            .envs(
                hails
                    .get_envs()
                    .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
            )
            .args(["--realise", &p.out_path])
            .output()
            .unwrap()
    };
    let narinfo = f.cache.dir().join(format!("{hash}.narinfo"));
    let hidden = narinfo.with_extension("hidden");
    std::fs::rename(&narinfo, &hidden).unwrap();
    let out = realise();
    assert!(
        !out.status.success(),
        "found before it was published: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(narinfo_asks() >= 1);
    // Published: Nix, by itself, trusts its memory and does not ask again.
    std::fs::rename(&hidden, &narinfo).unwrap();
    let asked = narinfo_asks();
    assert!(
        !realise().status.success(),
        "Nix remembered no negative look-up"
    );
    assert_eq!(narinfo_asks(), asked, "Nix remembered no negative look-up");

    let id = f.make_latest(&p);
    let r = Running::start(hail.command(&["--oneshot"])).finish_within(RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert!(
        r.output.contains(&format!("deployed build {id}")),
        "{}",
        r.output
    );
    assert_eq!(
        std::fs::canonicalize(&hail.profile).ok().as_deref(),
        Some(std::path::Path::new(&p.out_path))
    );
}
