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
fn a_path_that_is_not_a_system_is_refused_with_the_profile_untouched() {
    let Some(f) = Fixture::new() else { return };
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
        fs::symlink_metadata(&f.hail.profile).is_err(),
        "{}",
        r.output
    );
    assert_eq!(f.generations(), Vec::<String>::new());
    assert_eq!(f.activations(), Vec::<String>::new());
}

#[test]
fn a_system_is_switched_to_and_a_failing_switch_rolled_back() {
    let Some(f) = Fixture::new() else { return };
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
