//! Faults around hail: its state directory full, removed while it runs, or read-only. In each,
//! nothing is switched that is not recorded first, a clear error is said, and nothing learnt is
//! lost. Needs root (the file systems are mounted for the test).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::fixture::{Fixture, RUN, activated, wait_until};
use hail_testkit::cache::{Published, hang_once};
use hail_testkit::hail::Running;
use std::time::Duration;

/// A file system mounted over a directory for a test; unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    /// `mount ARGS… DIR`.
    fn new(dir: &Path, args: &[&str]) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(args).arg(dir).output().unwrap();
        assert!(
            out.status.success(),
            "mount {args:?} {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(dir.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` (a file of everything left).
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("fill")).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
}

/// After a `--oneshot` that finished a failed deployment: exit 7, no operator's change inferred,
/// the profile back at `v1` (build `b1`), whose activation ran last. Returns `hail status`.
fn back_at(f: &Fixture, r: &hail_testkit::hail::Finished, v1: &Published, b1: u64) -> Value {
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert!(!r.output.contains("by hand"), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert_eq!(
        f.activations().last().map(String::as_str),
        Some(activated("1", v1).as_str()),
        "what runs is what the profile says"
    );
    let s = status(f);
    assert_eq!(s["deployed"]["build_id"], b1, "{s}");
    s
}

fn status(f: &Fixture) -> Value {
    let dir = f.state_dir();
    let r = f.hail.run_bare(
        &["status", "--state-dir", dir.to_str().unwrap(), "--json"],
        RUN,
    );
    assert_eq!(r.code(), Some(0), "{}", r.output);
    serde_json::from_str(&r.output).unwrap_or_else(|e| panic!("{e}: {}", r.output))
}

/// A [`Fixture`] for the tests that mount (a small tmpfs, a namespace of hail's own).
fn fixture() -> Fixture {
    hail_testkit::prereq::require(&hail_testkit::prereq::NAMESPACES);
    Fixture::new()
}

#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_namespaces),
    ignore = "needs root, Nix, mount, unshare and nsenter (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_full_state_directory_switches_nothing_until_it_can_record_it() {
    let f = fixture();
    let dir = f.state_dir();
    let _fs = Mounted::new(&dir, &["-t", "tmpfs", "-o", "size=1m", "tmpfs"]);
    let v1 = f.deployed("1");
    let once = f.activations();
    fill(&dir);
    let (_, b2) = f.release("2");
    let r = f.hail.oneshot(&[], RUN);
    // Nothing switched, and said why.
    assert_eq!(r.code(), Some(6), "{}", r.output);
    assert!(
        r.output.contains(&format!(
            "build {b2} not deployed: the state could not be written"
        )) && r.output.contains("No space left on device")
            && r.output.contains("nothing was switched"),
        "{}",
        r.output
    );
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert_eq!(f.activations(), once);
    // Room again: deployed, and nothing taken for an operator's change.
    std::fs::remove_file(dir.join("fill")).unwrap();
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert!(!r.output.contains("by hand"), "{}", r.output);
    let s = status(&f);
    assert_eq!(s["deployed"]["build_id"], b2, "{s}");
    assert_eq!(s["known_bad"], serde_json::json!([]), "{s}");
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_state_directory_removed_while_hail_runs_is_made_again() {
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    assert!(
        wait_until(RUN, || f.activations() == [activated("1", &v1)]),
        "{}",
        running.output()
    );
    let dir = f.state_dir();
    assert!(wait_until(RUN, || dir.join("state.json").exists()));
    std::fs::remove_dir_all(&dir).unwrap();
    let (v2, b2) = f.release("2");
    running.signal(libc::SIGHUP);
    assert!(
        wait_until(RUN, || f.profile_target().as_deref()
            == Some(v2.out_path.as_str())),
        "{}",
        running.output()
    );
    assert!(
        running.wait_for_output("had been removed; made it again", RUN),
        "{}",
        running.output()
    );
    // What it learnt is written there, and control commands find it.
    assert!(
        wait_until(RUN, || status(&f)["deployed"]["build_id"] == b2),
        "{}",
        status(&f)
    );
    assert_eq!(status(&f)["running"], true, "{}", status(&f));
    running.terminate(RUN);
}

#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_namespaces),
    ignore = "needs root, Nix, mount, unshare and nsenter (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_read_only_state_directory_is_said_as_such() {
    let f = fixture();
    f.deployed("1");
    let dir = f.state_dir();
    let _bind = Mounted::new(&dir, &["--bind", dir.to_str().unwrap()]);
    let _ro = Mounted::new(&dir, &["-o", "remount,bind,ro"]);
    let r = f.hail.oneshot(&[], RUN);
    // A configuration error (3), not "another hail holds this profile" (4).
    assert_eq!(r.code(), Some(3), "{}", r.output);
    assert!(r.output.contains("Read-only file system"), "{}", r.output);
    assert!(!r.output.contains("another hail"), "{}", r.output);
}

