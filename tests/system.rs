//! System tests: the real hail binary under a real systemd (a booted Debian 12 container), run as
//! the shipped `hail@.service`, deploying from a Hydra-compatible server and a signed binary cache
//! on the host's 127.0.0.1 into the container's own, empty Nix store. Everything is checked through
//! systemd's own tools: `systemctl start/reload/stop/show`, `journalctl`.
//!
//! Each test boots one container (about a second); the Debian tree is made once by debootstrap
//! (see `hail_testkit::container`). Root, Nix, debootstrap and systemd-nspawn are required: without
//! them a test fails, naming what is missing (see `hail_testkit::prereq`).

use std::path::Path;
use std::time::{Duration, Instant};

use hail_testkit::cache::Published;
use hail_testkit::catalog;
use hail_testkit::container::{Container, field};
use hail_testkit::hydra::BuildSpec;
use hail_testkit::rig::Rig;
use serde_json::Value;

const HAIL: &str = env!("CARGO_BIN_EXE_hail");

/// Generous bound for one deployment (substitute, switch, activate) on a busy 2-core machine.
const DEPLOY: Duration = Duration::from_secs(120);

const MSG_DEPLOYED: &str = "35afcec8bcfb4db0ab3acb30a8cead66";
const MSG_ACTIVATION_FAILED: &str = "5be39f6dd3a846e28ede5e841d6f7288";
const MSG_POLL_FAILED: &str = "ec2149355bc34fe19a8fc00de4588794";
const MSG_DEPLOY_FAILED: &str = "c304e6df32644e788062535ba3a6c98b";
const MSG_HEALTH_CHECK_FAILED: &str = "4c2d7e91a0b34f58a6e3d9c1b7f05e28";
const MSG_MANUAL_CHANGE: &str = "9a41f4d3b2c84e0f8d6e1c7b5a3f2e90";
const MSG_STATE_RESET: &str = "e3c0a8b5d7f14a2c9b6e4d1f0a8c7b35";
/// systemd's "a unit's process exited" (`EXIT_CODE=`, `EXIT_STATUS=`).
const MSG_PROCESS_EXIT: &str = "98e322203f7a4ed290d09fe03c09fe15";

/// While this file exists in the container, `bin/activate` of `service-profile.nix` holds (after
/// creating [`HELD`]).
const HOLD: &str = "/var/lib/hail-demo/hold";
const HELD: &str = "/var/lib/hail-demo/held";

fn rig(label: &str) -> Rig {
    Rig::new(label, Path::new(HAIL))
}

/// What these tests do with a [`Rig`]: the demo service's profiles and the instances' settings.
trait ServiceRig {
    fn publish(&self, version: &str, activate_exit: i32) -> Published;
    fn release(&self, version: &str, activate_exit: i32) -> (Published, u64);
    fn configure(&self, instance: &str, extra: &str);
    fn configure_job(&self, instance: &str, job_uri: &str, extra: &str);
    fn show(&self, unit: &str, property: &str) -> String;
    fn wait_status(&self, unit: &str, needle: &str, timeout: Duration) -> String;
    fn wait_journal(&self, unit: &str, matches: &[&str], count: usize) -> Vec<Value>;
    fn profile_target(&self, profile: &str) -> String;
    fn activations(&self) -> Vec<String>;
    fn assert_demo(&self, version: &str);
    fn hail(&self, args: &[&str]) -> String;
    fn status_json(&self, args: &[&str]) -> Value;
}

impl ServiceRig for Rig {
    /// Builds `testkit/nix/service-profile.nix` at `version` and publishes it to the cache; its
    /// `bin/activate` exits with `activate_exit`.
    fn publish(&self, version: &str, activate_exit: i32) -> Published {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("testkit/nix/service-profile.nix");
        let exit = activate_exit.to_string();
        #[rustfmt::skip]
        let args = [
            "--argstr", "version", version,
            "--argstr", "nonce", &self.nonce,
            "--argstr", "activateExit", &exit,
        ];
        self.cache.publish_nix(&file, &args)
    }

    /// Publishes a profile and makes it the job's latest successful build; returns its build id.
    fn release(&self, version: &str, activate_exit: i32) -> (Published, u64) {
        let p = self.publish(version, activate_exit);
        let id = self.hydra.add_build(BuildSpec::succeeded(&p.out_path));
        (p, id)
    }

    /// `/etc/hail/NAME.env` deploying the default job (see [`ServiceRig::configure_job`]).
    fn configure(&self, instance: &str, extra: &str) {
        self.configure_job(instance, &self.hydra.default_job_uri(), extra);
    }

    /// `/etc/hail/NAME.env`: the job, a poll period long enough that only a reload polls, and
    /// `extra` lines.
    fn configure_job(&self, instance: &str, job_uri: &str, extra: &str) {
        let env = format!("HAIL_JOB_URI={job_uri}\nHAIL_POLL_PERIOD=1h\nRUST_LOG=info\n{extra}");
        self.c.write_file(&format!("/etc/hail/{instance}.env"), env);
    }

    fn show(&self, unit: &str, property: &str) -> String {
        self.c.show(unit, property)
    }

    /// Waits until the unit's `StatusText` contains `needle`; returns it.
    fn wait_status(&self, unit: &str, needle: &str, timeout: Duration) -> String {
        self.c.wait_for(
            &format!("StatusText of {unit} to contain {needle:?}"),
            unit,
            timeout,
            |c| {
                let s = c.show(unit, "StatusText");
                s.contains(needle).then_some(s)
            },
        )
    }

    /// Waits for journal entries matching `matches` (journalctl `FIELD=value` arguments).
    fn wait_journal(&self, unit: &str, matches: &[&str], count: usize) -> Vec<Value> {
        self.c.wait_for(
            &format!("{count} journal entries {matches:?}"),
            unit,
            DEPLOY,
            |c| {
                let entries = c.journal(matches);
                (entries.len() >= count).then_some(entries)
            },
        )
    }

    /// Where a profile points, inside the container.
    fn profile_target(&self, profile: &str) -> String {
        self.c.exec(&["readlink", "-f", profile]).trim().to_string()
    }

