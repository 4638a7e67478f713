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

/// A deployment's switch that a hail restarted by the switch itself can follow: its unit is
/// named for the build, and systemd writes how it ended (`SERVICE_RESULT EXIT_STATUS`, e.g.
/// `success 0`, `exit-code 4`) to `result` when it ends, whoever waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub unit: String,
    pub result: PathBuf,
}

impl Tracked {
    /// The switch of build `build_id`, its result kept in `dir` (the state directory); `None`
    /// when `dir` cannot be written into a unit's command line as it is.
    pub fn new(build_id: u64, dir: &Path) -> Option<Tracked> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-+@:".contains(c))
        };
        let result = dir.join(format!("switch-{build_id}.result"));
        plain(&result.to_string_lossy()).then(|| Tracked {
            unit: format!("hail-switch-to-configuration-{build_id}"),
            result,
        })
    }
}

/// `SYSTEM/bin/switch-to-configuration ACTION`, in the transient unit `unit` (through
/// `systemd-run`, as `nixos-rebuild` runs it) when one is given, directly otherwise; with
/// `result`, the unit writes how it ended there (see [`Tracked`]).
pub fn switch_command(
    system: &Path,
    action: SwitchAction,
    unit: Option<&str>,
    result: Option<&Path>,
) -> CommandLine {
    let script = system.join("bin/switch-to-configuration");
    let Some(unit) = unit else {
        return CommandLine::new(script).arg(action.as_str());
    };
    let mut cmd = CommandLine::new("systemd-run")
        .args(["-E", "LOCALE_ARCHIVE", "-E", "NIXOS_INSTALL_BOOTLOADER"])
        .args(["--collect", "--no-ask-password", "--pipe", "--quiet"])
        .args(["--service-type=exec", &format!("--unit={unit}"), "--wait"]);
    if let Some(result) = result {
        // `$$` is a literal `$` for systemd: the shell reads systemd's variables.
        // `-`: a result that cannot be written does not fail the switch's unit.
        cmd = cmd.arg("-p").arg(format!(
            "ExecStopPost=-/bin/sh -c 'echo \"$$SERVICE_RESULT $$EXIT_STATUS\" > \"$$0\"' {}",
            result.display()
        ));
    }
    cmd.arg(script).arg(action.as_str())
}

/// Stops a switch's unit that ran out of time (what fails is left to the unit's own log).
async fn stop_unit(unit: &str, watchdog: &Watchdog) {
    let stop = CommandLine::new("systemctl").args(["stop", "--", unit]);
    let _ = process::run_async(&stop, SYSTEMCTL_TIMEOUT, watchdog, str::to_owned).await;
}

/// The system the host booted (`--booted-system` resolved), if it is a store path.
pub fn booted(booted_system: &Path) -> Option<crate::store_path::StorePath> {
    let target = std::fs::canonicalize(booted_system).ok()?;
    crate::store_path::StorePath::parse(&target.to_string_lossy()).ok()
}

/// How a followed switch ended.
#[derive(Debug)]
pub enum Followed {
    /// It ran to success.
    Succeeded,
    /// It failed (as [`switch`] reports it).
    Failed(ActivationError),
    /// It never started: no result, no unit.
    NeverRan,
}

/// Follows the switch `tracked` to its end, as a hail restarted by it does: its result, once the
/// unit has ended, bounded by `timeout` (a unit that runs out of time is stopped). The result
/// file is left for the caller to remove once it has concluded the deployment.
pub async fn follow(
    tracked: &Tracked,
    action: SwitchAction,
    timeout: Duration,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
) -> Followed {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(ended) = read_result(&tracked.result) {
            return ended_as(&ended, action);
        }
        let show = CommandLine::new("systemctl").args([
            "show",
            "--property=ActiveState",
            "--value",
            "--",
            &tracked.unit,
        ]);
        let state = tokio::task::spawn_blocking(move || {
            process::run_captured(&show, SYSTEMCTL_TIMEOUT).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        // Not loaded is `inactive`; `deactivating` is its ExecStopPost= writing the result.
        let running = matches!(
            state.trim(),
            "active" | "activating" | "deactivating" | "reloading"
        );
        if !running {
            // It may have ended between the two looks.
            return match read_result(&tracked.result) {
                Some(ended) => ended_as(&ended, action),
                None => Followed::NeverRan,
            };
        }
        if tokio::time::Instant::now() >= deadline {
            stop_unit(&tracked.unit, watchdog).await;
            return Followed::Failed(ActivationError::Timeout {
                script: tracked.unit.clone(),
                timeout,
            });
        }
        watchdog.ping();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            // The switch goes on; the next start follows it again.
            _ = stop.wait_for(|s| *s) => {
                return Followed::Failed(ActivationError::Detached {
                    unit: tracked.unit.clone(),
                });
            }
        }
    }
}

/// How the switch `tracked` ended, if its unit has written it.
pub fn ended(tracked: &Tracked, action: SwitchAction) -> Option<Followed> {
    read_result(&tracked.result).map(|text| ended_as(&text, action))
}

fn read_result(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .filter(|t| t.ends_with('\n'))
}

