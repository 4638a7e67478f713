//! `hail@` units as systemd sees them: their names, the command lines that act on them (as
//! data), and the parsing of what systemd and `/proc` report about them.

use std::collections::BTreeMap;
use std::path::Path;

use super::set::{CONFIG_VAR, valid_name};
use crate::process::CommandLine;

/// The unit of instance `name`.
pub fn unit(name: &str) -> String {
    format!("hail@{name}.service")
}

/// The instance whose unit is `unit` (`hail@NAME.service`).
pub fn instance_of_unit(unit: &str) -> Option<&str> {
    unit.strip_prefix("hail@")?.strip_suffix(".service")
}

/// The hail instance a process runs in, from its `/proc/PID/cgroup` text.
pub fn instance_of_cgroup(cgroup: &str) -> Option<String> {
    let unit = crate::systemd::unit_of_cgroup(cgroup)?;
    let name = instance_of_unit(&unit)?;
    valid_name(name).then(|| name.to_string())
}

/// `systemctl ARGS -- UNITS`, for the units of the instances `names`.
fn systemctl(args: &[&str], names: &[String]) -> CommandLine {
    CommandLine::new("systemctl")
        .args(args)
        .arg("--")
        .args(names.iter().map(|n| unit(n)))
}

/// What [`parse_show`] reads, for each instance.
pub fn show(names: &[String]) -> CommandLine {
    systemctl(
        &[
            "show",
            "--property=Id,ActiveState,SubState,MainPID,ExecMainStatus",
        ],
        names,
    )
}

pub fn daemon_reload() -> CommandLine {
    CommandLine::new("systemctl").arg("daemon-reload")
}

/// (Re)starts the instances together and waits for them to be started.
pub fn restart(names: &[String]) -> CommandLine {
    systemctl(&["restart"], names)
}

/// Queues a restart of the instance without waiting for it: the instance may be running this
/// very apply.
pub fn restart_no_block(name: &str) -> CommandLine {
    systemctl(&["restart", "--no-block"], &[name.to_string()])
}

pub fn stop(name: &str) -> CommandLine {
    systemctl(&["stop"], &[name.to_string()])
}

/// Forgets that the instances failed (a failed unit stays listed, and one that hit its start
/// limit refuses to start).
pub fn reset_failed(names: &[String]) -> CommandLine {
    systemctl(&["reset-failed"], names)
}

/// The last lines an apply's transient unit logged.
pub fn journal(unit: &str) -> CommandLine {
    CommandLine::new("journalctl")
        .arg(format!("--unit={unit}"))
        .args(["--output=cat", "--no-pager", "--lines=50"])
}

/// What the apply's transient unit gets from the caller's environment: where the tools are,
/// how Nix is configured, the log level.
pub const PASSED_ENV: &[&str] = &["PATH", "NIX_CONFIG", "NIX_REMOTE", "RUST_LOG"];

/// `systemd-run` starting `exe apply-instances --direct …` in its own transient unit and
/// waiting for it: the unit is outside the caller's cgroup, so stopping the caller (the
/// manager restarting itself) does not stop the apply. Its output goes to the journal; a
/// pipe back to the caller would break when the caller goes.
pub fn systemd_run_apply(
    unit_name: &str,
    exe: &Path,
    set_file: &Path,
    caller: Option<&str>,
    env: &[(String, String)],
) -> CommandLine {
    CommandLine::new("systemd-run")
        .arg(format!("--unit={unit_name}"))
        .arg(format!(
            "--description=hail: apply the instance set {}",
            set_file.display()
        ))
        .args(["--service-type=exec", "--wait", "--quiet"])
        .args(env.iter().map(|(k, v)| format!("--setenv={k}={v}")))
        .arg("--")
        .arg(exe)
        .args(["apply-instances", "--direct"])
        .args(caller.map(|caller| format!("--caller={caller}")))
        .arg(set_file)
}

/// Parses `systemctl show` output for several units: instance → (ActiveState, MainPID).
pub fn parse_show(text: &str) -> BTreeMap<String, Shown> {
    let mut out = BTreeMap::new();
    for block in text.split("\n\n") {
        let mut id = None;
        let mut shown = Shown::default();
        for line in block.lines() {
            match line.split_once('=') {
                Some(("Id", v)) => id = instance_of_unit(v),
                Some(("ActiveState", v)) => shown.state = v.to_string(),
                Some(("MainPID", v)) => shown.pid = v.parse().unwrap_or(0),
                Some(("ExecMainStatus", v)) => shown.exit_status = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        if let Some(id) = id {
            out.insert(id.to_string(), shown);
        }
    }
    out
}

/// An instance's unit as `systemctl show` tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    pub state: String,
    pub pid: u32,
    /// How its main process last exited.
    pub exit_status: i32,
}

/// The configuration id in a process's environment (`/proc/PID/environ` text).
pub fn config_id_in_environ(environ: &[u8]) -> Option<String> {
    let prefix = format!("{CONFIG_VAR}=");
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&prefix).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_from_cgroup() {
        assert_eq!(
            instance_of_cgroup("0::/system.slice/system-hail.slice/hail@manager.service\n"),
            Some("manager".into())
        );
        assert_eq!(
            instance_of_cgroup(
                "12:pids:/x\n1:name=systemd:/system.slice/system-hail.slice/hail@m-1.service\n"
            ),
            Some("m-1".into())
        );
        assert_eq!(
            instance_of_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(
            instance_of_cgroup("0::/system.slice/hail-apply-x.service\n"),
            None
        );
    }

    #[test]
    fn command_lines() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            restart(&names).display(),
            "systemctl restart -- hail@a.service hail@b.service"
        );
        assert_eq!(
            restart_no_block("m").display(),
            "systemctl restart --no-block -- hail@m.service"
        );
        assert_eq!(stop("a").display(), "systemctl stop -- hail@a.service");
        assert_eq!(
            show(&names).display(),
            "systemctl show --property=Id,ActiveState,SubState,MainPID,ExecMainStatus -- hail@a.service \
             hail@b.service"
        );
        let run = systemd_run_apply(
            "hail-apply-m-1-2",
            Path::new("/nix/store/x-hail/bin/hail"),
            Path::new("/nix/store/y-set/instances.json"),
            Some("m"),
            &[("PATH".into(), "/usr/bin:/bin".into())],
        );
        assert_eq!(
            run.display(),
            "systemd-run --unit=hail-apply-m-1-2 --description=hail: apply the instance set \
             /nix/store/y-set/instances.json --service-type=exec --wait --quiet \
             --setenv=PATH=/usr/bin:/bin -- /nix/store/x-hail/bin/hail apply-instances --direct \
             --caller=m /nix/store/y-set/instances.json"
        );
    }

    #[test]
    fn show_output_and_environ() {
        let text = "Id=hail@a.service\nActiveState=active\nSubState=running\nMainPID=42\n\
                    ExecMainStatus=0\n\n\
                    Id=hail@b.service\nActiveState=failed\nSubState=failed\nMainPID=0\n\
                    ExecMainStatus=219\n";
        let parsed = parse_show(text);
        let shown = |state: &str, pid, exit_status| Shown {
            state: state.into(),
            pid,
            exit_status,
        };
        assert_eq!(parsed["a"], shown("active", 42, 0));
        assert_eq!(parsed["b"], shown("failed", 0, 219));
        let environ = b"PATH=/bin\0HAIL_MANAGER_CONFIG=00ff\0X=1\0";
        assert_eq!(config_id_in_environ(environ), Some("00ff".into()));
        assert_eq!(config_id_in_environ(b"PATH=/bin\0"), None);
    }
}
