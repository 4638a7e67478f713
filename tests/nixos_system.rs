//! `--system` under a real systemd (a booted Debian 12 container; NixOS itself cannot boot
//! here): fake NixOS systems (testkit/nix/nixos-system.nix, built with Nix without nixpkgs and
//! substituted from the signed cache) whose `bin/switch-to-configuration` records how it ran. The
//! switch runs in a transient unit of its own; `switch`, `boot` and `test`; a failing switch
//! rolled back; reboot needed both ways; the reboot window, and a reboot through systemd; a switch
//! that restarts hail itself.
//!
//! Root, Nix, debootstrap and systemd-nspawn are required: without them a test fails, naming what
//! is missing (see `hail_testkit::prereq`).

use std::path::Path;
use std::time::Duration;

use hail_testkit::cache::{Published, nixos_system_nix};
use hail_testkit::hydra::BuildSpec;
use hail_testkit::rig::Rig;

const HAIL: &str = env!("CARGO_BIN_EXE_hail");
/// Generous bound for one deployment on a busy 2-core machine.
const DEPLOY: Duration = Duration::from_secs(120);
const OS: &str = "hail@os.service";
const SYSTEM: &str = "/nix/var/nix/profiles/system";
const SWITCHES: &str = "/var/lib/hail-nixos/switches";
const BOOT_ENTRY: &str = "/var/lib/hail-nixos/boot-entry";
const BOOTED: &str = "/var/lib/hail-nixos/booted";
const MSG_REBOOT_NEEDED: &str = "7d3b9e21c4a84f6b8e05d2a19f6c4b73";

/// Publishes a fake system (`kernel` names its kernel, initrd and modules) and makes it the job's
/// latest build; returns it and its build id.
fn release(rig: &Rig, version: &str, kernel: &str, exit: i32, extra: &str) -> (Published, u64) {
    let exit = exit.to_string();
    #[rustfmt::skip]
    let args = [
        "--argstr", "version", version,
        "--argstr", "nonce", &rig.nonce,
        "--argstr", "kernel", kernel,
        "--argstr", "switchExit", &exit,
        "--argstr", "extraSwitch", extra,
    ];
    let p = rig.cache.publish_nix(&nixos_system_nix(), &args);
    let id = rig.hydra.add_build(BuildSpec::succeeded(&p.out_path));
    (p, id)
}

/// `/etc/hail/os.env`: a system instance polling only when reloaded, and `extra` lines.
fn configure(rig: &Rig, extra: &str) {
    let env = format!(
        "HAIL_JOB_URI={}\nHAIL_POLL_PERIOD=1h\nRUST_LOG=info\nHAIL_SYSTEM=1\n\
         HAIL_PROFILE={SYSTEM}\nHAIL_BOOTED_SYSTEM={BOOTED}\nNIXOS_INSTALL_BOOTLOADER=1\n{extra}",
        rig.hydra.default_job_uri()
    );
    rig.c.write_file("/etc/hail/os.env", env);
}