/// `SERVICE_RESULT EXIT_STATUS`, as the unit's `ExecStopPost=` wrote it.
fn ended_as(text: &str, action: SwitchAction) -> Followed {
    let mut words = text.split_whitespace();
    let (result, status) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    match (result, status.parse::<i32>()) {
        // systemd calls a service killed by SIGTERM (a shutdown) a success too: not the switch.
        ("success", Ok(0)) => Followed::Succeeded,
        (_, Ok(code)) if code != 0 => Followed::Failed(ActivationError::Switch {
            action: action.as_str(),
            code,
            meaning: exit_meaning(code),
        }),
        _ => Followed::Failed(ActivationError::Ended {
            how: format!("its unit ended with {}", text.trim()),
        }),
    }
}

/// What `switch-to-configuration`'s exit code means (nixpkgs' switch-to-configuration-ng).
pub fn exit_meaning(code: i32) -> &'static str {
    match code {
        1 => "usage, pre-switch checks or the boot loader installation failed",
        2 => "the system's activation script failed",
        4 => "some units failed",
        c if never_started(c) => "systemd could not start it (see systemd.exec(5), exit codes)",
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
    tracked: Option<&Tracked>,
    timeout: Duration,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
    mut on_line: impl FnMut(&str),
) -> Result<(), ActivationError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let ran = switch_once(
            system,
            action,
            tracked,
            timeout,
            watchdog,
            stop,
            &mut on_line,
        )
        .await;
        match ran {
            // systemd could not start the switch in its unit (it never ran): once more.
            Err(ActivationError::Switch { code, .. }) if never_started(code) && tries == 1 => {
                tracing::warn!(
                    hail.event = "activation-output",
                    "systemd could not start switch-to-configuration (exit {code}); trying once more"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

use crate::systemd::setup_failed as never_started;

async fn switch_once(
    system: &Path,
    action: SwitchAction,
    tracked: Option<&Tracked>,
    timeout: Duration,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
    on_line: impl FnMut(&str),
) -> Result<(), ActivationError> {
    let systemd = Path::new(SYSTEMD_RUNNING).is_dir();
    let tracked = tracked.filter(|_| systemd);
    let unit = match tracked {
        Some(t) => Some(t.unit.clone()),
        None => systemd.then(unit_name),
    };
    if let Some(t) = tracked {
        let _ = std::fs::remove_file(&t.result);
    }
    let cmd = switch_command(
        system,
        action,
        unit.as_deref(),
        tracked.map(|t| t.result.as_path()),
    );
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
                stop_unit(unit, watchdog).await;
            }
            // Seen through here: its result is only for a hail it restarts.
            if let (Some(t), false) = (
                tracked,
                matches!(result, Err(ActivationError::Detached { .. })),
            ) {
                let _ = std::fs::remove_file(&t.result);
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
            switch_command(sys, SwitchAction::Boot, None, None).display(),
            "/nix/store/aaa-nixos-system/bin/switch-to-configuration boot"
        );
        assert_eq!(
            switch_command(
                sys,
                SwitchAction::Switch,
                Some("hail-switch-to-configuration-7-0"),
                None,
            )
            .display(),
            "systemd-run -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER --collect --no-ask-password \
             --pipe --quiet --service-type=exec --unit=hail-switch-to-configuration-7-0 --wait \
             /nix/store/aaa-nixos-system/bin/switch-to-configuration switch"
        );
        assert_ne!(unit_name(), unit_name());
        let tracked = switch_command(
            sys,
            SwitchAction::Switch,
            Some("hail-switch-to-configuration-7"),
            Some(Path::new("/var/lib/hail/os/switch-7.result")),
        );
        assert!(
            tracked.display().contains(
                "-p ExecStopPost=-/bin/sh -c 'echo \"$$SERVICE_RESULT $$EXIT_STATUS\" > \"$$0\"' \
                 /var/lib/hail/os/switch-7.result /nix/store/aaa-nixos-system/bin/switch-to-configuration switch"
            ),
            "{}",
            tracked.display()
        );
    }

    #[test]
    fn systemds_own_exit_codes_mean_the_switch_never_ran() {
        assert!(never_started(219) && never_started(200) && never_started(243));
        assert!(!never_started(4) && !never_started(1) && !never_started(244));
        assert!(exit_meaning(219).starts_with("systemd could not start it"));
    }

    #[test]
    fn a_followed_switch_is_judged_by_its_units_result() {
        let judged = |text: &str| match ended_as(text, SwitchAction::Switch) {
            Followed::Succeeded => "ok".to_owned(),
            Followed::Failed(e) => e.to_string(),
            Followed::NeverRan => "never".to_owned(),
        };
        assert_eq!(judged("success 0\n"), "ok");
        assert_eq!(
            judged("success TERM\n"),
            "switch-to-configuration: its unit ended with success TERM"
        );
        assert_eq!(
            judged("exit-code 4\n"),
            "switch-to-configuration switch exited 4: some units failed"
        );
        assert_eq!(
            judged("signal KILL\n"),
            "switch-to-configuration: its unit ended with signal KILL"
        );
        let dir = tempfile::tempdir().unwrap();
        let t = Tracked::new(7, dir.path()).unwrap();
        assert_eq!(t.unit, "hail-switch-to-configuration-7");
        assert!(ended(&t, SwitchAction::Switch).is_none());
        std::fs::write(&t.result, "exit-code 2").unwrap();
        assert!(ended(&t, SwitchAction::Switch).is_none(), "half written");
        std::fs::write(&t.result, "exit-code 2\n").unwrap();
        assert!(matches!(
            ended(&t, SwitchAction::Switch),
            Some(Followed::Failed(_))
        ));
        assert!(Tracked::new(7, Path::new("/var/lib/hail/we b")).is_none());
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
