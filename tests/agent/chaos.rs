//! Fault injection: hail and every process it started are killed (SIGKILL, as the kernel kills a
//! unit's cgroup) at a random moment of a deployment of a good, an activation-failing or a
//! health-check-failing build (during its download, switch, activation, checks, rollback or
//! pruning), then started again; after every kill and restart the invariants below must hold.
//!
//! `HAIL_CHAOS_ROUNDS` rounds (default 9), from `HAIL_CHAOS_SEED` (default: the clock; printed,
//! so that a failure can be replayed). `scripts/chaos N` runs N rounds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::fixture::{Fixture, RUN, wait_until};
use hail_testkit::cache::Published;
use hail_testkit::hail::Running;

/// The options of every hail of the test: quick health checks, and pruning after each success.
const OPTIONS: [&str; 6] = [
    "--health-interval",
    "100ms",
    "--health-timeout",
    "1s",
    "--keep-generations",
    "3",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Good,
    ActivationFails,
    HealthCheckFails,
}

/// xorshift64*: enough randomness for choosing moments, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn killed_at_random_moments_hail_converges_and_keeps_its_promises() {
    let f = Fixture::new();
    let rounds = env_number("HAIL_CHAOS_ROUNDS").unwrap_or(9);
    let seed = env_number("HAIL_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    println!("chaos: {rounds} rounds, HAIL_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);

    // A good build deployed first: there is always something good to return to.
    let (first, _) = f.release_spec(&spec(&f, "0", Kind::Good));
    let r = f.hail.oneshot(&OPTIONS, RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    let mut good: Published = first;
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let mut violations = Vec::new();

    for round in 1..=rounds {
        let kind = match rng.below(3) {
            0 => Kind::Good,
            1 => Kind::ActivationFails,
            _ => Kind::HealthCheckFails,
        };
        let version = round.to_string();
        let (build, _) = f.release_spec(&spec(&f, &version, kind));
        // Killed once, and in half the rounds again while the next hail recovers.
        let kills = 1 + rng.below(2);
        let mut said = String::new();
        let mut first_kill = None;
        let mut delays = Vec::new();
        for _ in 0..kills {
            let mut running = f.hail.spawn(&with_poll_period(&OPTIONS));
            // Somewhere in the deployment (or the recovery): it takes about 0.1-1.5 s
            // (download, switch, activation, checks, rollback and re-activation, pruning).
            let delay = Duration::from_millis(rng.below(1500));
            delays.push(delay);
            std::thread::sleep(delay);
            kill_tree(&mut running);
            said.push_str(&running.output());
            first_kill.get_or_insert(count(&f, &version));
            check_not_dangling(&f, &mut violations, round);
            // Judged before the kill: never activated again.
            if known_bad(&f).contains(&build.out_path) {
                verdicts
                    .entry(version.clone())
                    .or_insert(count(&f, &version));
            }
        }
        let before = first_kill.unwrap_or_default();

        // Started again until the round is decided (a --oneshot finishes what was cut short).
        let mut outputs = said.clone();
        let mut decided = false;
        for _ in 0..3 {
            let r = f.hail.oneshot(&OPTIONS, RUN);
            outputs.push_str(&r.output);
            if matches!(r.code(), Some(0 | 7)) {
                decided = true;
                break;
            }
        }
        let context = format!(
            "round {round} ({kind:?}, killed after {delays:?}; replay with HAIL_CHAOS_SEED={seed})"
        );
        if !decided {
            violations.push(format!("{context}: hail did not converge:\n{outputs}"));
            continue;
        }
        let want = if kind == Kind::Good { &build } else { &good };
        check_converged(&f, want, &context, &outputs, &mut violations);
        if kind == Kind::Good {
            good = build;
        } else {
            // Each kill may cut its activation short, which runs once more after it.
            let after = count(&f, &version);
            if after > before + kills as usize {
                violations.push(format!(
                    "{context}: the bad build was activated {after} times, {before} before the \
                     first of {kills} kills"
                ));
            }
            verdicts.entry(version).or_insert(after);
        }
        // A bad build is never activated after its verdict.
        for (v, n) in &verdicts {
            if count(&f, v) != *n {
                violations.push(format!(
                    "{context}: bad build {v} activated after its verdict"
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "{} invariant violations in {rounds} rounds (HAIL_CHAOS_SEED={seed}):\n{}",
        violations.len(),
        violations.join("\n")
    );
    println!("chaos: {rounds} rounds, 0 invariant violations");
}

/// A test profile of `kind`; every activation and check takes a little time, so that kills land
/// inside them too.
fn spec(f: &Fixture, version: &str, kind: Kind) -> hail_testkit::cache::ProfileSpec {
    let s = f.spec(version).sleep(0.2);
    match kind {
        Kind::Good => s.health_check("sleep 0.1"),
        Kind::ActivationFails => s.exit_code(1),
        Kind::HealthCheckFails => s.health_check("sleep 0.1; exit 1"),
    }
}

fn with_poll_period(options: &[&'static str]) -> Vec<&'static str> {
    let mut all = vec!["--poll-period", "1h"];
    all.extend_from_slice(options);
    all
}

/// How many times `version`'s activation ran.
fn count(f: &Fixture, version: &str) -> usize {
    let prefix = format!("activated {version} ");
    f.activations()
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .count()
}

/// The profile, when it exists, resolves to a store path that exists.
fn check_not_dangling(f: &Fixture, violations: &mut Vec<String>, round: u64) {
    let link = &f.hail.profile;
    if link.symlink_metadata().is_ok() && !link.exists() {
        violations.push(format!("round {round}: the profile dangles after the kill"));
    }
}

/// After the round: the profile at `want`, whose activation ran last; `hail status` agrees; the
/// state file is valid and was never moved aside; no operator's change was inferred.
fn check_converged(
    f: &Fixture,
    want: &Published,
    context: &str,
    outputs: &str,
    violations: &mut Vec<String>,
) {
    let mut fail = |what: String| violations.push(format!("{context}: {what}"));
    if f.profile_target().as_deref() != Some(want.out_path.as_str()) {
        fail(format!(
            "the profile is at {:?}, not {}",
            f.profile_target(),
            want.out_path
        ));
    }
    let last = f.activations().last().cloned().unwrap_or_default();
    if !last.ends_with(&format!(" {}", want.out_path)) {
        fail(format!(
            "the last activation ({last}) is not the deployed build's"
        ));
    }
    let dir = state_dir(f);
    let status = f.hail.run_bare(
        &["status", "--state-dir", dir.to_str().unwrap(), "--json"],
        RUN,
    );
    match serde_json::from_str::<Value>(&status.output) {
        Ok(s) if s["deployed"]["store_path"] == want.out_path.as_str() => {}
        Ok(s) => fail(format!("hail status says {}", s["deployed"])),
        Err(e) => fail(format!("hail status --json: {e}: {}", status.output)),
    }
    if let Err(e) = std::fs::read(dir.join("state.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_slice::<Value>(&t).map_err(|e| e.to_string()))
    {
        fail(format!("state.json is not valid: {e}"));
    }
    let aside: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt"))
        .collect();
    if !aside.is_empty() {
        fail(format!("state.json moved aside: {aside:?}"));
    }
    if outputs.contains("by hand") || outputs.contains("manual-change") {
        fail("an operator's change was inferred where there was none".into());
    }
}

/// The store paths the saved state knows to be bad.
fn known_bad(f: &Fixture) -> Vec<String> {
    let state = std::fs::read(state_dir(f).join("state.json")).unwrap_or_default();
    let state: Value = serde_json::from_slice(&state).unwrap_or_default();
    let list = state["known_bad"].as_array().cloned().unwrap_or_default();
    list.iter()
        .filter_map(|k| k["store_path"].as_str().map(str::to_owned))
        .collect()
}

fn state_dir(f: &Fixture) -> std::path::PathBuf {
    let mut s = f.hail.profile.clone().into_os_string();
    s.push(".hail-state");
    s.into()
}

/// Kills hail and every process it started, as the kernel kills a cgroup: the whole tree is
/// stopped first (so that nothing forks past the kill), then killed.
fn kill_tree(hail: &mut Running) {
    let root = hail.id();
    let mut stopped = BTreeSet::new();
    loop {
        let tree = tree_of(root);
        let new: Vec<u32> = tree.difference(&stopped).copied().collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            signal(pid, libc::SIGSTOP);
            stopped.insert(pid);
        }
    }
    for pid in &stopped {
        signal(*pid, libc::SIGKILL);
    }
    hail.kill();
    // The killed children are reaped by init; wait until they are gone.
    let gone = wait_until(RUN, || stopped.iter().all(|p| crate::fixture::gone(*p)));
    assert!(gone, "processes of the killed hail remain: {stopped:?}");
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pids are the killed hail's tree.
    unsafe { libc::kill(pid as i32, sig) };
}

/// `root` and its descendants now.
fn tree_of(root: u32) -> BTreeSet<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut tree = BTreeSet::from([root]);
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if tree.insert(*c) {
                todo.push(*c);
            }
        }
    }
    tree
}

/// The parent pid from `/proc/PID/stat` (after the command, which may hold spaces).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}
