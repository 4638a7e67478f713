//! The module's units across generations, switched in a booted systemd (a Debian 12 container
//! with hail installed) by this test's own re-implementation of NixOS's switch decisions, not by
//! NixOS's `switch-to-configuration` program (which needs a whole NixOS system: a bus, the boot
//! loader, `/run/current-system`). The units are those the module renders (tests/nix/eval.nix,
//! the real module system), laid out as NixOS lays them out: each file in
//! `/etc/systemd/system`, a `multi-user.target.wants/` link for each instance, the template
//! `hail@.service` beside them. Between two generations the test performs what
//! `switch-to-configuration-ng` (read in nixpkgs' `pkgs/by-name/sw/switch-to-configuration-ng`)
//! decides for the active units whose file lives in `/etc/systemd/system` (see [`switch`]), and
//! checks that hail's units behave when instances are added, changed, removed, disabled and
//! renamed. What it proves is hail's side (its units and its reaction to reload, stop and start
//! in that order), not NixOS's program.
//!
//! Needs the module's evaluation (`NIXPKGS_LIB`), so it is ignored like tests/nix_module.rs and
//! run by `scripts/test` when NIXPKGS_LIB is set; and root, debootstrap, systemd-nspawn (see
//! `hail_testkit::prereq`).

use std::collections::BTreeMap;
use std::path::Path;

use std::time::Duration;

use hail_testkit::container::{self, Container};
use serde_json::Value;

const HAIL: &str = env!("CARGO_BIN_EXE_hail");
const UNITS: &str = "/etc/systemd/system";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants";
const TEMPLATE: &str = "hail@.service";
/// Start, stop, restart of a unit that does not deploy: seconds; generous for a busy machine.
const SETTLE: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One generation: unit file name → its text, as NixOS installs it in /etc/systemd/system.
type Generation = BTreeMap<String, String>;

/// The units the module renders for `config` (hail as /usr/local/bin/hail, Nix from /usr, as
/// installed in the container), and the template that NixOS installs beside them.
fn generation(config: &str) -> Generation {
    let out =
        hail_testkit::nixos::eval_command(root(), hail_testkit::nixos::systemd_lib().as_deref())
            .args(["--argstr", "hailOut", "/usr/local"])
            .args(["--argstr", "nixOut", "/usr"])
            .args(["--arg", "config", config])
            .output()
            .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["failedAssertions"], serde_json::json!([]));
    let mut units = Generation::new();
    for (name, unit) in result["units"].as_object().unwrap() {
        assert_eq!(unit["wantedBy"], serde_json::json!(["multi-user.target"]));
        units.insert(name.clone(), unit["text"].as_str().unwrap().to_string());
    }
    let template = std::fs::read_to_string(container::unit_file()).unwrap();
    units.insert(TEMPLATE.to_string(), template);
    units
}

/// Replaces the hail units in /etc/systemd/system with `generation`'s, links each instance into
/// multi-user.target.wants, and reloads systemd.
fn install(c: &Container, generation: &Generation) {
    c.sh(&format!(
        "rm -f {UNITS}/hail@* {UNITS}/hail-* {WANTS}/hail@* {WANTS}/hail-* && mkdir -p {WANTS}"
    ));
    for (name, text) in generation {
        c.write_file(&format!("{UNITS}/{name}"), text);
        if name != TEMPLATE {
            c.exec(&[
                "ln",
                "-s",
                &format!("../{name}"),
                &format!("{WANTS}/{name}"),
            ]);
        }
    }
    c.daemon_reload();
}

/// What a switch did, by unit.
#[derive(Debug, Default)]
struct Switched {
    stopped: Vec<String>,
    restarted: Vec<String>,
    reloaded: Vec<String>,
    /// Changed, but `X-RestartIfChanged=false`: "NOT restarting".
    skipped: Vec<String>,
    /// Stopped before the activation, started after it.
    stop_start: Vec<String>,
    /// 0, or 4 when a unit job failed or a hail unit is failed afterwards.
    exit: i32,
}

/// A `[Service]` marker of the switch in a unit's text, e.g. `X-ReloadIfChanged=true`.
fn marker(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim() == line)
}

