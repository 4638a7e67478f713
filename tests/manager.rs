//! System tests of the manager: a hail instance (`hail@manager`) deploying a *set of hail
//! instances* built by `nix/manager.nix`, under a real systemd (a booted Debian 12 container),
//! from a Hydra-compatible server and a signed binary cache on the host's 127.0.0.1. The manager
//! is bootstrapped as on any systemd distribution (`/etc/hail/manager.env`, `systemctl start`) and
//! manages itself from then on; each instance deploys its own job (`testkit/nix/
//! manager-instance-profile.nix`, whose scripts log to /var/lib/hail-test/events).
//!
//! Root, Nix, debootstrap and systemd-nspawn are required: without them a test fails, naming what
//! is missing (see `hail_testkit::prereq`).

use std::path::Path;

use hail_testkit::container::field;
use hail_testkit::manager::{CONVERGE, MANAGER, ManagerRig};
use serde_json::json;

const HAIL: &str = env!("CARGO_BIN_EXE_hail");

const MSG_ACTIVATION_FAILED: &str = "5be39f6dd3a846e28ede5e841d6f7288";

fn rig(label: &str) -> ManagerRig {
    ManagerRig::new(label, Path::new(HAIL))
}

/// A set of two instances (and the manager itself) deployed; then a new set adds one, changes
/// one and removes one. An instance that the system configures under /etc (as NixOS does) is
/// never touched, whether the set names it or not.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn manager_deploys_adds_changes_and_removes_instances() {
    let rig = rig("mgr-set");
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
    let set1 = rig.set(&[
        ("a", json!({})),
        ("b", json!({"netrcFile": "/etc/hail/b.netrc"})),
        ("sys", json!({"pollPeriod": "2h"})),
    ]);
    rig.bootstrap(&set1, &["a", "b", "manager"]);
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

    // The second set: c added, b changed, a removed (and sys no longer named). b's new settings
    // are ones the NixOS module accepts and the manager once refused: a boolean, a multi-line
    // environment value, a netrc path with a space and a `%`.
    rig.release_instance("c", "1");
    c.write_file_mode(
        "/etc/hail/b 100%.netrc",
        "machine 127.0.0.1 login u2 password p2\n",
        0o600,
    );
    let set2 = rig.set(&[
        (
            "b",
            json!({"netrcFile": "/etc/hail/b 100%.netrc", "pollPeriod": "2h", "allowDowngrade": true,
                   "environment": {"NIX_CONFIG": "connect-timeout = 5\nstalled-download-timeout = 30"}}),
        ),
        ("c", json!({})),
    ]);
    rig.apply(&set2);

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
    let environment = rig.show("b", "Environment");
    for setting in [
        "HAIL_POLL_PERIOD=2h",
        "HAIL_ALLOW_DOWNGRADE=true",
        "connect-timeout = 5",
    ] {
        assert!(environment.contains(setting), "{setting}: {environment}");
    }
    assert_eq!(rig.show("b", "ActiveState"), "active");
    assert_eq!(
        c.exec(&["cat", "/run/credentials/hail@b.service/netrc"]),
        "machine 127.0.0.1 login u2 password p2\n"
    );
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
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn manager_restarts_itself_and_its_activation_completes() {
    let rig = rig("mgr-self");
    let c = &rig.c;
    let set1 = rig.set(&[("a", json!({}))]);
    let m1 = rig.bootstrap(&set1, &["a", "manager"]);
    assert_eq!(
        c.exec(&["readlink", "-f", "/nix/var/nix/profiles/hail/manager"])
            .trim(),
        m1
    );
    let manager_pid = rig.show("manager", "MainPID");
    let finished_before = rig.applies_finished();

    let set2 = rig.set(&[
        ("manager", json!({"pollPeriod": "2h"})),
        ("a", json!({"pollPeriod": "2h"})),
    ]);
    let m2 = rig.apply(&set2);

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
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn interrupted_apply_converges_at_the_next_start() {
    let rig = rig("mgr-kill");
    let c = &rig.c;
    let set1 = rig.set(&[("a", json!({})), ("gone", json!({}))]);
    rig.bootstrap(&set1, &["a", "gone", "manager"]);

    // gone's bin/deactivate waits until the test lets it go on: the removal is half-way for as
    // long as the test looks, whether or not Restart=on-failure starts the manager again meanwhile.
    let hold = "/var/lib/hail-test/hold-deactivate-gone";
    c.write_file(hold, "");
    rig.release_instance("c", "1");
    let set2 = rig.set(&[("a", json!({"pollPeriod": "2h"})), ("c", json!({}))]);
    rig.apply(&set2);
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

    // The next start (here by hand; Restart=on-failure may already be at it).
    c.exec(&["rm", hold]);
    c.systemctl(&["reset-failed", &apply_unit]);
    c.systemctl_ok("start", MANAGER);
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
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_set_that_cannot_start_is_rolled_back() {
    let rig = rig("mgr-bad");
    let c = &rig.c;
    let set1 = rig.set(&[("a", json!({}))]);
    let m1 = rig.bootstrap(&set1, &["a", "manager"]);

    // "bad" runs a hail that is not there: its start fails (status 203/EXEC).
    let set2 = rig.set(&[
        ("a", json!({"pollPeriod": "2h"})),
        (
            "bad",
            json!({"package": "/nix/store/00000000000000000000000000000000-missing"}),
        ),
    ]);
    rig.apply(&set2);

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
    let why = || {
        let units = failed_units
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .chain(["hail@a.service", "hail@bad.service"]);
        units.map(|u| c.unit_log(u)).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(
        failed_units.lines().count(),
        1,
        "{failed_units}\n{}\n{log}",
        why()
    );
}

/// systemd failing to set up an instance's process (here: its executable is not there the first
/// time, status 203/EXEC; under load, a cgroup not yet torn down gives 219/CGROUP) is not the
/// instance's doing: the apply starts it once more, and the set is applied.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn an_instance_systemd_could_not_set_up_is_started_once_more() {
    let rig = rig("mgr-setup");
    let c = &rig.c;
    let set1 = rig.set(&[("a", json!({}))]);
    rig.bootstrap(&set1, &["a", "manager"]);

    // An operator's own drop-in beside the manager's: the executable appears when the first start
    // has failed (ExecStopPost= runs after a failed start too).
    c.write_file(
        "/run/systemd/system/hail@b.service.d/zz-once.conf",
        "[Service]\nExecStart=\nExecStart=/run/hail-once/hail\n\
         ExecStopPost=/bin/sh -c 'mkdir -p /run/hail-once; ln -sf /usr/local/bin/hail /run/hail-once/hail'\n",
    );
    rig.release_instance("b", "1");
    let set2 = rig.set(&[("a", json!({})), ("b", json!({}))]);
    rig.apply(&set2);
    rig.wait_converged(&["a", "b", "manager"]);
    rig.wait_event("activated b 1");
    // Said in the apply's own journal (the manager repeats it only when an apply fails).
    let log = c.unit_log("hail-apply-*");
    assert!(
        log.contains("systemd could not start hail@b (exit status 203); trying once more"),
        "{log}"
    );
    let failed_units = c.sh("systemctl list-units --plain --no-legend --failed 'hail-apply-*'");
    assert_eq!(failed_units.trim(), "", "{failed_units}");
}

/// After a reboot /run is empty: only the manager starts (from /etc/hail/manager.env), its
/// start-up activation writes every drop-in again, starts every instance, and restarts the
/// manager once with the set's settings.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn after_a_reboot_the_managers_start_restores_the_set() {
    let rig = rig("mgr-boot");
    let c = &rig.c;
    let set = rig.set(&[
        ("manager", json!({"pollPeriod": "2h"})),
        ("a", json!({})),
        ("b", json!({})),
    ]);
    rig.bootstrap(&set, &["a", "b", "manager"]);

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
