//! System tests of the manager: a hail instance (`hail@manager`) deploying a *set of hail
//! instances* built by `nix/manager.nix`, under a real systemd (a booted Debian 12 container),
//! from a Hydra-compatible server and a signed binary cache on the host's 127.0.0.1. The manager
//! is bootstrapped as on any systemd distribution (`/etc/hail/manager.env`, `systemctl start`) and
//! manages itself from then on; each instance deploys its own job (`testkit/nix/
//! manager-instance-profile.nix`, whose scripts log to /var/lib/hail-test/events).
//!
//! Root, Nix, debootstrap and systemd-nspawn are required: without them a test is skipped with a
//! printed reason, or fails when `CI=true`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hail_testkit::cache::{Cache, Signing};
use hail_testkit::container::{self, Container};
use hail_testkit::hydra::{BuildSpec, HydraServer};
use serde_json::{Value, json};
use tempfile::TempDir;

const HAIL: &str = env!("CARGO_BIN_EXE_hail");

/// Generous bound for an apply with deployments on a busy 2-core machine.
const CONVERGE: Duration = Duration::from_secs(180);

const EVENTS: &str = "/var/lib/hail-test/events";
const MANAGER: &str = "hail@manager.service";
const MSG_ACTIVATION_FAILED: &str = "5be39f6dd3a846e28ede5e841d6f7288";

struct Rig {
    c: Container,
    cache: Cache,
    hydra: HydraServer,
    nonce: String,
    /// `<dir>/bin/hail`: this build's hail, the package the manager profiles are built with.
    package: PathBuf,
    _tmp: TempDir,
}