/// The switches so far: `<version> <action> <path> unit=<unit> bootloader=… locale=…`.
fn switches(rig: &Rig) -> Vec<String> {
    let text = rig.c.read_file(SWITCHES).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

fn wait_status(rig: &Rig, needle: &str) -> String {
    rig.c.wait_for(
        &format!("StatusText to contain {needle:?}"),
        OS,
        DEPLOY,
        |c| {
            let s = c.show(OS, "StatusText");
            s.contains(needle).then_some(s)
        },
    )
}

fn readlink(rig: &Rig, path: &str) -> String {
    rig.c.exec(&["readlink", "-f", path]).trim().to_string()
}

fn reload(rig: &Rig) {
    rig.c.systemctl_ok("reload", OS);
}

#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn switch_boot_test_rollback_and_reboot_needed() {
    let rig = Rig::new("nixos", Path::new(HAIL));
    let c = &rig.c;
    // A path that is not a system is refused: nothing switched, no profile.
    let plain = rig.cache.publish_nix(
        &hail_testkit::cache::test_profile_nix(),
        &[
            "--argstr", "nonce", &rig.nonce, "--argstr", "marker", "/tmp/m",
        ],
    );
    let plain_id = rig.hydra.add_build(BuildSpec::succeeded(&plain.out_path));
    configure(&rig, "");
    c.systemctl_ok("start", OS);
    wait_status(&rig, &format!("deploying build {plain_id} failed"));
    let status = c.show(OS, "StatusText");
    assert!(status.contains("is not a NixOS system"), "{status}");
    assert!(
        !c.try_exec(&["test", "-e", SYSTEM]).success(),
        "the profile was created"
    );

    // switch, in a transient unit of its own, with the boot loader variable passed on.
    let (v1, b1) = release(&rig, "1", "1", 0, "");
    reload(&rig);
    let status = wait_status(&rig, &format!("deployed build {b1} ("));
    assert!(!status.contains("reboot needed"), "{status}");
    assert_eq!(readlink(&rig, SYSTEM), v1.out_path);
    assert_eq!(readlink(&rig, "/run/current-system"), v1.out_path);
    let s = switches(&rig);
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(
        s[0].starts_with(&format!(
            "1 switch {} unit=hail-switch-to-configuration-",
            v1.out_path
        )),
        "{s:?}"
    );
    assert!(s[0].contains(".service bootloader=1 "), "{s:?}");
    c.exec(&["ln", "-sfn", &v1.out_path, BOOTED]);

    // A new kernel: reboot needed, in the status, the journal and `hail status`.
    let (v2, b2) = release(&rig, "2", "2", 0, "");
    reload(&rig);
    let status = wait_status(&rig, &format!("deployed build {b2} ("));
    assert!(
        status.contains("(reboot needed: kernel, initrd, kernel-modules)"),
        "{status}"
    );
    let said = c.journal(&["-u", OS, &format!("MESSAGE_ID={MSG_REBOOT_NEEDED}")]);
    assert_eq!(said.len(), 1, "{said:?}");
    let report = c.exec(&["hail", "status", "os"]);
    assert!(
        report.contains("needed (kernel, initrd, kernel-modules)"),
        "{report}"
    );
    assert_eq!(readlink(&rig, SYSTEM), v2.out_path);

    // Back to the booted kernel: no reboot needed.
    let (v3, b3) = release(&rig, "3", "1", 0, "");
    reload(&rig);
    let status = wait_status(&rig, &format!("deployed build {b3} ("));
    assert!(!status.contains("reboot needed"), "{status}");

    // switch-to-configuration exits 4: rolled back to system 3 and its switch, known-bad.
    let (v4, b4) = release(&rig, "4", "1", 4, "");
    reload(&rig);
    let status = wait_status(&rig, &format!("deploying build {b4} failed"));
    assert!(status.contains("exited 4: some units failed"), "{status}");
    assert_eq!(readlink(&rig, SYSTEM), v3.out_path);
    assert_eq!(readlink(&rig, "/run/current-system"), v3.out_path);
    let s = switches(&rig);
    let tail: Vec<&str> = s[s.len() - 2..]
        .iter()
        .map(|l| l.split(" unit=").next().unwrap())
        .collect();
    assert_eq!(
        tail,
        [
            format!("4 switch {}", v4.out_path),
            format!("3 switch {}", v3.out_path)
        ]
    );

    // boot: the profile and the boot entry move, the running system does not; a reboot is needed.
    configure(&rig, "HAIL_SWITCH_ACTION=boot\n");
    c.systemctl_ok("restart", OS);
    let (v5, b5) = release(&rig, "5", "1", 0, "");
    reload(&rig);
    let status = wait_status(&rig, &format!("deployed build {b5} ("));
    assert!(
        status.contains("reboot needed: system (--switch-action boot)"),
        "{status}"
    );
    assert_eq!(readlink(&rig, SYSTEM), v5.out_path);
    assert_eq!(c.read_file(BOOT_ENTRY).unwrap().trim(), v5.out_path);
    assert_eq!(readlink(&rig, "/run/current-system"), v3.out_path);
    assert!(
        switches(&rig)
            .last()
            .unwrap()
            .starts_with(&format!("5 boot {}", v5.out_path))
    );

    // test: the running system moves, the profile and the boot entry do not; a restart does not
    // deploy it again (what runs is what is deployed).
    configure(&rig, "HAIL_SWITCH_ACTION=test\n");
    c.systemctl_ok("restart", OS);
    let (v6, b6) = release(&rig, "6", "1", 0, "");
    reload(&rig);
    wait_status(&rig, &format!("deployed build {b6} ("));
    assert_eq!(readlink(&rig, "/run/current-system"), v6.out_path);
    assert_eq!(readlink(&rig, SYSTEM), v5.out_path);
    assert_eq!(c.read_file(BOOT_ENTRY).unwrap().trim(), v5.out_path);
    let n = switches(&rig).len();
    c.systemctl_ok("restart", OS);
    reload(&rig);
    c.wait_for("an up-to-date poll", OS, DEPLOY, |c| {
        let up = c.journal(&["-u", OS, "HAIL_EVENT=up-to-date"]);
        (!up.is_empty()).then_some(())
    });
    assert_eq!(switches(&rig).len(), n, "{:?}", switches(&rig));
}

