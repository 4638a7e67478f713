//! `--system` without systemd (as on this test host: switch-to-configuration runs directly): a
//! path that is not a NixOS system is refused with the profile untouched, a system is switched
//! to, and a failing switch is rolled back to the previous system. The transient unit, the
//! `boot` and `test` actions and reboots are tested in a booted container (tests/system.rs).

use std::fs;
use std::path::Path;

use hail_testkit::cache::{Published, nixos_system_nix};

use crate::fixture::{Fixture, RUN};

/// Publishes a fake NixOS system at `version` whose switch-to-configuration exits `exit`; its log
/// and boot entry live in the fixture's directory.
fn publish_system(f: &Fixture, version: &str, exit: i32) -> Published {
    let dir = f.tmp.path();
    let (log, boot, current) = (
        dir.join("switches"),
        dir.join("boot-entry"),
        dir.join("current"),
    );
    let exit = exit.to_string();
    let nonce = format!("{}-{version}", dir.display()).replace('/', "-");
    #[rustfmt::skip]
    let args = [
        "--argstr", "version", version,
        "--argstr", "nonce", &nonce,
        "--argstr", "log", log.to_str().unwrap(),
        "--argstr", "bootEntry", boot.to_str().unwrap(),
        "--argstr", "currentSystem", current.to_str().unwrap(),
        "--argstr", "switchExit", &exit,
    ];
    f.cache.publish_nix(&nixos_system_nix(), &args)
}