/// Kills `hail` and the activation it runs (whose process group leader wrote its pid to
/// `pid_file`) with SIGKILL, as the kernel kills a unit's cgroup.
fn kill_with_activation(hail: &mut hail_testkit::hail::Running, pid_file: &Path) {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    hail.kill();
    // SAFETY: kill has no memory-safety preconditions; the group is the test's activation's.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn an_activation_cut_short_by_a_kill_is_finished_and_rolled_back_at_the_next_start() {
    let f = Fixture::new();
    let (v1, b1) = f.release("1");
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(0));
    // Build 2's activation fails; the first time it runs, it hangs until it is killed.
    let started = f.tmp.path().join("activation-2.pid");
    let spec = f.spec("2").exit_code(1).extra(&hang_once(&started));
    let (v2, b2) = f.release_spec(&spec);
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    assert!(wait_until(RUN, || started.exists()), "{}", running.output());
    assert_eq!(f.profile_target().as_deref(), Some(v2.out_path.as_str()));
    kill_with_activation(&mut running, &started);

    // The next hail sees the deployment through: its activation fails, so it is rolled back,
    // build 1 re-activated, and build 2 known-bad, not deployed (and not an operator's doing).
    let r = f.hail.oneshot(&[], RUN);
    let s = back_at(&f, &r, &v1, b1);
    assert_eq!(s["known_bad"][0]["build_id"], b2, "{s}");
    let reason = s["known_bad"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("activation failed"), "{s}");
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_rollback_cut_short_by_a_kill_is_finished_without_activating_the_failed_build_again() {
    let f = Fixture::new();
    // Build 1's activation hangs once build 2's failed activation armed it: the rollback's
    // re-activation of build 1 is where hail is killed.
    let arm = f.tmp.path().join("arm");
    let started = f.tmp.path().join("reactivation-1.pid");
    let hang = format!(
        "if [ -e {} ]; then {}; fi",
        arm.display(),
        hang_once(&started)
    );
    let (v1, b1) = f.release_spec(&f.spec("1").extra(&hang));
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(0));
    let touch = format!("touch {}", arm.display());
    let (v2, b2) = f.release_spec(&f.spec("2").exit_code(1).extra(&touch));
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    assert!(wait_until(RUN, || started.exists()), "{}", running.output());
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    kill_with_activation(&mut running, &started);
    // The verdict was saved before the rollback started.
    let s = status(&f);
    assert_eq!(s["known_bad"][0]["build_id"], b2, "{s}");

    // The next hail finishes the rollback: build 1 re-activated, build 2 not run again, the
    // deployment on record as failed (not an operator's doing).
    let r = f.hail.oneshot(&[], RUN);
    let s = back_at(&f, &r, &v1, b1);
    let runs_of_2 = || {
        let all = f.activations();
        all.iter().filter(|l| **l == activated("2", &v2)).count()
    };
    assert_eq!(runs_of_2(), 1, "build 2 ran again: {:?}", f.activations());
    assert_eq!(s["last_deployment"]["build_id"], b2, "{s}");
    assert_eq!(s["last_deployment"]["result"], "activation-failed", "{s}");
    // Up to date from now on: build 2 is known-bad.
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert_eq!(runs_of_2(), 1);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_rollback_returns_to_the_last_good_build_not_the_generation_below() {
    let f = Fixture::new();
    let fast = ["--health-interval", "100ms", "--health-timeout", "5s"];
    let (v1, b1) = f.release("1");
    assert_eq!(f.hail.oneshot(&fast, RUN).code(), Some(0));
    // Build 2's check fails: rolled back to generation 1; generation 2 stays, below what comes.
    let (_, b2) = f.release_spec(&f.spec("2").health_check("exit 1"));
    assert_eq!(f.hail.oneshot(&fast, RUN).code(), Some(7));
    // Build 3's check fails too; the first time, it hangs until hail and it are killed.
    let started = f.tmp.path().join("check-3.pid");
    let spec = f
        .spec("3")
        .health_check(&format!("{}; exit 1", hang_once(&started)));
    let (v3, b3) = f.release_spec(&spec);
    let mut running = f.hail.spawn(&[
        "--poll-period",
        "1h",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "1h",
    ]);
    assert!(wait_until(RUN, || started.exists()), "{}", running.output());
    assert_eq!(f.profile_target().as_deref(), Some(v3.out_path.as_str()));
    kill_with_activation(&mut running, &started);

    // The next hail rolls build 3 back to build 1 (generation 1), not onto build 2.
    let r = f.hail.oneshot(&fast, RUN);
    let s = back_at(&f, &r, &v1, b1);
    let bad: Vec<&Value> = s["known_bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["build_id"])
        .collect();
    assert_eq!(bad, [&Value::from(b2), &Value::from(b3)], "{s}");
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_good_build_whose_generation_was_deleted_is_set_again() {
    let f = Fixture::new();
    let (v1, b1) = f.release("1");
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(0));
    let started = f.tmp.path().join("activation-2.pid");
    let spec = f.spec("2").exit_code(1).extra(&hang_once(&started));
    f.release_spec(&spec);
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    assert!(wait_until(RUN, || started.exists()), "{}", running.output());
    kill_with_activation(&mut running, &started);
    // As `nix-collect-garbage -d` would: every generation but the current one deleted, and
    // build 1 collected from the store.
    f.nix_env(&["--delete-generations", "old"]);
    f.cache.collect(&v1.closure);
    assert!(!Path::new(&v1.out_path).exists());

    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert!(
        r.output
            .contains(&format!("the last good build {} set again", v1.out_path)),
        "{}",
        r.output
    );
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
    assert_eq!(
        f.activations().last().map(String::as_str),
        Some(activated("1", &v1).as_str())
    );
    assert_eq!(status(&f)["deployed"]["build_id"], b1);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_flapping_hydra_changes_nothing_until_it_answers_well() {
    use hail_testkit::hydra::Override;
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    assert_eq!(f.hail.oneshot(&[], RUN).code(), Some(0));
    let (v2, b2) = f.release("2");
    let latest = f.hydra.default_latest_path();
    let failed_polls = |r: &hail_testkit::hail::Running| r.output().matches("poll failed").count();
    let answers = [
        (
            "HTTP 500",
            Override::respond(500, "text/plain", "Internal Server Error"),
        ),
        (
            "a timeout",
            Override::delayed(std::time::Duration::from_secs(5)),
        ),
        ("a closed connection", Override::close()),
        (
            "HTML",
            Override::respond(200, "text/html", "<html>maintenance</html>"),
        ),
    ];
    f.hydra.override_path(&latest, answers[0].1.clone());
    let mut running = f
        .hail
        .spawn(&["--poll-period", "1h", "--http-timeout", "1s"]);
    for (i, (what, answer)) in answers.into_iter().enumerate() {
        if i > 0 {
            f.hydra.override_path(&latest, answer);
            running.signal(libc::SIGHUP);
        }
        assert!(
            wait_until(RUN, || failed_polls(&running) > i),
            "{what}: {}",
            running.output()
        );
        // Nothing changed, hail runs on, and it does not retry at once (no busy loop).
        assert_eq!(
            f.profile_target().as_deref(),
            Some(v1.out_path.as_str()),
            "{what}"
        );
        let asked = f.hydra.requests_to(&latest).len();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert_eq!(
            f.hydra.requests_to(&latest).len(),
            asked,
            "{what}: polled again at once"
        );
        assert!(
            running.try_status().is_none(),
            "{what}: {}",
            running.output()
        );
    }
    // Hydra answers well again: the next poll deploys its build.
    f.hydra.clear_override(&latest);
    running.signal(libc::SIGHUP);
    assert!(
        wait_until(RUN, || f.profile_target().as_deref()
            == Some(v2.out_path.as_str())),
        "{}",
        running.output()
    );
    assert!(
        running.wait_for_output(&format!("deployed build {b2}"), RUN),
        "{}",
        running.output()
    );
    running.terminate(RUN);
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn an_agent_killed_while_a_pause_waits_for_it_loses_nothing() {
    let f = Fixture::new();
    let (v1, _) = f.release("1");
    let mut running = f.hail.spawn(&["--poll-period", "1h"]);
    assert!(
        wait_until(RUN, || f.profile_target().as_deref()
            == Some(v1.out_path.as_str())),
        "{}",
        running.output()
    );
    assert!(
        running.wait_for_output("deployed build", RUN),
        "{}",
        running.output()
    );
    // The agent cannot take the request (stopped), then is killed while `hail pause` waits.
    running.signal(libc::SIGSTOP);
    let dir = f.state_dir();
    let mut pause = std::process::Command::new(crate::fixture::HAIL);
    pause.args([
        "pause",
        "--state-dir",
        dir.to_str().unwrap(),
        "--reason",
        "maintenance",
    ]);
    let waiting = std::thread::spawn(move || pause.output());
    assert!(wait_until(RUN, || {
        std::fs::read_dir(dir.join("requests"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    }));
    running.signal(libc::SIGKILL);
    running.kill();
    let out = waiting.join().unwrap().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("stopped before taking the request"), "{said}");
    // The next hail applies it: paused, with its reason, and a new build waits.
    f.release("2");
    let r = f.hail.oneshot(&[], RUN);
    assert_eq!(r.code(), Some(8), "{}", r.output);
    let s = status(&f);
    assert_eq!(
        (&s["paused"], &s["pause_reason"]),
        (&Value::from(true), &Value::from("maintenance")),
        "{s}"
    );
    assert_eq!(f.profile_target().as_deref(), Some(v1.out_path.as_str()));
}

/// hail in a mount namespace of its own whose `/nix` is a small, empty file system: a Nix store
/// of its own, which a test can fill, or serve through a Nix daemon it stops and starts, without
/// touching the host's. `/proc/PID/root/nix` is that store, seen from outside.
fn spawn_with_own_store(f: &Fixture, extra: &[&str], env: &[(&str, &str)]) -> Running {
    spawn_with_own_store_and(f, "", extra, env)
}

/// As [`spawn_with_own_store`], running the shell lines `prelude` in the namespace first.
fn spawn_with_own_store_and(
    f: &Fixture,
    prelude: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let hail = f.hail.command(extra);
    let mut c = Command::new("unshare");
    c.env_clear();
    for (k, v) in hail.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.envs(env.iter().copied());
    c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=64m,mode=0755 hail-test-nix /nix && {prelude} exec \"$@\""
        ))
        .arg("sh")
        .arg(hail.get_program())
        .args(hail.get_args());
    Running::start(c)
}

/// After the realise of `v2` failed under hail (running in a store of its own): the profile still
/// at `v1` (build `b1`), hail still running, and `v2` not blamed.
fn realise_failed_and_kept(
    f: &Fixture,
    running: &mut Running,
    v1: &Published,
    b1: u64,
    v2: &Published,
) {
    assert!(
        running.wait_for_output(&format!("realising {} failed", v2.out_path), RUN),
        "{}",
        running.output()
    );
    assert_eq!(in_store(f).as_deref(), Some(v1.out_path.as_str()));
    assert_eq!(
        running.try_status(),
        None,
        "hail keeps running: {}",
        running.output()
    );
    let s = status(f);
    assert_eq!(s["deployed"]["build_id"], b1, "{s}");
    assert_eq!(
        s["known_bad"],
        Value::Array(vec![]),
        "not the build's fault: {s}"
    );
}

/// The store of a hail started by [`spawn_with_own_store`].
fn own_store(hail: &Running) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root/nix", hail.id()))
}

#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_namespaces),
    ignore = "needs root, Nix, mount, unshare and nsenter (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_full_nix_store_fails_the_realise_and_keeps_the_deployed_build() {
    let f = fixture();
    let (v1, b1) = f.release("1");
    let mut running = spawn_with_own_store(&f, &["--poll-period", "1h"], &[]);
    assert!(
        wait_until(RUN, || in_store(&f).as_deref()
            == Some(v1.out_path.as_str())),
        "{}",
        running.output()
    );
    let store = own_store(&running);
    assert!(store.join("store").join(&v1.out_path[11..]).exists());
    // The store's file system full: build 2 cannot be fetched.
    fill(&store);
    let (v2, _) = f.release("2");
    running.signal(libc::SIGHUP);
    realise_failed_and_kept(&f, &mut running, &v1, b1, &v2);
    // Nix says it as a failed write or SQLite's "disk I/O error"; hail says why.
    let said = running.output();
    assert!(
        said.contains("the Nix store's file system has only 0 B free"),
        "{said}"
    );
    // Room again: the next poll deploys build 2.
    std::fs::remove_file(store.join("fill")).unwrap();
    running.signal(libc::SIGHUP);
    assert!(
        wait_until(RUN, || in_store(&f).as_deref()
            == Some(v2.out_path.as_str())),
        "{}",
        running.output()
    );
    running.terminate(Duration::from_secs(30));
}