#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_switch_that_restarts_hail_completes_and_the_new_hail_takes_over() {
    let rig = Rig::new("nixself", Path::new(HAIL));
    let c = &rig.c;
    configure(&rig, "");
    let (_, b1) = release(&rig, "1", "1", 0, "");
    c.systemctl_ok("start", OS);
    wait_status(&rig, &format!("deployed build {b1} ("));
    let pid = c.show(OS, "MainPID");

    // System 2 upgrades hail: its switch restarts hail@os and waits for it, as NixOS's does.
    let (v2, b2) = release(
        &rig,
        "2",
        "1",
        0,
        "systemctl restart hail@os.service && echo done > /var/lib/hail-nixos/restarted",
    );
    reload(&rig);
    let status = wait_status(&rig, &format!("deployed build {b2} ("));
    assert_ne!(c.show(OS, "MainPID"), pid, "hail was not restarted");
    assert_eq!(readlink(&rig, SYSTEM), v2.out_path);
    let s = switches(&rig);
    assert_eq!(s.len(), 2, "switched again or rolled back: {s:?}\n{status}");
    // The switch's unit ran to its end after hail's restart.
    c.wait_for("the switch's unit to end", OS, DEPLOY, |c| {
        let units = c.exec(&[
            "systemctl",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "hail-switch-to-configuration-*",
        ]);
        units.trim().is_empty().then_some(())
    });
    assert_eq!(
        c.read_file("/var/lib/hail-nixos/restarted").as_deref(),
        Some("done\n")
    );
    // The new hail saw the deployment through: deployed, no rollback, no second switch.
    let rolled = c.journal(&["-u", OS, "HAIL_EVENT=rolled-back"]);
    assert!(rolled.is_empty(), "{rolled:?}");
    reload(&rig);
    c.wait_for("an up-to-date poll", OS, DEPLOY, |c| {
        let up = c.journal(&["-u", OS, "HAIL_EVENT=up-to-date"]);
        (!up.is_empty()).then_some(())
    });
    assert_eq!(switches(&rig).len(), 2);
}