    /// The lines the profiles' `bin/activate` wrote so far.
    fn activations(&self) -> Vec<String> {
        let text = self
            .c
            .read_file("/var/lib/hail-demo/activations")
            .unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }

    /// The deployed demo service must be running the given version.
    fn assert_demo(&self, version: &str) {
        assert_eq!(
            self.show("hail-demo.service", "ActiveState"),
            "active",
            "{}",
            self.c.unit_log("hail-demo.service")
        );
        assert_eq!(
            self.show("hail-demo.service", "StatusText"),
            format!("hail-demo version {version}")
        );
    }

    /// `hail ARGS…` inside the container, as an operator runs it; it must succeed. Returns stdout.
    fn hail(&self, args: &[&str]) -> String {
        let mut argv = vec!["hail"];
        argv.extend_from_slice(args);
        self.c.exec(&argv)
    }

    /// `hail status ARGS… --json` inside the container.
    fn status_json(&self, args: &[&str]) -> Value {
        let mut argv = vec!["status"];
        argv.extend_from_slice(args);
        argv.push("--json");
        let out = self.hail(&argv);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("hail {argv:?}: {e}:\n{out}"))
    }
}

/// The `<what>` of a `deployed <what>; <activity>` status line names that profile (with or
/// without its build id) and generation.
fn assert_deployed(status: &str, profile_name: &str, generation: &str) {
    let what = status.split(';').next().unwrap_or_default();
    assert!(
        what.starts_with("deployed "),
        "not a hail status line: {status}"
    );
    assert!(
        what.contains(profile_name) && what.ends_with(generation),
        "{status}"
    );
}

/// How many seccomp filters a process inside runs under (`Seccomp_filters:`). nspawn filters the
/// whole container, so compare with PID 1.
fn seccomp_filters(c: &Container, pid: &str) -> u32 {
    let status = c.exec(&["cat", &format!("/proc/{pid}/status")]);
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp_filters:"));
    line.and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Seccomp_filters in /proc/{pid}/status:\n{status}"))
}

/// Stops a unit and checks that hail said STOPPING=1 and exited 0 by itself (not by the
/// signal); `while_stopping` runs once the stop is under way (the unit is no longer active).
/// Returns how long the stop took. systemd logs notifications and successful exits at debug
/// level only, and a stopped instance is unloaded at once, so its properties cannot tell.
fn stop_cleanly(c: &Container, unit: &str, while_stopping: impl FnOnce()) -> Duration {
    c.exec(&["systemd-analyze", "log-level", "debug"]);
    let stopping = Instant::now();
    let stop = c.systemctl(&["stop", "--no-block", unit]);
    assert!(
        stop.success(),
        "stop failed: {}\n{}",
        stop.stderr,
        c.unit_log(unit)
    );
    c.wait_for("the stop to begin", unit, DEPLOY, |c| {
        (c.show(unit, "ActiveState") != "active").then_some(())
    });
    while_stopping();
    c.wait_for("the stop to end", unit, DEPLOY, |c| {
        (c.show(unit, "ActiveState") == "inactive").then_some(())
    });
    let took = stopping.elapsed();
    c.exec(&["systemd-analyze", "log-level", "info"]);
    let log = c.unit_log(unit);
    let tail = &log[log.rfind("Stopping ").unwrap_or(0)..];
    assert!(tail.contains("STOPPING=1"), "{tail}");
    assert!(tail.contains("Deactivated successfully."), "{tail}");
    let exits = c.journal(&[
        &format!("MESSAGE_ID={MSG_PROCESS_EXIT}"),
        &format!("UNIT={unit}"),
    ]);
    let exit = exits
        .last()
        .unwrap_or_else(|| panic!("no process exit entry:\n{log}"));
    assert_eq!(field(exit, "EXIT_CODE"), Some("exited"), "{exit:#}");
    assert_eq!(field(exit, "EXIT_STATUS"), Some("0"), "{exit:#}");
    took
}

const SVC: &str = "hail@svc.service";
const SVC_PROFILE: &str = "/nix/var/nix/profiles/hail/svc";

/// `journalctl -x` of the instance's entries matching `matches`: each with its catalog text.
fn explain(c: &Container, matches: &[&str]) -> String {
    let mut argv = vec!["journalctl", "-x", "--no-pager", "-u", SVC];
    argv.extend_from_slice(matches);
    c.exec(&argv)
}

/// The journal catalog, installed as the README says: journalctl takes it, lists every
/// `MESSAGE_ID` hail logs, and explains a real `deployed` entry with its fields filled in.
fn assert_catalog_explains_deployed(c: &Container, build: u64, store_path: &str) {
    let update = c.try_exec(&["journalctl", "--update-catalog"]);
    assert!(
        update.success() && !update.stderr.contains("hail"),
        "journalctl --update-catalog: {}{}",
        update.stdout,
        update.stderr
    );
    let listed = c.exec(&["journalctl", "--list-catalog"]);
    for (name, id) in catalog::message_ids() {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{id} hail: "))),
            "{name} ({id}) is not listed:\n{listed}"
        );
    }
    let explained = explain(
        c,
        &[
            &format!("MESSAGE_ID={MSG_DEPLOYED}"),
            &format!("HAIL_BUILD_ID={build}"),
        ],
    );
    for text in [
        format!("Subject: Build {build} deployed"),
        format!("{store_path}, switched the profile {SVC_PROFILE} to it, ran its"),
        format!("journalctl -u hail@NAME HAIL_BUILD_ID={build}"),
    ] {
        assert!(explained.contains(&text), "no {text:?} in\n{explained}");
    }
}

