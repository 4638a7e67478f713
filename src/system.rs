//! Whole NixOS systems (`--system`): the check that a path is a NixOS system, the
//! `switch-to-configuration` command line (in a transient unit of its own when systemd runs, as
//! `nixos-rebuild` runs it), whether a reboot is needed, and the reboot itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::activation::{self, ActivationError};
use crate::decide::RebootPolicy;
use crate::process::{self, CommandLine};
use crate::systemd::Watchdog;

/// The profile a NixOS system boots from.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";
/// The system running now (set by the system's activation script).
pub const CURRENT_SYSTEM: &str = "/run/current-system";
/// The system the host booted.
pub const BOOTED_SYSTEM: &str = "/run/booted-system";
/// Where a running systemd says it runs.
const SYSTEMD_RUNNING: &str = "/run/systemd/system";
/// Bound on `systemctl stop` of a switch that ran out of time, and on `systemctl reboot`.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(90);

/// What `switch-to-configuration` is asked to do (`--switch-action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwitchAction {
    /// Make it the boot default and activate it now.
    #[default]
    Switch,
    /// Make it the boot default; it runs after the next reboot.
    Boot,
    /// Activate it now; the profile and the boot menu stay as they are.
    Test,
}

impl SwitchAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchAction::Switch => "switch",
            SwitchAction::Boot => "boot",
            SwitchAction::Test => "test",
        }
    }

    /// Whether the profile gets a new generation (not for `test`).
    pub fn sets_profile(self) -> bool {
        self != SwitchAction::Test
    }
}

/// The settings of `--system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemMode {
    pub action: SwitchAction,
    /// `--booted-system`: what the kernel, initrd and modules are compared with.
    pub booted_system: PathBuf,
    pub reboot: RebootPolicy,
}

/// A path that is not a NixOS system.
#[derive(Debug, thiserror::Error)]
#[error("{path} is not a NixOS system (it has no {missing}); refusing to switch to it")]
pub struct NotASystem {
    pub path: String,
    pub missing: &'static str,
}

/// Checks that `path` is a NixOS system: it has `bin/switch-to-configuration` and `nixos-version`.
pub fn check(path: &Path) -> Result<(), NotASystem> {
    for missing in ["bin/switch-to-configuration", "nixos-version"] {
        if !path.join(missing).is_file() {
            return Err(NotASystem {
                path: path.display().to_string(),
                missing,
            });
        }
    }
    Ok(())
}

/// `SYSTEM/bin/switch-to-configuration ACTION`, in the transient unit `unit` (through
/// `systemd-run`, as `nixos-rebuild` runs it) when one is given, directly otherwise.
pub fn switch_command(system: &Path, action: SwitchAction, unit: Option<&str>) -> CommandLine {
    let script = system.join("bin/switch-to-configuration");
    let Some(unit) = unit else {
        return CommandLine::new(script).arg(action.as_str());
    };
    CommandLine::new("systemd-run")
        .args(["-E", "LOCALE_ARCHIVE", "-E", "NIXOS_INSTALL_BOOTLOADER"])
        .args(["--collect", "--no-ask-password", "--pipe", "--quiet"])
        .args(["--service-type=exec", &format!("--unit={unit}"), "--wait"])
        .arg(script)
        .arg(action.as_str())
}

/// What `switch-to-configuration`'s exit code means (nixpkgs' switch-to-configuration-ng).
pub fn exit_meaning(code: i32) -> &'static str {
    match code {
        1 => "usage, pre-switch checks or the boot loader installation failed",
        2 => "the system's activation script failed",
        4 => "some units failed",
        _ => "it failed",
    }
}

/// A unit name of this process's own: never one a switch still running holds.
fn unit_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("hail-switch-to-configuration-{}-{n}", std::process::id())
}

/// Runs `SYSTEM/bin/switch-to-configuration ACTION`, its output to `on_line`, bounded by
/// `timeout` (a transient unit that runs out of time is stopped). Under systemd, a stop request
/// does not wait for the switch: it goes on in its unit (it may be restarting hail itself), and
/// [`ActivationError::Detached`] says so.
pub async fn switch(
    system: &Path,
    action: SwitchAction,
    timeout: Duration,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
    on_line: impl FnMut(&str),
) -> Result<(), ActivationError> {
    let unit = Path::new(SYSTEMD_RUNNING).is_dir().then(unit_name);
    let cmd = switch_command(system, action, unit.as_deref());
    let result = match &unit {
        None => activation::run(&cmd, &[], timeout, watchdog, stop, on_line).await,
        Some(unit) => {
            let (_never, mut not_stopping) = watch::channel(false);
            let run = activation::run(&cmd, &[], timeout, watchdog, &mut not_stopping, on_line);
            let result = tokio::select! {
                r = run => r,
                _ = stop.wait_for(|s| *s) => Err(ActivationError::Detached { unit: unit.clone() }),
            };
            if let Err(ActivationError::Timeout { .. }) = result {
                let stop_unit = CommandLine::new("systemctl").args(["stop", unit]);
                let _ = process::run_async(&stop_unit, SYSTEMCTL_TIMEOUT, watchdog, str::to_owned)
                    .await;
            }
            result
        }
    };
    match result {
        Err(ActivationError::Failed { status, .. }) if status.code().is_some() => {
            let code = status.code().unwrap_or_default();
            Err(ActivationError::Switch {
                action: action.as_str(),
                code,
                meaning: exit_meaning(code),
            })
        }
        other => other,
    }
}