/// The decisions of NixOS's `switch-to-configuration` (switch-to-configuration-ng, as written
/// up in design notes from its source) for the active `hail@*.service` units:
/// - a unit's file is `/etc/systemd/system/UNIT` now and in the new generation; when an
///   instance has its own file in neither, the template's files stand for it (the switch's
///   template detection); a unit with no current file there is not the switch's;
/// - the new generation has no file → stop;
/// - the files differ → reload if `X-ReloadIfChanged=true`; else nothing ("NOT restarting") if
///   `X-RestartIfChanged=false`; else restart after the activation if `X-StopIfChanged=false`;
///   else stop before the activation and start after;
/// - then: stop, install the new units, daemon-reload, restart, reload, start what was stopped,
///   and start `multi-user.target` again (an active target of the new generation), which starts
///   the new instances;
/// - exit 4 when a job failed or a unit is failed afterwards, else 0.
fn switch(c: &Container, new: &Generation) -> Switched {
    let active = c.exec(&[
        "systemctl",
        "list-units",
        "--plain",
        "--no-legend",
        "--state=active,activating,reloading",
        "hail@*.service",
    ]);
    let mut s = Switched::default();
    for unit in active.lines().filter_map(|l| l.split_whitespace().next()) {
        let mut base = unit.to_string();
        let current = |name: &str| c.read_file(&format!("{UNITS}/{name}"));
        if current(unit).is_none() && !new.contains_key(unit) {
            base = TEMPLATE.to_string();
        }
        let Some(cur) = current(&base) else { continue };
        match new.get(&base) {
            None => s.stopped.push(unit.to_string()),
            Some(text) if *text == cur => {}
            Some(text) => {
                let list = if marker(text, "X-ReloadIfChanged=true") {
                    &mut s.reloaded
                } else if marker(text, "X-RestartIfChanged=false") {
                    &mut s.skipped
                } else if marker(text, "X-StopIfChanged=false") {
                    &mut s.restarted
                } else {
                    &mut s.stop_start
                };
                list.push(unit.to_string());
            }
        }
    }
    let mut failed = false;
    let mut job = |verb: &str, unit: &str| failed |= !c.systemctl(&[verb, unit]).success();
    for unit in s.stopped.iter().chain(&s.stop_start) {
        job("stop", unit);
    }
    install(c, new);
    for unit in &s.restarted {
        job("restart", unit);
    }
    for unit in &s.reloaded {
        job("reload", unit);
    }
    for unit in &s.stop_start {
        job("start", unit);
    }
    job("start", "multi-user.target");
    let failed_units = c.exec(&[
        "systemctl",
        "list-units",
        "--plain",
        "--no-legend",
        "--state=failed",
        "hail@*",
    ]);
    s.exit = if failed || !failed_units.trim().is_empty() {
        4
    } else {
        0
    };
    s
}