/// The unit's settings as systemd reads them, then one instance's life: start (READY after the
/// start-up activation), a first deployment, a reload that polls at once, structured journal
/// entries, a failing activation that a restart remembers, an unreachable Hydra, a clean stop.
/// The instance has no netrc.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn service_deploys_reloads_reports_and_stops() {
    let rig = rig("svc");
    let c = &rig.c;

    // The template as systemd 252 understands it.
    let verify = c.try_exec(&[
        "systemd-analyze",
        "verify",
        "/usr/lib/systemd/system/hail@.service",
    ]);
    assert!(
        verify.success(),
        "systemd-analyze verify: {}{}",
        verify.stdout,
        verify.stderr
    );
    for (property, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("Restart", "on-failure"),
        ("KillMode", "mixed"),
        ("TimeoutStopUSec", "1min 30s"),
        ("ExecMainPID", "0"),
    ] {
        assert_eq!(rig.show(SVC, property), value, "{property}");
    }
    assert!(
        rig.show(SVC, "Environment")
            .contains(&format!("HAIL_PROFILE={SVC_PROFILE}"))
    );
    assert!(
        rig.show(SVC, "EnvironmentFiles")
            .contains("/etc/hail/svc.env (ignore_errors=yes)")
    );

    // Without a job URI hail exits 2 (usage): that is not retried (RestartPreventExitStatus).
    let unconfigured = "hail@unconfigured.service";
    assert!(!c.systemctl(&["start", unconfigured]).success());
    assert_eq!(rig.show(unconfigured, "SubState"), "failed");
    assert_eq!(rig.show(unconfigured, "ExecMainStatus"), "2");
    assert_eq!(rig.show(unconfigured, "NRestarts"), "0");

    let (v1, b1) = rig.release("1", 0);
    rig.configure("svc", "");

    // `systemctl start` returns once hail said READY=1: the unit is active right away.
    c.systemctl_ok("start", SVC);
    assert_eq!(c.systemctl(&["is-active", SVC]).stdout.trim(), "active");
    assert_eq!(rig.show(SVC, "SubState"), "running");
    assert!(
        !rig.show(SVC, "StatusText").is_empty(),
        "no STATUS= with READY=1"
    );
    // systemd reports the watchdog period of a started service.
    assert_eq!(rig.show(SVC, "WatchdogUSec"), "1min");
    // The hardening is in force on the running agent, and it did not get in the deployment's way.
    assert!(seccomp_filters(c, &rig.show(SVC, "MainPID")) > seccomp_filters(c, "1"));

    // The first poll happens at start: build 1 is substituted into the empty store, the profile
    // switched, and its activation installs and starts the demo service.
    let status = rig.wait_status(SVC, &format!("deployed build {b1} ("), DEPLOY);
    assert!(status.contains("generation 1"), "{status}");
    // `systemctl status` shows it under the unit.
    let shown = c.systemctl(&["status", "--no-pager", "--full", SVC]).stdout;
    assert!(shown.contains(&format!("Status: \"{status}\"")), "{shown}");
    assert_eq!(rig.profile_target(SVC_PROFILE), v1.out_path);
    rig.assert_demo("1");
    assert_eq!(rig.activations(), [format!("activated 1 {}", v1.out_path)]);

    // READY=1 comes after the start-up activation: when `systemctl restart` returns, the
    // deployed generation has already been activated again.
    let restart = c.systemctl(&["restart", SVC]);
    assert!(restart.success(), "restart failed: {}", restart.stderr);
    assert_eq!(
        rig.activations().len(),
        2,
        "{:?}\n{}\n{}",
        rig.activations(),
        c.unit_log(SVC),
        c.unit_log("hail-demo.service")
    );
    rig.assert_demo("1");
    rig.wait_status(SVC, &format!("deployed build {b1} ("), DEPLOY);

    // A new build is not seen before the next poll (in an hour) unless hail is told to poll.
    let (v2, b2) = rig.release("2", 0);
    let reloaded = Instant::now();
    let reload = c.systemctl(&["reload", SVC]);
    assert!(reload.success(), "reload failed: {}", reload.stderr);
    let status = rig.wait_status(SVC, &format!("deployed build {b2} ("), DEPLOY);
    eprintln!("deployed after reload in {:?}", reloaded.elapsed());
    assert!(status.contains("generation 2"), "{status}");
    assert_eq!(rig.profile_target(SVC_PROFILE), v2.out_path);
    rig.assert_demo("2");

    // Structured entries, found by field.
    let deployed = rig.wait_journal(SVC, &["-u", SVC, "HAIL_EVENT=deployed"], 2);
    assert_eq!(deployed.len(), 2, "{deployed:#?}");
    for (entry, (id, path, generation)) in deployed
        .iter()
        .zip([(b1, &v1.out_path, "1"), (b2, &v2.out_path, "2")])
    {
        assert_eq!(field(entry, "MESSAGE_ID"), Some(MSG_DEPLOYED), "{entry:#}");
        assert_eq!(field(entry, "SYSLOG_IDENTIFIER"), Some("hail"), "{entry:#}");
        assert_eq!(
            field(entry, "HAIL_BUILD_ID"),
            Some(id.to_string().as_str()),
            "{entry:#}"
        );
        assert_eq!(
            field(entry, "HAIL_STORE_PATH"),
            Some(path.as_str()),
            "{entry:#}"
        );
        assert_eq!(
            field(entry, "HAIL_GENERATION"),
            Some(generation),
            "{entry:#}"
        );
    }
    // Every entry of hail names its job and profile, so one query covers all instances.
    let job = rig.hydra.default_job_uri();
    let all = c.journal(&["SYSLOG_IDENTIFIER=hail", "-u", SVC]);
    assert!(all.len() > 10, "{all:#?}");
    for entry in &all {
        assert_eq!(field(entry, "HAIL_PROFILE"), Some(SVC_PROFILE), "{entry:#}");
        assert_eq!(field(entry, "HAIL_JOB"), Some(job.as_str()), "{entry:#}");
    }
    let started = c.journal(&["-u", SVC, "HAIL_EVENT=started"]);
    assert_eq!(started.len(), 2, "{started:#?}");
    let by_id = c.journal(&[
        &format!("MESSAGE_ID={MSG_DEPLOYED}"),
        "SYSLOG_IDENTIFIER=hail",
    ]);
    assert_eq!(by_id.len(), 2, "{by_id:#?}");
    assert_catalog_explains_deployed(c, b2, &v2.out_path);
    // Every step of a deployment, found by the store path (journalctl ANDs different fields).
    let path_match = format!("HAIL_STORE_PATH={}", v2.out_path);
    let steps: Vec<_> = c
        .journal(&["-u", SVC, &path_match])
        .iter()
        .filter_map(|e| field(e, "HAIL_EVENT").map(str::to_string))
        .collect();
    for step in ["deploying", "realised", "switched", "deployed"] {
        assert!(steps.iter().any(|s| s == step), "no {step} in {steps:?}");
    }
    // … and by the build id, the activation's output included.
    let id_match = format!("HAIL_BUILD_ID={b2}");
    let steps: Vec<_> = c
        .journal(&["-u", SVC, &id_match])
        .iter()
        .filter_map(|e| field(e, "HAIL_EVENT").map(str::to_string))
        .collect();
    for step in [
        "deploying",
        "realised",
        "switched",
        "activation-output",
        "deployed",
    ] {
        assert!(steps.iter().any(|s| s == step), "no {step} in {steps:?}");
    }

    // A release whose activation fails: it changes the demo service, fails, and hail switches
    // back to generation 2 and re-runs its activation. hail itself stays up and says so.
    let (v3, b3) = rig.release("3", 1);
    assert!(c.systemctl(&["reload", SVC]).success());
    let failed = rig.wait_journal(
        SVC,
        &["-u", SVC, &format!("MESSAGE_ID={MSG_ACTIVATION_FAILED}")],
        1,
    );
    assert_eq!(
        field(&failed[0], "HAIL_BUILD_ID"),
        Some(b3.to_string().as_str()),
        "{:#}",
        failed[0]
    );
    rig.wait_journal(SVC, &["-u", SVC, "HAIL_EVENT=rolled-back"], 1);
    let explained = explain(c, &[&format!("MESSAGE_ID={MSG_ACTIVATION_FAILED}")]);
    for text in [
        "Subject: An activation failed".to_string(),
        format!("An activation of the profile {SVC_PROFILE} failed or did not finish within"),
    ] {
        assert!(explained.contains(&text), "no {text:?} in\n{explained}");
    }
    let status = rig.wait_status(SVC, "-hail-demo-profile-3 failed", DEPLOY);
    assert_deployed(&status, "-hail-demo-profile-2", "generation 2");
    assert_eq!(rig.show(SVC, "ActiveState"), "active");
    assert_eq!(rig.profile_target(SVC_PROFILE), v2.out_path);
    // The status says why when the re-activation failed.
    assert!(
        status.contains("switched back to generation 2 and re-activated"),
        "{status}\n{}",
        c.unit_log(SVC)
    );
    let activations = rig.activations();
    assert_eq!(
        activations[activations.len() - 2..],
        [
            format!("activated 3 {}", v3.out_path),
            format!("activated 2 {}", v2.out_path)
        ],
        "{activations:#?}\n{status}\n{}",
        c.unit_log(SVC)
    );
    rig.assert_demo("2");

    // The failed build is remembered in the state directory (the template's StateDirectory=,
    // under its hardening): after a restart hail holds it back instead of trying it again.
    assert!(c.read_file("/var/lib/hail/svc/state.json").is_some());
    c.systemctl_ok("restart", SVC);
    let status = rig.wait_status(SVC, "is known to be bad", DEPLOY);
    assert!(status.contains(&format!("build {b3} (")), "{status}");
    assert_deployed(&status, "-hail-demo-profile-2", "generation 2");
    let b3_match = format!("HAIL_BUILD_ID={b3}");
    let held = c.journal(&["-u", SVC, "HAIL_EVENT=held-back", &b3_match]);
    assert_eq!(held.len(), 1, "{held:#?}");
    let deploying = c.journal(&["-u", SVC, "HAIL_EVENT=deploying", &b3_match]);
    assert_eq!(deploying.len(), 1, "{deploying:#?}");
    let activations = rig.activations();
    let v3_line = format!("activated 3 {}", v3.out_path);
    assert_eq!(
        activations.iter().filter(|a| **a == v3_line).count(),
        1,
        "{activations:#?}"
    );
    // The start-up activation of generation 2 was the last one.
    assert_eq!(
        activations.last(),
        Some(&format!("activated 2 {}", v2.out_path))
    );
    assert_eq!(rig.profile_target(SVC_PROFILE), v2.out_path);
    let shown = rig.status_json(&["svc"]);
    assert_eq!(shown["known_bad"][0]["build_id"], b3, "{shown:#}");
    assert_eq!(shown["deployed"]["build_id"], b2, "{shown:#}");

    // Hydra unreachable (nothing listens on its port any more): reported, nothing changes.
    let Rig {
        c,
        hydra,
        cache: _cache,
        ..
    } = rig;
    let job = hydra.default_job_uri();
    drop(hydra);
    assert!(c.systemctl(&["reload", SVC]).success());
    let failed = c.wait_for("a poll-failed entry", SVC, DEPLOY, |c| {
        let e = c.journal(&["-u", SVC, &format!("MESSAGE_ID={MSG_POLL_FAILED}")]);
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(
        field(&failed[0], "HAIL_EVENT"),
        Some("poll-failed"),
        "{:#}",
        failed[0]
    );
    assert_eq!(
        field(&failed[0], "HAIL_JOB"),
        Some(job.as_str()),
        "{:#}",
        failed[0]
    );
    assert!(
        field(&failed[0], "HAIL_ERROR").is_some_and(|e| !e.is_empty()),
        "{:#}",
        failed[0]
    );
    let status = c.wait_for("StatusText to report the failed poll", SVC, DEPLOY, |c| {
        let s = c.show(SVC, "StatusText");
        s.contains("poll failed").then_some(s)
    });
    assert_deployed(&status, "-hail-demo-profile-2", "generation 2");
    assert_eq!(c.show(SVC, "ActiveState"), "active");
    assert_eq!(c.exec(&["readlink", "-f", SVC_PROFILE]).trim(), v2.out_path);

    // A clean stop, quickly.
    let took = stop_cleanly(&c, SVC, || {});
    assert!(took < Duration::from_secs(30), "stop took {took:?}");
    let log = c.unit_log(SVC);
    // One for each restart above, one now.
    assert_eq!(
        c.journal(&["-u", SVC, "HAIL_EVENT=stopping"]).len(),
        3,
        "{log}"
    );
    // What was deployed stays deployed.
    assert_eq!(c.exec(&["readlink", "-f", SVC_PROFILE]).trim(), v2.out_path);
    assert_eq!(c.show("hail-demo.service", "ActiveState"), "active");
}

/// What an administrator adds, and the watchdog: drop-ins (a short watchdog, the hardening
/// lifted, a credential from another path), Hydra credentials from the credential store, the
/// profile from the environment file; a stopped agent (SIGSTOP) is aborted by the watchdog and
/// restarted with the deployed generation intact; a stop in the middle of an activation lets it
/// finish.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn watchdog_restarts_a_stuck_agent() {
    let rig = rig("watchdog");
    let c = &rig.c;
    let unit = "hail@wd.service";
    let profile = "/nix/var/nix/profiles/hail-wd-custom";

    // A short watchdog for the test, as an administrator would set it: a drop-in.
    c.write_file(
        "/etc/systemd/system/hail@wd.service.d/watchdog.conf",
        "[Service]\nWatchdogSec=3s\nRestartSec=1s\n",
    );
    // The book's drop-in that lifts the hardening (docs/src/security/sandbox.md).
    c.write_file(
        "/etc/systemd/system/hail@wd.service.d/relax.conf",
        "[Service]\nSystemCallFilter=\nSystemCallArchitectures=\nLockPersonality=no\nRestrictRealtime=no\n",
    );
    // Credentials for the job's host, picked up from the credential store by the template.
    c.write_file_mode(
        "/etc/credstore/hail-wd.netrc",
        "machine 127.0.0.1 login deploy password s3cret\n",
        0o600,
    );
    c.daemon_reload();

    let (v1, b1) = rig.release("1", 0);
    rig.configure("wd", &format!("HAIL_PROFILE={profile}\n"));
    c.systemctl_ok("start", unit);
    rig.wait_status(unit, &format!("deployed build {b1} ("), DEPLOY);
    assert_eq!(rig.show(unit, "WatchdogUSec"), "3s");
    assert_eq!(
        seccomp_filters(c, &rig.show(unit, "MainPID")),
        seccomp_filters(c, "1")
    );
    assert_eq!(rig.profile_target(profile), v1.out_path);
    rig.assert_demo("1");

    // The netrc reached hail as $CREDENTIALS_DIRECTORY/netrc: Basic auth to the job's host.
    let latest = rig.hydra.requests_to(&rig.hydra.default_latest_path());
    assert!(!latest.is_empty());
    // base64("deploy:s3cret")
    assert!(
        latest
            .iter()
            .all(|r| r.header("Authorization") == Some("Basic ZGVwbG95OnMzY3JldA==")),
        "{latest:#?}"
    );

    // Meanwhile hail@wd idles with a 3 s watchdog for longer than that.
    let idle = Instant::now();

    // A credential named by a drop-in replaces the template's. A job without builds makes
    // hail@abs only poll (and fail), leaving the deployed demo service alone.
    let other_job = rig.job_uri("other");
    rig.configure_job("abs", &other_job, "");
    c.write_file_mode(
        "/etc/hail/abs.netrc",
        "machine 127.0.0.1 login abs password dropin\n",
        0o600,
    );
    c.write_file_mode(
        "/etc/credstore/hail-abs.netrc",
        "machine 127.0.0.1 login no password no\n",
        0o600,
    );
    let netrc_conf = "[Service]\nLoadCredential=netrc:/etc/hail/abs.netrc\n";
    c.write_file(
        "/etc/systemd/system/hail@abs.service.d/netrc.conf",
        netrc_conf,
    );
    // systemd 252 does not start a unit whose absolute credential source is missing.
    rig.configure_job("missing", &other_job, "");
    let missing_conf = "[Service]\nLoadCredential=netrc:/etc/hail/missing.netrc\n";
    c.write_file(
        "/etc/systemd/system/hail@missing.service.d/netrc.conf",
        missing_conf,
    );
    c.daemon_reload();
    assert!(
        c.systemctl(&["start", "hail@abs.service"]).success(),
        "{}",
        c.unit_log("hail@abs.service")
    );
    let other_latest = "/job/hail/test/other/latest";
    let polled = c.wait_for("hail@abs to poll", "hail@abs.service", DEPLOY, |_| {
        let r = rig.hydra.requests_to(other_latest);
        (!r.is_empty()).then_some(r)
    });
    // base64("abs:dropin")
    assert_eq!(
        polled[0].header("Authorization"),
        Some("Basic YWJzOmRyb3Bpbg=="),
        "{polled:#?}"
    );
    assert!(!c.systemctl(&["start", "hail@missing.service"]).success());
    assert_eq!(rig.show("hail@missing.service", "ExecMainStatus"), "243"); // EXIT_CREDENTIALS
    assert!(c.systemctl(&["stop", "hail@abs.service"]).success());

    std::thread::sleep(Duration::from_secs(4).saturating_sub(idle.elapsed()));
    assert_eq!(rig.show(unit, "NRestarts"), "0", "{}", c.unit_log(unit));

    let stuck = rig.show(unit, "MainPID");
    c.sh(&format!("kill -STOP {stuck}"));
    let restarted = c.wait_for("the watchdog restart", unit, DEPLOY, |c| {
        let (pid, restarts) = (c.show(unit, "MainPID"), c.show(unit, "NRestarts"));
        (restarts == "1" && pid != "0" && pid != stuck && c.show(unit, "ActiveState") == "active")
            .then_some(pid)
    });
    let log = c.unit_log(unit);
    assert!(log.contains("Watchdog timeout (limit 3s)!"), "{log}");
    assert!(log.contains("Failed with result 'watchdog'."), "{log}");
    assert!(
        !c.try_sh(&format!("kill -0 {stuck}")).success(),
        "the stuck process still exists"
    );

    // The new process found the deployed generation intact: no new generation, same path, the
    // start-up activation ran it again.
    let status = rig.wait_status(unit, &format!("deployed build {b1} ("), DEPLOY);
    assert!(status.contains("generation 1"), "{status}");
    assert_eq!(rig.profile_target(profile), v1.out_path);
    let generations = c.exec(&["nix-env", "--profile", profile, "--list-generations"]);
    assert_eq!(generations.lines().count(), 1, "{generations}");
    assert_eq!(
        rig.activations(),
        [
            format!("activated 1 {}", v1.out_path),
            format!("activated 1 {}", v1.out_path)
        ]
    );
    rig.assert_demo("1");
    assert_eq!(rig.show(unit, "MainPID"), restarted);

    // Stopped in the middle of an activation: only hail gets SIGTERM (KillMode=mixed), lets the
    // activation finish and then exits cleanly; the new release is deployed, not cut short.
    c.write_file(HOLD, "");
    let (v2, _) = rig.release("2", 0);
    assert!(c.systemctl(&["reload", unit]).success());
    c.wait_for("the activation to hold", unit, DEPLOY, |c| {
        c.read_file(HELD)
    });
    stop_cleanly(c, unit, || {
        // hail has had its SIGTERM and waits: its activation still runs.
        assert_eq!(rig.show(unit, "ActiveState"), "deactivating");
        assert_ne!(rig.show(unit, "MainPID"), "0");
        assert!(
            !rig.activations()
                .contains(&format!("activated 2 {}", v2.out_path)),
            "{:?}",
            rig.activations()
        );
        c.exec(&["rm", HOLD]);
    });
    assert_eq!(
        rig.activations().last(),
        Some(&format!("activated 2 {}", v2.out_path))
    );
    assert_eq!(rig.profile_target(profile), v2.out_path);
    rig.assert_demo("2");
}

