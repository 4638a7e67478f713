//! The manager's system-test rig: a [`Rig`] whose hail instance `hail@manager` deploys sets of
//! hail instances built by `nix/manager.nix` (`nix/manager-profile.nix` here), each instance
//! deploying its own job (`nix/manager-instance-profile.nix`, whose scripts log to [`EVENTS`]).

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::cache::Signing;
use crate::container::field;
use crate::hydra::BuildSpec;
use crate::rig::Rig;

/// Generous bound for an apply with deployments on a busy 2-core machine.
pub const CONVERGE: Duration = Duration::from_secs(180);

/// Where the instances' `bin/activate` and `bin/deactivate` log, one line each.
pub const EVENTS: &str = "/var/lib/hail-test/events";
pub const MANAGER: &str = "hail@manager.service";

/// A [`Rig`] with the hail package the manager profiles are built with.
pub struct ManagerRig {
    rig: Rig,
    /// `<dir>/bin/hail`: the hail under test, as a package directory.
    package: PathBuf,
    _tmp: TempDir,
}

impl Deref for ManagerRig {
    type Target = Rig;

    fn deref(&self) -> &Rig {
        &self.rig
    }
}

impl ManagerRig {
    /// As [`Rig::new`]; `hail` is also the package of every instance.
    pub fn new(label: &str, hail: &Path) -> ManagerRig {
        let rig = Rig::new(label, hail);
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
            .arg(hail)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(hail, package.join("bin/hail")).unwrap();
        }
        ManagerRig {
            rig,
            package,
            _tmp: tmp,
        }
    }

    /// Publishes `manager-instance-profile.nix` for `instance` at `version` as the latest build of
    /// the job named after the instance.
    pub fn release_instance(&self, instance: &str, version: &str) -> String {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/manager-instance-profile.nix");
        #[rustfmt::skip]
        let args = [
            "--argstr", "instance", instance,
            "--argstr", "version", version,
            "--argstr", "nonce", &self.nonce,
        ];
        let p = self.cache.publish_nix(&file, &args);
        self.hydra
            .add_build(BuildSpec::succeeded(&p.out_path).job("hail", "test", instance));
        p.out_path
    }

    /// Settings of an instance deploying its own job: polls only at start and on reload;
    /// `extra` adds or replaces settings.
    pub fn instance(&self, job: &str, extra: Value) -> Value {
        let mut v = json!({"jobUri": self.job_uri(job), "pollPeriod": "1h"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// An instance set: each `(name, extra)` as [`ManagerRig::instance`] makes it, and the
    /// manager itself with its default settings unless it is named.
    pub fn set(&self, instances: &[(&str, Value)]) -> Value {
        let mut set = json!({ "manager": self.instance("manager", json!({})) });
        for (name, extra) in instances {
            set[*name] = self.instance(name, extra.clone());
        }
        set
    }

    /// Builds the manager profile of `instances` with nix/manager.nix, publishes it as the latest
    /// build of the job "manager"; returns its store path.
    pub fn release_manager(&self, instances: &Value) -> String {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/manager-profile.nix");
        let package = self.package.to_str().unwrap();
        let json = instances.to_string();
        #[rustfmt::skip]
        let args = [
            "--argstr", "hailPackage", package,
            "--argstr", "instancesJson", &json,
            "--argstr", "nonce", &self.nonce,
        ];
        // Kept in the host's store: the hail path is a source the .drv refers to, which
        // `nix-store --delete` refuses to delete; the container has its own store anyway.
        let p = self
            .cache
            .publish_nix_with(&file, &args, Signing::Trusted, false);
        self.hydra
            .add_build(BuildSpec::succeeded(&p.out_path).job("hail", "test", "manager"));
        p.out_path
    }

    /// Where every manager test starts: version 1 of each instance in `converged` but the
    /// manager released, the manager profile of `set` released, the manager bootstrapped as on
    /// any systemd distribution (its job in /etc/hail, then `systemctl start`), and the host
    /// converged at `converged`. Returns the manager profile's store path.
    pub fn bootstrap(&self, set: &Value, converged: &[&str]) -> String {
        for name in converged.iter().filter(|n| **n != "manager") {
            self.release_instance(name, "1");
        }
        let profile = self.release_manager(set);
        self.c.write_file(
            "/etc/hail/manager.env",
            format!(
                "HAIL_JOB_URI={}\nHAIL_POLL_PERIOD=1h\n",
                self.job_uri("manager")
            ),
        );
        self.c.systemctl_ok("start", MANAGER);
        self.wait_converged(converged);
        profile
    }

    /// Releases the manager profile of `set` and makes the manager poll now; returns the
    /// profile's store path.
    pub fn apply(&self, set: &Value) -> String {
        let profile = self.release_manager(set);
        self.c.systemctl_ok("reload", MANAGER);
        profile
    }

    /// The lines of [`EVENTS`] so far.
    pub fn events(&self) -> Vec<String> {
        self.c
            .read_file(EVENTS)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until [`EVENTS`] has that line.
    pub fn wait_event(&self, line: &str) {
        self.c
            .wait_for(&format!("{line:?} in {EVENTS}"), MANAGER, CONVERGE, |_| {
                self.events().iter().any(|l| l == line).then_some(())
            });
    }

    /// A property of `hail@<name>.service`.
    pub fn show(&self, name: &str, property: &str) -> String {
        self.c.show(&format!("hail@{name}.service"), property)
    }

    /// The manager's drop-in of an instance, if it has one.
    pub fn dropin(&self, name: &str) -> Option<String> {
        self.c.read_file(&format!(
            "/run/systemd/system/hail@{name}.service.d/hail-manager.conf"
        ))
    }

    /// Instances that carry the manager's drop-in, sorted.
    pub fn managed(&self) -> Vec<String> {
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

    /// Waits until the host is exactly at `names` (sorted), see [`ManagerRig::bootstrap`].
    pub fn wait_converged(&self, names: &[&str]) {
        let deadline = Instant::now() + CONVERGE;
        while let Some(why) = self.divergence(names) {
            assert!(
                Instant::now() < deadline,
                "not at {names:?} after {CONVERGE:?}: {why}\n--- manager:\n{}\n--- applies:\n{}\n\
                 --- instances:\n{}",
                self.c.unit_log(MANAGER),
                self.c.unit_log("hail-apply-*"),
                self.c.unit_log("hail@*")
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
    pub fn assert_applies_succeeded(&self) {
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
    pub fn applies_finished(&self) -> usize {
        self.c
            .unit_log(MANAGER)
            .matches("finished: the instance set is applied")
            .count()
    }

    /// The entries of the container's `/nix/var/nix/profiles/hail`.
    pub fn profile_links(&self) -> Vec<String> {
        self.c
            .sh("ls /nix/var/nix/profiles/hail 2>/dev/null || true")
            .lines()
            .map(str::to_string)
            .collect()
    }
}