/// A two-minute window from the next whole minute at least 40 s away (local time in the
/// container), and how long until it opens.
fn window_opening_soon(rig: &Rig) -> (String, Duration) {
    let now = rig.c.exec(&["date", "+%H %M %S"]);
    let mut hms = now.split_whitespace().map(|n| n.parse::<i32>().unwrap());
    let (h, m, s) = (
        hms.next().unwrap(),
        hms.next().unwrap(),
        hms.next().unwrap(),
    );
    let ahead = if 60 - s >= 40 { 1 } else { 2 };
    let start = h * 60 + m + ahead;
    let at = |minutes: i32| {
        let minutes = minutes.rem_euclid(24 * 60);
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    };
    let opens_in = Duration::from_secs((ahead * 60 - s) as u64);
    (format!("{}-{}", at(start), at(start + 2)), opens_in)
}

/// `HH:MM-HH:MM` from `from` to `to` hours after the container's local time now.
fn window(rig: &Rig, from: i32, to: i32) -> String {
    let now = rig.c.exec(&["date", "+%H %M"]);
    let mut hm = now.split_whitespace().map(|n| n.parse::<i32>().unwrap());
    let (h, m) = (hm.next().unwrap(), hm.next().unwrap());
    let at = |d: i32| format!("{:02}:{m:02}", (h + d).rem_euclid(24));
    format!("{}-{}", at(from), at(to))
}

#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_reboot_waits_for_its_window_and_goes_through_systemd() {
    let mut rig = Rig::new("nixreboot", Path::new(HAIL));
    let later = window(&rig, 2, 3);
    configure(
        &rig,
        &format!("HAIL_REBOOT=when-needed\nHAIL_REBOOT_WINDOW={later}\n"),
    );
    let (v1, b1) = release(&rig, "1", "1", 0, "");
    rig.c.systemctl_ok("start", OS);
    wait_status(&rig, &format!("deployed build {b1} ("));
    rig.c.exec(&["ln", "-sfn", &v1.out_path, BOOTED]);

    // A new kernel outside the window: hail says when it will reboot, and does not.
    let (_, b2) = release(&rig, "2", "2", 0, "");
    reload(&rig);
    wait_status(&rig, &format!("deployed build {b2} ("));
    let said = rig.c.wait_for("the reboot's window", OS, DEPLOY, |c| {
        let e = c.journal(&["-u", OS, "HAIL_EVENT=reboot"]);
        (!e.is_empty()).then_some(e)
    });
    let message = hail_testkit::container::field(&said[0], "MESSAGE").unwrap_or_default();
    assert!(
        message.contains(&format!("when the window {later} (local time) opens, in ")),
        "{message}"
    );
    assert!(
        rig.c.ended().is_none(),
        "the container rebooted outside the window"
    );

    // A window that opens in 40 to 100 seconds: the poll period is an hour, yet hail wakes when
    // the window opens (plus up to 12 s, a tenth of the window), and the reboot goes through
    // systemd (the container's systemd ends).
    let asked = std::time::Instant::now();
    let (soon, opens_in) = window_opening_soon(&rig);
    configure(
        &rig,
        &format!("HAIL_REBOOT=when-needed\nHAIL_REBOOT_WINDOW={soon}\n"),
    );
    rig.c.systemctl(&["restart", "--no-block", OS]);
    let waiting = format!("when the window {soon} (local time) opens, in ");
    rig.c
        .wait_for("the wait for the window opening soon", OS, DEPLOY, |c| {
            c.journal(&["-u", OS, "HAIL_EVENT=reboot"])
                .iter()
                .find_map(|e| {
                    let m = hail_testkit::container::field(e, "MESSAGE")?;
                    m.contains(&waiting).then_some(())
                })
        });
    let deadline = std::time::Instant::now() + opens_in + DEPLOY;
    let status = loop {
        if let Some(status) = rig.c.ended() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reboot:\n{}",
            rig.c.unit_log(OS)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // systemd-nspawn exits 133 when the container reboots.
    assert_eq!(status.code(), Some(133), "{}", rig.c.log());
    // Not before the window opened (the container's clock reads whole seconds).
    let took = asked.elapsed();
    assert!(
        took + Duration::from_secs(1) >= opens_in,
        "rebooted after {took:?}, the window opened after {opens_in:?}"
    );
}