const WEB: &str = "hail@web.service";
const WEB_PROFILE: &str = "/nix/var/nix/profiles/hail/web";

/// Starts hail@web on a fresh release of the default job and waits until it is deployed.
fn start_web(rig: &Rig) -> (Published, u64) {
    let (v1, b1) = rig.release("1", 0);
    rig.configure("web", "");
    rig.c.systemctl_ok("start", WEB);
    rig.wait_status(WEB, &format!("deployed build {b1} ("), DEPLOY);
    (v1, b1)
}

/// `hail status` inside the container, as an operator types it: with no instance named, one row
/// (or JSON object) per hail@ instance with state in /var/lib/hail; with one named, its agent is
/// the unit's main process.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn status_lists_the_instances() {
    let rig = rig("status");
    let c = &rig.c;
    let (_, b1) = start_web(&rig);
    // hail@api's job has no build: it only polls.
    let api = "hail@api.service";
    rig.configure_job("api", &rig.job_uri("api"), "");
    c.systemctl_ok("start", api);
    let pids = [
        ("api", rig.show(api, "MainPID")),
        ("web", rig.show(WEB, "MainPID")),
    ];

    let table = rig.hail(&["status"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert_eq!(rows[0][..3], ["INSTANCE", "AGENT", "DEPLOYED"], "{table}");
    assert_eq!(rows[1][..3], ["api", "running", "-"], "{table}");
    assert_eq!(rows[2][..3], ["web", "running", &b1.to_string()], "{table}");

    let all = rig.status_json(&[]);
    let listed: Vec<(&str, String)> = all
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {all:#}"))
        .iter()
        .map(|r| {
            (
                r["instance"].as_str().unwrap_or_default(),
                r["pid"].to_string(),
            )
        })
        .collect();
    assert_eq!(listed, pids, "{all:#}");

    let web = rig.hail(&["status", "web"]);
    let line = format!("hail@web: running (pid {})", pids[1].1);
    assert!(web.contains(&line), "{web}");
}

/// Two instances write their metrics into node_exporter's one textfile directory: every series
/// names its instance (`name`), so node_exporter, which serves the files as one, sees no
/// duplicates, and the alerts can say `hail status NAME`.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container, hail_skip_prometheus_parser),
    ignore = "needs root, Nix, debootstrap, systemd-nspawn and python3-prometheus-client (HAIL_TEST_SKIP_MISSING=1)"
)]
fn each_instances_metrics_name_the_instance() {
    let rig = rig("metrics");
    hail_testkit::prereq::require(&hail_testkit::prereq::PROMETHEUS_PARSER);
    let c = &rig.c;
    let dir = "/var/lib/prometheus-node-exporter-text";
    let (_, b1) = rig.release("1", 0);
    rig.configure("web", &format!("HAIL_METRICS_FILE={dir}/hail-web.prom\n"));
    // hail@api's job has no build: it only polls, and writes its metrics after the poll.
    let api = "hail@api.service";
    let api_metrics = format!("HAIL_METRICS_FILE={dir}/hail-api.prom\n");
    rig.configure_job("api", &rig.job_uri("api"), &api_metrics);
    c.systemctl_ok("start", WEB);
    c.systemctl_ok("start", api);
    rig.wait_status(WEB, &format!("deployed build {b1} ("), DEPLOY);
    for name in ["web", "api"] {
        let file = format!("{dir}/hail-{name}.prom");
        let unit = format!("hail@{name}.service");
        let text = c.wait_for("its metrics file", &unit, DEPLOY, |c| c.read_file(&file));
        let samples = hail_testkit::prometheus::parse(&text);
        assert!(samples.len() > 10, "{text}");
        for s in &samples {
            let label = s.labels.get("name").and_then(Value::as_str);
            assert_eq!(label, Some(name), "{s:?}\n{text}");
        }
    }
}