/// The environment of a unit's main process.
fn process_env(c: &Container, unit: &str) -> BTreeMap<String, String> {
    let pid = c.show(unit, "MainPID");
    assert_ne!(pid, "0", "{unit} has no main process");
    let environ = c.exec(&["cat", &format!("/proc/{pid}/environ")]);
    environ
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn state(c: &Container, unit: &str) -> String {
    c.show(unit, "ActiveState")
}

/// A job nobody serves: polls fail at once and hail keeps waiting for the next one.
fn job(name: &str) -> String {
    format!("http://127.0.0.1:9/job/p/j/{name}")
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn instances_added_changed_removed_disabled_renamed_under_switch_decisions_reimplemented_here() {
    hail_testkit::nixos::nixpkgs_lib();
    container::require();
    let instance = |name: &str, job_uri: &str, extra: &str| {
        format!(r#"services.hail.{name} = {{ jobUri = "{job_uri}"; pollPeriod = "1h"; {extra} }};"#)
    };
    // b's values need escaping: `%` (a specifier), quotes, `$`, a newline.
    let b_first = instance(
        "b",
        &job("b%7E1"),
        r#"environment.DEMO = "50% \"q\" $HOME\nline 2";"#,
    );
    let b_second = instance("b", &job("b-new"), "");
    let one = format!(
        "{{ {} {b_first} {} }}",
        instance("a", &job("a"), ""),
        instance("c", &job("c"), "")
    );
    // b changes job; c is removed; d is added.
    let two = format!(
        "{{ {} {b_second} {} }}",
        instance("a", &job("a"), ""),
        instance("d", &job("d"), "")
    );
    // a is disabled, d renamed to e.
    let three = format!(
        "{{ {} {b_second} {} }}",
        instance("a", &job("a"), "enable = false;"),
        instance("e", &job("e"), "")
    );
    let (one, two, three) = (generation(&one), generation(&two), generation(&three));

    let c = Container::boot("nixos-switch");
    c.install_hail(Path::new(HAIL));
    // Left over from an install by hand: NixOS's settings must win over it.
    c.write_file(
        "/etc/hail/b.env",
        "HAIL_JOB_URI=http://127.0.0.1:9/job/p/j/leftover\nDEMO=leftover\n",
    );

    // The first generation: every instance starts, with exactly the configured values.
    let first = switch(&c, &one);
    assert_eq!(first.exit, 0, "{first:?}");
    for unit in ["hail@a.service", "hail@b.service", "hail@c.service"] {
        assert_eq!(state(&c, unit), "active", "{}", c.unit_log(unit));
    }
    let env = process_env(&c, "hail@b.service");
    assert_eq!(env["DEMO"], "50% \"q\" $HOME\nline 2");
    assert_eq!(env["HAIL_JOB_URI"], "http://127.0.0.1:9/job/p/j/b%7E1");
    assert_eq!(env["HAIL_PROFILE"], "/nix/var/nix/profiles/hail/b");
    assert_eq!(
        c.show("hail@b.service", "Description"),
        "hail deployment of b"
    );
    let a_invocation = c.show("hail@a.service", "InvocationID");
    let b_invocation = c.show("hail@b.service", "InvocationID");
    let b_digest = env["HAIL_UNIT_CONFIG"].clone();

    // Change b, remove c, add d.
    let second = switch(&c, &two);
    assert_eq!(
        second.exit,
        0,
        "{second:?}\n{}",
        c.unit_log("hail@c.service")
    );
    assert_eq!(second.stopped, ["hail@c.service"], "{second:?}");
    assert_eq!(second.reloaded, ["hail@b.service"], "{second:?}");
    assert!(second.restarted.is_empty() && second.stop_start.is_empty());
    assert_eq!(state(&c, "hail@c.service"), "inactive");
    assert_eq!(state(&c, "hail@d.service"), "active");
    assert_eq!(c.show("hail@a.service", "InvocationID"), a_invocation);
    // b, reloaded, restarts itself with its new settings.
    c.wait_for(
        "hail@b restarted with its new job",
        "hail@b.service",
        SETTLE,
        |c| {
            let invocation = c.show("hail@b.service", "InvocationID");
            (state(c, "hail@b.service") == "active" && invocation != b_invocation).then_some(())
        },
    );
    let env = process_env(&c, "hail@b.service");
    assert_eq!(env["HAIL_JOB_URI"], "http://127.0.0.1:9/job/p/j/b-new");
    assert_ne!(env["HAIL_UNIT_CONFIG"], b_digest);
    assert!(!env.contains_key("DEMO"), "{env:?}");
    assert!(
        c.unit_log("hail@b.service")
            .contains("restarting through systemd"),
        "{}",
        c.unit_log("hail@b.service")
    );
    let b_invocation = c.show("hail@b.service", "InvocationID");

    // Disable a, rename d to e; b is unchanged.
    let third = switch(&c, &three);
    assert_eq!(third.exit, 0, "{third:?}");
    assert_eq!(
        third.stopped,
        ["hail@a.service", "hail@d.service"],
        "{third:?}"
    );
    assert!(third.reloaded.is_empty(), "{third:?}");
    for unit in ["hail@a.service", "hail@d.service"] {
        assert_eq!(state(&c, unit), "inactive", "{}", c.unit_log(unit));
    }
    assert_eq!(state(&c, "hail@e.service"), "active");
    assert_eq!(c.show("hail@b.service", "InvocationID"), b_invocation);

    // A reload without a change only polls.
    c.systemctl_ok("reload", "hail@b.service");
    c.wait_for("the reload's poll", "hail@b.service", SETTLE, |c| {
        c.unit_log("hail@b.service")
            .contains("reload requested: polling now")
            .then_some(())
    });
    assert_eq!(c.show("hail@b.service", "InvocationID"), b_invocation);
}