/// The store path the profile points at, read from its links alone (the store it is in may be
/// one the test cannot resolve paths in: [`spawn_with_own_store`]).
fn in_store(f: &Fixture) -> Option<String> {
    let mut at = f.hail.profile.clone();
    for _ in 0..8 {
        let next = std::fs::read_link(&at).ok()?;
        at = at.parent()?.join(next);
        if at.starts_with("/nix/store") {
            return Some(at.display().to_string());
        }
    }
    None
}

/// Kills `pid` and its children (a Nix daemon and its workers, as the kernel kills a unit's
/// cgroup).
fn kill_with_children(pid: i32) {
    let parent_of = |p: &str| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // After the command's name in parentheses: state, then the parent's pid.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let children: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|p| parent_of(p) == Some(pid))
        .filter_map(|p| p.parse().ok())
        .collect();
    for p in std::iter::once(pid).chain(children) {
        // SAFETY: kill has no memory-safety preconditions; the pids are the test's daemon's.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_namespaces),
    ignore = "needs root, Nix, mount, unshare and nsenter (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_nix_daemon_killed_mid_realise_fails_the_realise_and_keeps_the_deployed_build() {
    let f = fixture();
    let (v1, b1) = f.release("1");
    // hail talks to a Nix daemon in its own namespace, as on a host where it is not root (the
    // daemon itself opens the store).
    let env = [("NIX_REMOTE", "daemon")];
    let pid_file = f.tmp.path().join("daemon.pid");
    let start_daemon = format!(
        "mkdir -p /nix/var/nix/daemon-socket && \
         {{ env -u NIX_REMOTE nix-daemon </dev/null >/dev/null 2>&1 & echo $! > {}; }} &&",
        pid_file.display()
    );
    let mut running = spawn_with_own_store_and(&f, &start_daemon, &["--poll-period", "1h"], &env);
    assert!(
        wait_until(RUN, || pid_file.exists()),
        "{}",
        running.output()
    );
    let daemon: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(RUN, || in_store(&f).as_deref()
            == Some(v1.out_path.as_str())),
        "{}",
        running.output()
    );
    // Build 2 comes slowly from the cache; the daemon and its worker die while it does.
    f.cache.set_nar_delay(Duration::from_secs(3600));
    let (v2, _) = f.release("2");
    let nars = || {
        let asked = f.cache.requests();
        asked.iter().filter(|r| r.starts_with("/nar/")).count()
    };
    let before = nars();
    running.signal(libc::SIGHUP);
    assert!(wait_until(RUN, || nars() > before), "{}", running.output());
    kill_with_children(daemon);
    realise_failed_and_kept(&f, &mut running, &v1, b1, &v2);
    // The daemon back: the next poll deploys build 2.
    f.cache.set_nar_delay(Duration::ZERO);
    let mut again = Command::new("nsenter")
        .args(["-t", &running.id().to_string(), "-m", "--", "nix-daemon"])
        .env("NIX_CONFIG", f.cache.nix_config())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answers = || {
        Command::new("nsenter")
            .args(["-t", &running.id().to_string(), "-m", "--"])
            .args([
                "nix-store",
                "--store",
                "daemon",
                "-q",
                "--hash",
                &v1.out_path,
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(wait_until(RUN, answers), "the Nix daemon does not answer");
    running.signal(libc::SIGHUP);
    let deployed = wait_until(RUN, || {
        in_store(&f).as_deref() == Some(v2.out_path.as_str())
    });
    kill_with_children(again.id() as i32);
    let _ = again.wait();
    assert!(deployed, "{}", running.output());
    running.terminate(Duration::from_secs(30));
}