/// `hail pause` and `hail resume` against the running service: the pause shows in the unit's
/// status, holds a new release back (also across a restart), and a resume deploys it at once.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn pause_and_resume_through_the_service() {
    let rig = rig("pause");
    let c = &rig.c;
    let (v1, _) = start_web(&rig);

    let asked = rig.hail(&["pause", "web", "--reason", "maintenance window"]);
    let pid = rig.show(WEB, "MainPID");
    assert!(asked.contains(&format!("hail@web (pid {pid})")), "{asked}");
    let status = rig.wait_status(WEB, "paused", DEPLOY);
    assert!(status.contains("maintenance window"), "{status}");

    // A new release, and a reload that polls: seen, not deployed.
    let (v2, b2) = rig.release("2", 0);
    c.systemctl_ok("reload", WEB);
    let status = rig.wait_status(WEB, &format!("paused: build {b2} "), DEPLOY);
    assert_deployed(&status, "-hail-demo-profile-1", "generation 1");
    let shown = rig.status_json(&["web"]);
    assert_eq!(shown["paused"], true, "{shown:#}");
    assert_eq!(shown["pause_reason"], "maintenance window", "{shown:#}");

    // The pause is kept in the state directory: the restarted agent holds the release back too.
    c.systemctl_ok("restart", WEB);
    let b2_match = format!("HAIL_BUILD_ID={b2}");
    rig.wait_journal(WEB, &["-u", WEB, "HAIL_EVENT=held-back", &b2_match], 2);
    rig.wait_status(WEB, &format!("paused: build {b2} "), DEPLOY);
    assert_eq!(rig.profile_target(WEB_PROFILE), v1.out_path);
    let v1_line = format!("activated 1 {}", v1.out_path);
    // The first deployment and the restart's start-up activation.
    assert_eq!(rig.activations(), [v1_line.clone(), v1_line]);

    // Resumed: hail polls at once and deploys, without a reload.
    rig.hail(&["resume", "web"]);
    let status = rig.wait_status(WEB, &format!("deployed build {b2} ("), DEPLOY);
    assert!(!status.contains("paused"), "{status}");
    assert_eq!(rig.profile_target(WEB_PROFILE), v2.out_path);
    rig.assert_demo("2");
    assert_eq!(rig.status_json(&["web"])["paused"], false);
}