impl Rig {
    fn new(label: &str) -> Option<Rig> {
        if !container::require() || !hail_testkit::prereq::require_nix() {
            return None;
        }
        let cache = Cache::start();
        let hydra = HydraServer::start();
        // The template unit and /usr/local/bin/hail: what the manager is bootstrapped with.
        let c = Container::boot_with_hail(label, Path::new(HAIL), &cache);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let nonce = format!("{label}-{}-{nanos}", std::process::id());
        let tmp = tempfile::Builder::new()
            .prefix("hail-manager-test-")
            .tempdir()
            .unwrap();
        let package = tmp.path().join("pkg");
        std::fs::create_dir_all(package.join("bin")).unwrap();
        // Debug symbols make the binary six times larger; the cache and the container need none.
        let stripped = Command::new("strip")
            .arg("-o")
            .arg(package.join("bin/hail"))
            .arg(HAIL)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(HAIL, package.join("bin/hail")).unwrap();
        }
        Some(Rig {
            c,
            cache,
            hydra,
            nonce,
            package,
            _tmp: tmp,
        })
    }

    fn job_uri(&self, job: &str) -> String {
        self.hydra.job_uri("hail", "test", job)
    }

    /// Publishes `manager-instance-profile.nix` for `instance` at `version` as the latest build of
    /// the job named after the instance.
    fn release_instance(&self, instance: &str, version: &str) -> String {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testkit/nix/manager-instance-profile.nix");
        let p = self.cache.publish_nix(
            &file,
            &[
                "--argstr",
                "instance",
                instance,
                "--argstr",
                "version",
                version,
                "--argstr",
                "nonce",
                &self.nonce,
            ],
        );
        self.hydra
            .add_build(BuildSpec::succeeded(&p.out_path).job("hail", "test", instance));
        p.out_path
    }

    /// Settings of an instance deploying its own job: polls only at start and on reload.
    fn instance(&self, job: &str, extra: Value) -> Value {
        let mut v = json!({"jobUri": self.job_uri(job), "pollPeriod": "1h"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// Builds the manager profile of `instances` with nix/manager.nix, publishes it as the latest
    /// build of the job "manager"; returns its store path.
    fn release_manager(&self, instances: &Value) -> String {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("testkit/nix/manager-profile.nix");
        let package = self.package.to_str().unwrap();
        let json = instances.to_string();
        // Kept in the host's store: the hail path is a source the .drv refers to, which
        // `nix-store --delete` refuses to delete; the container has its own store anyway.
        let p = self.cache.publish_nix_with(
            &file,
            &[
                "--argstr",
                "hailPackage",
                package,
                "--argstr",
                "instancesJson",
                &json,
                "--argstr",
                "nonce",
                &self.nonce,
            ],
            Signing::Trusted,
            false,
        );
        self.hydra
            .add_build(BuildSpec::succeeded(&p.out_path).job("hail", "test", "manager"));
        p.out_path
    }

    /// The bootstrap, as on any systemd distribution: the manager's job in /etc/hail, then start.
    fn start_manager(&self) {
        self.c.write_file(
            "/etc/hail/manager.env",
            format!(
                "HAIL_JOB_URI={}\nHAIL_POLL_PERIOD=1h\n",
                self.job_uri("manager")
            ),
        );
        let start = self.c.systemctl(&["start", MANAGER]);
        assert!(
            start.success(),
            "{}\n{}",
            start.stderr,
            self.c.unit_log(MANAGER)
        );
    }

    /// Makes the manager poll now.
    fn poll_manager(&self) {
        let reload = self.c.systemctl(&["reload", MANAGER]);
        assert!(
            reload.success(),
            "{}\n{}",
            reload.stderr,
            self.c.unit_log(MANAGER)
        );
    }

    fn events(&self) -> Vec<String> {
        self.c
            .read_file(EVENTS)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_event(&self, line: &str) {
        self.c
            .wait_for(&format!("{line:?} in {EVENTS}"), MANAGER, CONVERGE, |_| {
                self.events().iter().any(|l| l == line).then_some(())
            });
    }

    fn show(&self, name: &str, property: &str) -> String {
        self.c.show(&format!("hail@{name}.service"), property)
    }

    fn dropin(&self, name: &str) -> Option<String> {
        self.c.read_file(&format!(
            "/run/systemd/system/hail@{name}.service.d/hail-manager.conf"
        ))
    }

    /// Instances that carry the manager's drop-in.
    fn managed(&self) -> Vec<String> {
        let out = self
            .c
            .sh("cd /run/systemd/system && for d in hail@*.service.d; do \
             [ -e \"$d/hail-manager.conf\" ] && echo \"$d\"; done; true");
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("hail@")?.strip_suffix(".service.d"))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// The configuration id the instance's running process was started with.
    fn running_config(&self, name: &str) -> Option<String> {
        let pid = self.show(name, "MainPID");
        let environ = self
            .c
            .try_exec(&["cat", &format!("/proc/{pid}/environ")])
            .stdout;
        environ
            .split('\0')
            .find_map(|kv| kv.strip_prefix("HAIL_MANAGER_CONFIG=").map(str::to_string))
    }

    /// Why the host is not (yet) exactly at `names`, or `None`: every instance active and running
    /// the configuration its drop-in describes, no other managed instance, no apply running.
    fn divergence(&self, names: &[&str]) -> Option<String> {
        let managed = self.managed();
        if managed != names {
            return Some(format!("managed instances {managed:?}"));
        }
        let applying = self.c.sh(
            "systemctl list-units --plain --no-legend --state=activating,active 'hail-apply-*'",
        );
        if !applying.trim().is_empty() {
            return Some(format!("an apply is running: {applying}"));
        }
        for name in names {
            let state = self.show(name, "ActiveState");
            if state != "active" {
                return Some(format!("hail@{name} is {state}"));
            }
            let dropin = self.dropin(name).unwrap_or_default();
            let running = self.running_config(name).unwrap_or_default();
            if running.is_empty() || !dropin.contains(&format!("HAIL_MANAGER_CONFIG={running}\"")) {
                return Some(format!(
                    "hail@{name} runs configuration {running:?}, its drop-in:\n{dropin}"
                ));
            }
        }
        None
    }

    fn wait_converged(&self, names: &[&str]) {
        let deadline = Instant::now() + CONVERGE;
        while let Some(why) = self.divergence(names) {
            assert!(
                Instant::now() < deadline,
                "not at {names:?} after {CONVERGE:?}: {why}\n--- manager:\n{}\n--- applies:\n{}",
                self.c.unit_log(MANAGER),
                self.c.unit_log("hail-apply-*")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Journal lines of the apply units, per unit (systemd's own lines about them included).
    fn apply_units(&self) -> BTreeMap<String, Vec<String>> {
        let mut units: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in self.c.journal(&["-u", "hail-apply-*"]) {
            let unit = field(&entry, "UNIT")
                .or_else(|| field(&entry, "_SYSTEMD_UNIT"))
                .unwrap_or_default()
                .to_string();
            let message = field(&entry, "MESSAGE").unwrap_or_default().to_string();
            units.entry(unit).or_default().push(message);
        }
        units
    }

    /// Every apply unit so far ended successfully (none is left failed).
    fn assert_applies_succeeded(&self) {
        let units = self.apply_units();
        assert!(!units.is_empty(), "no apply unit in the journal");
        for (unit, lines) in &units {
            assert!(unit.starts_with("hail-apply-manager-"), "{unit}");
            assert!(
                lines.iter().any(|l| l.contains("Deactivated successfully")),
                "{unit} did not end successfully:\n{}",
                lines.join("\n")
            );
            assert!(
                !lines.iter().any(|l| l.contains("Failed with result")),
                "{unit}:\n{}",
                lines.join("\n")
            );
        }
        let failed = self
            .c
            .sh("systemctl list-units --plain --no-legend --failed 'hail-apply-*'");
        assert!(failed.trim().is_empty(), "{failed}");
    }

    /// How many applies the manager's activations saw finish (its activation output, relayed
    /// by hail into the manager's journal).
    fn applies_finished(&self) -> usize {
        self.c
            .unit_log(MANAGER)
            .matches("finished: the instance set is applied")
            .count()
    }

    fn profile_links(&self) -> Vec<String> {
        self.c
            .sh("ls /nix/var/nix/profiles/hail 2>/dev/null || true")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn field<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    entry.get(name).and_then(Value::as_str)
}

/// A set of two instances (and the manager itself) deployed; then a new set adds one, changes
/// one and removes one. An instance that the system configures under /etc (as NixOS does) is
/// never touched, whether the set names it or not.
#[test]
fn manager_deploys_adds_changes_and_removes_instances() {
    let Some(rig) = Rig::new("mgr-set") else {
        return;
    };
    let c = &rig.c;

    // A system-owned instance: a drop-in under /etc, as NixOS's services.hail.sys writes.
    rig.release_instance("sys", "1");
    c.write_file(
        "/etc/systemd/system/hail@sys.service.d/overrides.conf",
        format!(
            "[Service]\nEnvironment=HAIL_JOB_URI={}\nEnvironment=HAIL_POLL_PERIOD=1h\n",
            rig.job_uri("sys")
        ),
    );
    c.daemon_reload();
    assert!(c.systemctl(&["start", "hail@sys.service"]).success());
    rig.wait_event("activated sys 1");
    let sys_pid = rig.show("sys", "MainPID");

    c.write_file_mode(
        "/etc/hail/b.netrc",
        "machine 127.0.0.1 login u password p\n",
        0o600,
    );
    rig.release_instance("a", "1");
    rig.release_instance("b", "1");
    let set1 = json!({
        "manager": rig.instance("manager", json!({})),
        "a": rig.instance("a", json!({})),
        "b": rig.instance("b", json!({"netrcFile": "/etc/hail/b.netrc"})),
        "sys": rig.instance("sys", json!({"pollPeriod": "2h"})),
    });
    rig.release_manager(&set1);
    rig.start_manager();

    rig.wait_converged(&["a", "b", "manager"]);
    rig.wait_event("activated a 1");
    rig.wait_event("activated b 1");
    // b got its netrc as a credential.
    assert_eq!(
        c.exec(&["cat", "/run/credentials/hail@b.service/netrc"]),
        "machine 127.0.0.1 login u password p\n"
    );
    // The system's instance was left alone, with a word in the apply's journal.
    assert_eq!(rig.dropin("sys"), None);
    assert_eq!(rig.show("sys", "MainPID"), sys_pid);
    let skipped = c.journal(&["-u", "hail-apply-*", "HAIL_INSTANCE=sys"]);
    assert!(
        skipped.iter().any(|e| field(e, "MESSAGE")
            .unwrap_or_default()
            .contains("configured by the system")),
        "{skipped:#?}"
    );
    let manager_pid = rig.show("manager", "MainPID");
    let b_pid = rig.show("b", "MainPID");

    // The second set: c added, b changed, a removed (and sys no longer named).
    rig.release_instance("c", "1");
    let set2 = json!({
        "manager": rig.instance("manager", json!({})),
        "b": rig.instance("b", json!({"netrcFile": "/etc/hail/b.netrc", "pollPeriod": "2h"})),
        "c": rig.instance("c", json!({})),
    });
    rig.release_manager(&set2);
    rig.poll_manager();

    rig.wait_converged(&["b", "c", "manager"]);
    rig.wait_event("activated c 1");
    // a: stopped, its bin/deactivate ran, its profile deleted, gone from systemd's list.
    rig.wait_event("deactivated a 1");
    assert_eq!(rig.show("a", "ActiveState"), "inactive");
    let units = c.sh("systemctl list-units --plain --no-legend 'hail@*'");
    assert!(!units.contains("hail@a.service"), "{units}");
    assert!(units.contains("hail@c.service"), "{units}");
    let links = rig.profile_links();
    assert!(
        !links.iter().any(|l| l == "a" || l.starts_with("a-")),
        "{links:?}"
    );
    assert!(links.iter().any(|l| l == "b"), "{links:?}");
    // b: restarted with its new settings.
    assert_ne!(rig.show("b", "MainPID"), b_pid);
    assert!(rig.show("b", "Environment").contains("HAIL_POLL_PERIOD=2h"));
    // Unchanged: left alone.
    assert_eq!(rig.show("manager", "MainPID"), manager_pid);
    // Never the system's.
    assert_eq!(rig.show("sys", "MainPID"), sys_pid);
    assert_eq!(rig.show("sys", "ActiveState"), "active");

    rig.assert_applies_succeeded();
    let done = c.journal(&["HAIL_EVENT=apply-done"]);
    assert!(done.len() >= 3, "{done:#?}");
}

/// A set that changes the manager's own configuration: the manager restarts, the activation
/// that restarted it completes (in its own transient unit), and every instance ends configured.
#[test]
fn manager_restarts_itself_and_its_activation_completes() {
    let Some(rig) = Rig::new("mgr-self") else {
        return;
    };
    let c = &rig.c;
    rig.release_instance("a", "1");
    let set1 = json!({
        "manager": rig.instance("manager", json!({})),
        "a": rig.instance("a", json!({})),
    });
    let m1 = rig.release_manager(&set1);
    rig.start_manager();
    rig.wait_converged(&["a", "manager"]);
    assert_eq!(
        c.exec(&["readlink", "-f", "/nix/var/nix/profiles/hail/manager"])
            .trim(),
        m1
    );
    let manager_pid = rig.show("manager", "MainPID");
    let finished_before = rig.applies_finished();

    let set2 = json!({
        "manager": rig.instance("manager", json!({"pollPeriod": "2h"})),
        "a": rig.instance("a", json!({"pollPeriod": "2h"})),
    });
    let m2 = rig.release_manager(&set2);
    rig.poll_manager();

    c.wait_for("the manager to restart", MANAGER, CONVERGE, |_| {
        (rig.show("manager", "MainPID") != manager_pid
            && rig.show("manager", "ActiveState") == "active")
            .then_some(())
    });
    rig.wait_converged(&["a", "manager"]);
    assert!(
        rig.show("manager", "Environment")
            .contains("HAIL_POLL_PERIOD=2h")
    );
    assert!(rig.show("a", "Environment").contains("HAIL_POLL_PERIOD=2h"));
    assert_eq!(
        c.exec(&["readlink", "-f", "/nix/var/nix/profiles/hail/manager"])
            .trim(),
        m2
    );

    // The activation that restarted the manager completed: the old manager saw its apply unit
    // finish (then stopped), the new one's start-up apply found nothing left to do.
    let finished = rig.applies_finished();
    assert!(finished >= finished_before + 2, "{}", c.unit_log(MANAGER));
    rig.assert_applies_succeeded();
    let log = c.unit_log(MANAGER);
    assert!(
        c.journal(&[
            "-u",
            MANAGER,
            &format!("MESSAGE_ID={MSG_ACTIVATION_FAILED}")
        ])
        .is_empty(),
        "{log}"
    );
    assert!(c.journal(&["HAIL_EVENT=apply-failed"]).is_empty(), "{log}");
    // Its stop did not wait for a timeout (the restart was queued, not waited for).
    assert!(
        !log.contains("timed out") && !log.contains("Killing process"),
        "{log}"
    );
}

/// The manager and its apply are killed in the middle of a removal; the manager's next start
/// re-runs the activation of its profile, which finishes the removal and converges.
#[test]
fn interrupted_apply_converges_at_the_next_start() {
    let Some(rig) = Rig::new("mgr-kill") else {
        return;
    };
    let c = &rig.c;
    rig.release_instance("a", "1");
    rig.release_instance("gone", "1");
    let set1 = json!({
        "manager": rig.instance("manager", json!({})),
        "a": rig.instance("a", json!({})),
        "gone": rig.instance("gone", json!({})),
    });
    rig.release_manager(&set1);
    rig.start_manager();
    rig.wait_converged(&["a", "gone", "manager"]);

    // gone's bin/deactivate will hang the first time.
    c.write_file("/var/lib/hail-test/slow-deactivate-gone", "");
    rig.release_instance("c", "1");
    let set2 = json!({
        "manager": rig.instance("manager", json!({})),
        "a": rig.instance("a", json!({"pollPeriod": "2h"})),
        "c": rig.instance("c", json!({})),
    });
    rig.release_manager(&set2);
    rig.poll_manager();
    rig.wait_event("deactivating gone 1");

    // Both die mid-way: the manager (and so the activation waiting for its apply) and the apply.
    let apply = c.sh("systemctl list-units --plain --no-legend --state=active 'hail-apply-*'");
    let apply_unit = apply
        .split_whitespace()
        .next()
        .expect("an apply unit is running")
        .to_string();
    for unit in [MANAGER, apply_unit.as_str()] {
        let kill = c.systemctl(&["kill", "--kill-who=main", "--signal=SIGKILL", unit]);
        assert!(
            kill.success(),
            "kill {unit}: {}{}",
            kill.stdout,
            kill.stderr
        );
    }
    c.wait_for("the apply to die", &apply_unit, CONVERGE, |c| {
        (c.show(&apply_unit, "ActiveState") == "failed").then_some(())
    });
    assert_eq!(c.show(&apply_unit, "Result"), "signal");
    // Half-way: gone is stopped but still configured, c not configured yet.
    assert!(rig.dropin("gone").is_some());
    assert_eq!(rig.dropin("c"), None);

    // The next start (here by hand; Restart=on-failure would do it too).
    c.systemctl(&["reset-failed", &apply_unit]);
    let start = c.systemctl(&["start", MANAGER]);
    assert!(start.success(), "{}\n{}", start.stderr, c.unit_log(MANAGER));
    rig.wait_converged(&["a", "c", "manager"]);
    rig.wait_event("deactivated gone 1");
    rig.wait_event("activated c 1");
    assert!(rig.show("a", "Environment").contains("HAIL_POLL_PERIOD=2h"));
    let links = rig.profile_links();
    assert!(
        !links.iter().any(|l| l == "gone" || l.starts_with("gone-")),
        "{links:?}"
    );
}

/// A set with an instance that cannot start: the apply reports it and fails, the manager's hail
/// rolls its profile back, and the previous set is applied again (the new instance removed, the
/// changed one back to its old settings).
#[test]
fn a_set_that_cannot_start_is_rolled_back() {
    let Some(rig) = Rig::new("mgr-bad") else {
        return;
    };
    let c = &rig.c;
    rig.release_instance("a", "1");
    let set1 = json!({
        "manager": rig.instance("manager", json!({})),
        "a": rig.instance("a", json!({})),
    });
    let m1 = rig.release_manager(&set1);
    rig.start_manager();
    rig.wait_converged(&["a", "manager"]);

    // "bad" runs a hail that is not there: its start fails (status 203/EXEC).
    let set2 = json!({
        "manager": rig.instance("manager", json!({})),
        "a": rig.instance("a", json!({"pollPeriod": "2h"})),
        "bad": rig.instance("bad", json!({"package": "/nix/store/00000000000000000000000000000000-missing"})),
    });
    rig.release_manager(&set2);
    rig.poll_manager();

    let failed = format!("MESSAGE_ID={MSG_ACTIVATION_FAILED}");
    c.wait_for("the activation to fail", MANAGER, CONVERGE, |c| {
        (!c.journal(&["-u", MANAGER, &failed]).is_empty()).then_some(())
    });
    rig.wait_converged(&["a", "manager"]);
    assert_eq!(
        c.exec(&["readlink", "-f", "/nix/var/nix/profiles/hail/manager"])
            .trim(),
        m1
    );
    assert!(rig.show("a", "Environment").contains("HAIL_POLL_PERIOD=1h"));
    assert_eq!(rig.dropin("bad"), None);
    // The manager's journal says why (the apply's own lines, repeated), the failed apply unit
    // stays listed for the operator.
    let log = c.unit_log(MANAGER);
    assert!(log.contains("hail@bad did not start"), "{log}");
    let failed_units = c.sh("systemctl list-units --plain --no-legend --failed 'hail-apply-*'");
    assert_eq!(failed_units.lines().count(), 1, "{failed_units}");
}

/// After a reboot /run is empty: only the manager starts (from /etc/hail/manager.env), its
/// start-up activation writes every drop-in again, starts every instance, and restarts the
/// manager once with the set's settings.
#[test]
fn after_a_reboot_the_managers_start_restores_the_set() {
    let Some(rig) = Rig::new("mgr-boot") else {
        return;
    };
    let c = &rig.c;
    rig.release_instance("a", "1");
    rig.release_instance("b", "1");
    let set = json!({
        "manager": rig.instance("manager", json!({"pollPeriod": "2h"})),
        "a": rig.instance("a", json!({})),
        "b": rig.instance("b", json!({})),
    });
    rig.release_manager(&set);
    rig.start_manager();
    rig.wait_converged(&["a", "b", "manager"]);

    // What a reboot leaves: the profiles and /etc, no unit running, nothing in /run.
    c.sh("systemctl stop 'hail@*'");
    c.sh("rm -r /run/systemd/system/hail@*.service.d && systemctl daemon-reload");
    assert!(rig.managed().is_empty());
    assert!(
        !rig.show("manager", "Environment")
            .contains("HAIL_POLL_PERIOD")
    );

    // The start-up activation restarts the starting manager (systemd merges the restart into the
    // running start job).
    c.systemctl(&["start", MANAGER]);
    rig.wait_converged(&["a", "b", "manager"]);
    assert!(
        rig.show("manager", "Environment")
            .contains("HAIL_POLL_PERIOD=2h")
    );
    rig.assert_applies_succeeded();
}