fn switches(f: &Fixture) -> Vec<String> {
    fs::read_to_string(f.tmp.path().join("switches"))
        .map(|s| {
            s.lines()
                .map(|l| l.split(" unit=").next().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_path_that_is_not_a_system_is_refused_with_the_profile_untouched() {
    let f = Fixture::new();
    let (p, _) = f.release("1");
    let r = f.hail.oneshot(&["--system"], RUN);
    assert_eq!(r.code(), Some(6), "{}", r.output);
    assert!(
        r.output.contains(&format!(
            "{} is not a NixOS system (it has no bin/switch-to-configuration)",
            p.out_path
        )),
        "{}",
        r.output
    );
    assert!(
        fs::symlink_metadata(&f.hail.profile)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
        "{}",
        r.output
    );
    assert_eq!(f.generations(), Vec::<String>::new());
    assert_eq!(f.activations(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_system_is_switched_to_and_a_failing_switch_rolled_back() {
    let f = Fixture::new();
    let one = publish_system(&f, "1", 0);
    f.make_latest(&one);
    let r = f.hail.oneshot(&["--system"], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    assert_eq!(f.profile_target().as_deref(), Some(one.out_path.as_str()));
    assert_eq!(switches(&f), [format!("1 switch {}", one.out_path)]);
    let boot = fs::read_to_string(f.tmp.path().join("boot-entry")).unwrap();
    assert_eq!(boot.trim(), one.out_path);
    assert!(
        r.output
            .contains("switch-to-configuration: switch-to-configuration 1 switch"),
        "{}",
        r.output
    );

    // switch-to-configuration exits 4 (units failed): back to system 1, and its switch again.
    let two = publish_system(&f, "2", 4);
    f.make_latest(&two);
    let r = f.hail.oneshot(&["--system"], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert!(
        r.output
            .contains("switch-to-configuration switch exited 4: some units failed"),
        "{}",
        r.output
    );
    assert_eq!(f.profile_target().as_deref(), Some(one.out_path.as_str()));
    assert_eq!(
        switches(&f),
        [
            format!("1 switch {}", one.out_path),
            format!("2 switch {}", two.out_path),
            format!("1 switch {}", one.out_path),
        ]
    );
    let boot = fs::read_to_string(f.tmp.path().join("boot-entry")).unwrap();
    assert_eq!(boot.trim(), one.out_path);
    // Known-bad: not tried again.
    let r = f.hail.oneshot(&["--system"], RUN);
    assert_eq!(r.code(), Some(7), "{}", r.output);
    assert_eq!(switches(&f).len(), 3);
    assert!(Path::new(&two.out_path).exists());
}

/// A reboot into a new system that cannot reach Hydra: at its first start hail makes the system
/// booted before the boot default again and reboots into it, once. `systemctl` is a stand-in that
/// records the reboots (this host's systemd must not reboot); the reboot itself through systemd is
/// tested in a booted container (tests/nixos_system.rs).
#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_reboot_into_a_system_that_cannot_reach_hydra_goes_back_once() {
    let f = Fixture::new();
    let dir = f.tmp.path();
    let (bin, reboots, booted) = (dir.join("bin"), dir.join("reboots"), dir.join("booted"));
    fs::create_dir_all(&bin).unwrap();
    fs::write(
        bin.join("systemctl"),
        format!("#!/bin/sh\necho \"$*\" >> {}\n", reboots.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(bin.join("systemctl"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let booted_arg = booted.to_str().unwrap().to_owned();
    let run = |f: &Fixture| {
        let mut r = f.hail.spawn_env(
            &[
                "--oneshot",
                "--system",
                "--reboot",
                "when-needed",
                "--booted-system",
                &booted_arg,
                "--confirm-timeout",
                "1s",
            ],
            &[("PATH", &path)],
        );
        let status = r.wait_timeout(RUN).expect("hail exits");
        (status.code(), r.output())
    };
    let reboots_asked = || {
        fs::read_to_string(&reboots)
            .map(|s| s.lines().filter(|l| *l == "reboot").count())
            .unwrap_or(0)
    };

    let one = publish_system_with_kernel(&f, "1", "1");
    f.make_latest(&one);
    assert_eq!(run(&f).0, Some(0));
    std::os::unix::fs::symlink(&one.out_path, &booted).unwrap();
    // A new kernel: deployed, and hail reboots.
    let two = publish_system_with_kernel(&f, "2", "2");
    let b2 = f.make_latest(&two);
    let (code, out) = run(&f);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(reboots_asked(), 1, "{out}");

    // It came up in system 2, which cannot reach Hydra.
    fs::remove_file(&booted).unwrap();
    std::os::unix::fs::symlink(&two.out_path, &booted).unwrap();
    let latest = f.hydra.default_latest_path();
    f.hydra.override_path(
        &latest,
        hail_testkit::hydra::Override::respond(502, "text/html", "<html>Bad Gateway</html>"),
    );
    let (_, out) = run(&f);
    assert!(
        out.contains(&format!(
            "contact with Hydra was lost after the reboot to {}",
            two.out_path
        )),
        "{out}"
    );
    assert_eq!(reboots_asked(), 2, "{out}");
    assert_eq!(f.profile_target().as_deref(), Some(one.out_path.as_str()));
    assert_eq!(
        switches(&f).last(),
        Some(&format!("1 boot {}", one.out_path)),
        "{out}"
    );

    // Back in system 1: nothing more, and system 2 is not deployed again.
    fs::remove_file(&booted).unwrap();
    std::os::unix::fs::symlink(&one.out_path, &booted).unwrap();
    f.hydra.clear_override(&latest);
    let (code, out) = run(&f);
    assert_eq!(code, Some(7), "{out}");
    assert!(
        out.contains(&format!("build {b2}")) && out.contains("known to be bad"),
        "{out}"
    );
    assert_eq!(reboots_asked(), 2, "{out}");
    assert_eq!(f.profile_target().as_deref(), Some(one.out_path.as_str()));
}

/// As [`publish_system`], with its own kernel, initrd and modules named `kernel`.
fn publish_system_with_kernel(f: &Fixture, version: &str, kernel: &str) -> Published {
    let dir = f.tmp.path();
    let nonce = format!("{}-{version}", dir.display()).replace('/', "-");
    let (log, boot, current) = (
        dir.join("switches"),
        dir.join("boot-entry"),
        dir.join("current"),
    );
    #[rustfmt::skip]
    let args = [
        "--argstr", "version", version,
        "--argstr", "nonce", &nonce,
        "--argstr", "kernel", kernel,
        "--argstr", "log", log.to_str().unwrap(),
        "--argstr", "bootEntry", boot.to_str().unwrap(),
        "--argstr", "currentSystem", current.to_str().unwrap(),
    ];
    f.cache.publish_nix(&nixos_system_nix(), &args)
}