/// `systemctl kill --signal=SIGKILL` of the whole unit in the middle of an activation: systemd
/// restarts hail, which sees the deployment through. A failing build is rolled back to the last
/// good one (its demo service put back), a good one ends deployed.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn killed_mid_activation_under_systemd_hail_restarts_and_converges() {
    let rig = rig("kill");
    let c = &rig.c;
    let (_, b1) = rig.release("1", 0);
    // The success hook says which instance it ran for.
    let hook = "/bin/sh -c 'echo $HAIL_INSTANCE $HAIL_EVENT >> /var/lib/hail-demo/hooks'";
    rig.configure(
        "svc",
        &format!("HAIL_ACTIVATION_TIMEOUT=10m\nHAIL_ON_SUCCESS={hook}\n"),
    );
    c.systemctl_ok("start", SVC);
    rig.wait_status(SVC, &format!("deployed build {b1} ("), DEPLOY);
    rig.assert_demo("1");

    for (version, exit) in [("2", 1), ("3", 0)] {
        let (published, build) = rig.release(version, exit);
        c.sh(&format!("rm -f {HELD}; touch {HOLD}"));
        c.systemctl_ok("reload", SVC);
        c.wait_for("the activation to hold", SVC, DEPLOY, |c| {
            c.read_file(HELD).map(|_| ())
        });
        let restarts: u32 = rig.show(SVC, "NRestarts").parse().unwrap();
        let kill = c.systemctl(&["kill", "--signal=SIGKILL", SVC]);
        assert!(kill.success(), "{}", kill.stderr);
        c.sh(&format!("rm -f {HOLD}"));
        // systemd restarts it (Restart=on-failure) and the new hail finishes the deployment.
        c.wait_for("systemd to restart hail", SVC, DEPLOY, |c| {
            let n: u32 = c.show(SVC, "NRestarts").parse().ok()?;
            (n > restarts).then_some(())
        });
        let running = if exit == 0 {
            rig.wait_status(SVC, &format!("deployed build {build} ("), DEPLOY);
            assert_eq!(rig.profile_target(SVC_PROFILE), published.out_path);
            version
        } else {
            rig.wait_status(SVC, &format!("deployed build {b1} ("), DEPLOY);
            let status = rig.status_json(&["svc"]);
            assert_eq!(status["known_bad"][0]["build_id"], build, "{status}");
            "1"
        };
        if exit == 0 {
            c.wait_for("the success hook", SVC, DEPLOY, |c| {
                let hooks = c.read_file("/var/lib/hail-demo/hooks")?;
                (hooks.lines().count() >= 2).then_some(())
            });
            let hooks = c.read_file("/var/lib/hail-demo/hooks").unwrap();
            assert!(hooks.lines().all(|l| l == "svc deployed"), "{hooks}");
        }
        // The demo service the deployed build's activation (re)started.
        let want = format!("hail-demo version {running}");
        c.wait_for(&want, "hail-demo.service", DEPLOY, |c| {
            (c.show("hail-demo.service", "StatusText") == want).then_some(())
        });
    }
}