/// A new system that cuts the host off from Hydra is undone with switch-to-configuration: hail
/// cannot confirm contact after the switch, so it switches back to the last good system.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_system_that_cuts_contact_is_switched_back() {
    let rig = Rig::new("nixcontact", Path::new(HAIL));
    let c = &rig.c;
    configure(&rig, "HAIL_CONFIRM_TIMEOUT=3s\n");
    let (v1, b1) = release(&rig, "1", "1", 0, "");
    c.systemctl_ok("start", OS);
    wait_status(&rig, &format!("deployed build {b1} ("));
    // Its switch waits until the test has made Hydra stop answering (as a new firewall would).
    let (cut, go) = ("/var/lib/hail-nixos/cut", "/var/lib/hail-nixos/go");
    let (_, b2) = release(
        &rig,
        "2",
        "1",
        0,
        &format!("touch {cut}; while [ ! -e {go} ]; do sleep 0.05; done"),
    );
    reload(&rig);
    c.wait_for("the switch to system 2", OS, DEPLOY, |c| c.read_file(cut));
    rig.hydra.override_path(
        &rig.hydra.default_latest_path(),
        hail_testkit::hydra::Override::respond(502, "text/html", "<html>Bad Gateway</html>"),
    );
    c.write_file(go, "");
    let status = wait_status(&rig, &format!("deploying build {b2} failed"));
    assert!(status.contains("contact with Hydra was lost"), "{status}");
    assert_eq!(readlink(&rig, SYSTEM), v1.out_path);
    assert_eq!(readlink(&rig, "/run/current-system"), v1.out_path);
    let s = switches(&rig);
    assert!(
        s.last()
            .is_some_and(|l| l.starts_with(&format!("1 switch {}", v1.out_path))),
        "{s:?}"
    );
    let said = c.journal(&["-u", OS, "HAIL_EVENT=contact-lost"]);
    assert_eq!(said.len(), 1, "{said:?}");
}

/// A switch that restarts hail and then fails (exit 4): the restarted hail follows the switch's
/// unit to its end, judges its result, rolls the system back and makes the build known-bad.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_container),
    ignore = "needs root, Nix, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_switch_that_restarts_hail_and_fails_is_rolled_back_by_the_new_hail() {
    let rig = Rig::new("nixselffail", Path::new(HAIL));
    let c = &rig.c;
    configure(&rig, "");
    let (v1, b1) = release(&rig, "1", "1", 0, "");
    c.systemctl_ok("start", OS);
    wait_status(&rig, &format!("deployed build {b1} ("));
    let pid = c.show(OS, "MainPID");
    let (v2, b2) = release(
        &rig,
        "2",
        "1",
        4,
        "systemctl restart hail@os.service && sleep 1",
    );
    reload(&rig);
    // The new hail's verdict (its status then says the build is known-bad).
    let status = wait_status(&rig, "known to be bad");
    assert!(status.contains(&format!("build {b2} (")), "{status}");
    assert!(
        status.contains("switch-to-configuration switch exited 4"),
        "{status}"
    );
    assert_ne!(c.show(OS, "MainPID"), pid, "hail was not restarted");
    assert_eq!(readlink(&rig, SYSTEM), v1.out_path);
    let s = switches(&rig);
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(
        s[1].starts_with(&format!("2 switch {}", v2.out_path)),
        "{s:?}"
    );
    assert!(
        s[2].starts_with(&format!("1 switch {}", v1.out_path)),
        "{s:?}"
    );
    let known = rig.c.exec(&["hail", "status", "os", "--json"]);
    let known: serde_json::Value = serde_json::from_str(&known).unwrap();
    assert_eq!(known["known_bad"][0]["build_id"], b2, "{known}");
}