/// What differs between `system` and the booted system (`kernel`, `initrd`, `kernel-modules`,
/// the links NixOS's own automatic upgrades compare); empty when nothing does or there is no
/// booted system to compare with. After `--switch-action boot`, a different system at all needs
/// a reboot to run.
pub fn reboot_needed(system: &Path, booted: &Path, action: SwitchAction) -> Vec<String> {
    let Ok(booted_target) = std::fs::canonicalize(booted) else {
        return Vec::new();
    };
    let mut differs: Vec<String> = ["kernel", "initrd", "kernel-modules"]
        .into_iter()
        .filter(|link| {
            std::fs::read_link(system.join(link)).ok() != std::fs::read_link(booted.join(link)).ok()
        })
        .map(str::to_owned)
        .collect();
    if differs.is_empty() && action == SwitchAction::Boot && booted_target != system {
        differs.push("system (--switch-action boot)".to_owned());
    }
    differs
}

/// `systemctl reboot`.
pub fn reboot_command() -> CommandLine {
    CommandLine::new("systemctl").arg("reboot")
}

/// Asks systemd to reboot.
pub async fn reboot(watchdog: &Watchdog) -> Result<(), process::ProcessError> {
    process::run_async(
        &reboot_command(),
        SYSTEMCTL_TIMEOUT,
        watchdog,
        str::to_owned,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn switch_command_lines() {
        let sys = Path::new("/nix/store/aaa-nixos-system");
        assert_eq!(
            switch_command(sys, SwitchAction::Boot, None).display(),
            "/nix/store/aaa-nixos-system/bin/switch-to-configuration boot"
        );
        assert_eq!(
            switch_command(
                sys,
                SwitchAction::Switch,
                Some("hail-switch-to-configuration-7-0")
            )
            .display(),
            "systemd-run -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER --collect --no-ask-password \
             --pipe --quiet --service-type=exec --unit=hail-switch-to-configuration-7-0 --wait \
             /nix/store/aaa-nixos-system/bin/switch-to-configuration switch"
        );
        assert_ne!(unit_name(), unit_name());
    }

    #[test]
    fn only_nixos_systems_pass() {
        let dir = tempfile::tempdir().unwrap();
        let err = check(dir.path()).unwrap_err();
        assert_eq!(err.missing, "bin/switch-to-configuration");
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/switch-to-configuration"), "").unwrap();
        assert_eq!(check(dir.path()).unwrap_err().missing, "nixos-version");
        std::fs::write(dir.path().join("nixos-version"), "25.11").unwrap();
        check(dir.path()).unwrap();
    }

    #[test]
    fn reboot_needed_compares_kernel_initrd_and_modules() {
        let dir = tempfile::tempdir().unwrap();
        let system = |name: &str, kernel: &str, initrd: &str| {
            let s = dir.path().join(name);
            std::fs::create_dir(&s).unwrap();
            symlink(kernel, s.join("kernel")).unwrap();
            symlink(initrd, s.join("initrd")).unwrap();
            symlink("/modules-1", s.join("kernel-modules")).unwrap();
            s
        };
        let booted = system("booted", "/k1", "/i1");
        let same = system("same", "/k1", "/i1");
        let new_kernel = system("new", "/k2", "/i2");
        assert!(reboot_needed(&same, &booted, SwitchAction::Switch).is_empty());
        assert_eq!(
            reboot_needed(&new_kernel, &booted, SwitchAction::Switch),
            ["kernel", "initrd"]
        );
        assert_eq!(
            reboot_needed(&same, &booted, SwitchAction::Boot),
            ["system (--switch-action boot)"]
        );
        assert!(reboot_needed(&booted, &booted, SwitchAction::Boot).is_empty());
        assert!(reboot_needed(&same, &dir.path().join("none"), SwitchAction::Switch).is_empty());
    }
}