/// The exposure `systemd-analyze security` gives the shipped unit (systemd 252), held to the
/// book's figure (docs/src/security/sandbox.md) so that a change that weakens the unit is seen.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_units_security_exposure_is_the_books() {
    let rig = rig("security");
    rig.configure("svc", "");
    let out = rig
        .c
        .try_exec(&["systemd-analyze", "security", "--no-pager", SVC]);
    let text = format!("{}{}", out.stdout, out.stderr);
    println!("{text}");
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("→ Overall exposure level for {SVC}: ")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let chapter = hail_testkit::docs::read("docs/src/security/sandbox.md");
    let said: f64 = chapter
        .split("`systemd-analyze security hail@NAME` rates it ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the book gives the exposure");
    assert_eq!(exposure, said, "{text}");
}

/// Every event an operator queries by `MESSAGE_ID` reaches the journal of the booted systemd with
/// its fields: a deployment that could not fetch its build, a failing health check, a manual
/// rollback, a state file that could not be read. Each is made to happen for real.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn each_operator_facing_event_reaches_the_journal_with_its_message_id() {
    let rig = rig("events");
    let c = &rig.c;
    let unhealthy = "/var/lib/hail-demo/unhealthy";
    let (v1, b1) = rig.release("1", 0);
    rig.configure(
        "svc",
        &format!(
            "HAIL_HEALTH_CHECK=/bin/sh -c 'test ! -e {unhealthy}'\nHAIL_HEALTH_INTERVAL=200ms\n\
             HAIL_HEALTH_TIMEOUT=2s\n"
        ),
    );
    c.systemctl_ok("start", SVC);
    rig.wait_status(SVC, &format!("deployed build {b1} ("), DEPLOY);
    let one = |id: &str, build: Option<u64>| -> Value {
        let mut matches = vec![
            "-u".to_string(),
            SVC.to_string(),
            format!("MESSAGE_ID={id}"),
        ];
        if let Some(b) = build {
            matches.push(format!("HAIL_BUILD_ID={b}"));
        }
        let matches: Vec<&str> = matches.iter().map(String::as_str).collect();
        rig.wait_journal(SVC, &matches, 1).remove(0)
    };

    // A build Hydra names but no cache holds: its deployment fails, nothing is switched.
    let missing = "/nix/store/00000000000000000000000000000000-hail-demo-profile-missing";
    let b2 = rig.hydra.add_build(BuildSpec::succeeded(missing));
    c.systemctl_ok("reload", SVC);
    let e = one(MSG_DEPLOY_FAILED, Some(b2));
    assert_eq!(field(&e, "HAIL_EVENT"), Some("deploy-failed"), "{e:#}");
    assert_eq!(field(&e, "PRIORITY"), Some("3"), "{e:#}");
    assert_eq!(rig.profile_target(SVC_PROFILE), v1.out_path);

    // A build whose health check fails: rolled back, known-bad.
    c.sh(&format!("touch {unhealthy}"));
    let (_, b3) = rig.release("3", 0);
    c.systemctl_ok("reload", SVC);
    let e = one(MSG_HEALTH_CHECK_FAILED, Some(b3));
    assert_eq!(
        field(&e, "HAIL_EVENT"),
        Some("health-check-failed"),
        "{e:#}"
    );
    rig.wait_status(SVC, &format!("deployed build {b1} ("), DEPLOY);
    assert_eq!(rig.profile_target(SVC_PROFILE), v1.out_path);
    c.sh(&format!("rm -f {unhealthy}"));

    // An operator moves the profile back by hand: respected, and said.
    let (_, b4) = rig.release("4", 0);
    c.systemctl_ok("reload", SVC);
    rig.wait_status(SVC, &format!("deployed build {b4} ("), DEPLOY);
    c.exec(&[
        "nix-env",
        "--profile",
        SVC_PROFILE,
        "--switch-generation",
        "1",
    ]);
    c.systemctl_ok("reload", SVC);
    let e = one(MSG_MANUAL_CHANGE, None);
    assert_eq!(field(&e, "HAIL_EVENT"), Some("manual-change"), "{e:#}");
    assert_eq!(rig.profile_target(SVC_PROFILE), v1.out_path);

    // A state file that cannot be read: moved aside, said, and hail goes on.
    c.systemctl_ok("stop", SVC);
    c.write_file("/var/lib/hail/svc/state.json", "{ not json");
    c.systemctl_ok("start", SVC);
    let e = one(MSG_STATE_RESET, None);
    assert_eq!(field(&e, "HAIL_EVENT"), Some("state-reset"), "{e:#}");
    assert_eq!(rig.show(SVC, "ActiveState"), "active");
    let aside = c.sh("ls /var/lib/hail/svc");
    assert!(aside.contains("state.json.corrupt-"), "{aside}");

    // What one deployment and its rollback say, step by step, each as its own HAIL_EVENT.
    let events: std::collections::BTreeSet<String> = c
        .journal(&["-u", SVC])
        .iter()
        .filter_map(|e| field(e, "HAIL_EVENT").map(str::to_owned))
        .collect();
    for event in [
        "started",
        "deploying",
        "realised",
        "switched",
        "activation-output",
        "deployed",
        "deploy-failed",
        "health-check-failed",
        "rolled-back",
        "manual-change",
        "state-reset",
        "poll",
        "stopping",
    ] {
        assert!(
            events.contains(event),
            "no HAIL_EVENT={event} in {events:?}"
        );
    }
}

/// The unit's settings act, not only read well: its sandbox refuses what it says it refuses (a
/// change of personality, as `setarch` makes, under `LockPersonality=`), and a hail that cannot
/// start (another process holds its profile's lock, exit 4) is retried every `RestartSec=` until
/// systemd's start limit (`StartLimitBurst=5` in `StartLimitIntervalSec=10min`) stops it.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_units_sandbox_and_start_limit_take_effect() {
    let rig = rig("limits");
    let c = &rig.c;
    let tried = "/var/lib/hail-demo/setarch";
    let (_, b1) = rig.release("1", 0);
    rig.configure(
        "svc",
        &format!(
            "HAIL_HEALTH_CHECK=/bin/sh -c 'setarch linux32 true 2>>{tried}; echo exit $? >>{tried}'\n"
        ),
    );
    c.systemctl_ok("start", SVC);
    rig.wait_status(SVC, &format!("deployed build {b1} ("), DEPLOY);
    let said = c.read_file(tried).unwrap_or_default();
    assert!(said.contains("Operation not permitted"), "{said}");
    assert!(!said.contains("exit 0"), "{said}");
    // Outside the unit, the same command works: the refusal is the unit's.
    c.exec(&["setarch", "linux32", "true"]);

    c.systemctl_ok("stop", SVC);
    let lock = format!("{SVC_PROFILE}.hail.lock");
    assert!(c.sh(&format!("ls {lock}")).contains("svc.hail.lock"));
    c.exec(&[
        "systemd-run",
        "--unit",
        "lock-holder",
        "flock",
        &lock,
        "sleep",
        "3600",
    ]);
    c.wait_for("the lock to be held", "lock-holder.service", DEPLOY, |c| {
        let free = c.try_exec(&["flock", "--nonblock", &lock, "true"]);
        (!free.status.success()).then_some(())
    });
    let _ = c.systemctl(&["start", SVC]);
    c.wait_for("the start limit", SVC, Duration::from_secs(300), |c| {
        let said = c.unit_log(SVC);
        (said.contains("Start request repeated too quickly")
            && c.show(SVC, "ActiveState") == "failed")
            .then_some(())
    });
    // Five starts in all (the first and four restarts), each ended by exit 4; then none.
    let exits = c.journal(&[
        "-u",
        SVC,
        &format!("MESSAGE_ID={MSG_PROCESS_EXIT}"),
        "EXIT_STATUS=4",
    ]);
    assert_eq!(exits.len(), 5, "{exits:#?}");
}
