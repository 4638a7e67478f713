//! Running other programs: a command line as data (so what hail runs is unit-tested without
//! running it), and runners that always end within a time bound — an asynchronous one for the
//! agent (the watchdog is pinged while it waits) and blocking ones for the manager.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::systemd::{self, Watchdog};

/// A command line: program and arguments, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    program: OsString,
    args: Vec<OsString>,
}

impl CommandLine {
    /// `program`, without arguments so far.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        CommandLine {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The program and its first argument (`nix-store --realise`, `systemctl restart`): enough
    /// to name the step in a one-line error, whose context names what it acted on.
    pub fn summary(&self) -> String {
        let program = self.program.to_string_lossy();
        match self.args.first() {
            Some(a) => format!("{program} {}", a.to_string_lossy()),
            None => program.into_owned(),
        }
    }

    /// The whole command line, for debug logs and tests.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The command with nothing on its stdin: nobody answers a question it asks.
    pub(crate) fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null());
        command
    }
}

/// How running a command went wrong. The command is named by its [`CommandLine::summary`].
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} did not finish within {}", crate::format::duration(*.timeout))]
    Timeout { command: String, timeout: Duration },
    #[error("{command} failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Failed {
        command: String,
        status: ExitStatus,
        /// What it printed on stderr, as its runner reports it (empty when not captured).
        stderr: String,
    },
}

impl ProcessError {
    fn spawn(cmd: &CommandLine, source: std::io::Error) -> ProcessError {
        ProcessError::Spawn {
            command: cmd.summary(),
            source,
        }
    }

    fn timeout(cmd: &CommandLine, timeout: Duration) -> ProcessError {
        ProcessError::Timeout {
            command: cmd.summary(),
            timeout,
        }
    }
}

/// `Ok` for a successful exit, else the failure with `stderr`.
fn check_exit(cmd: &CommandLine, status: ExitStatus, stderr: String) -> Result<(), ProcessError> {
    if status.success() {
        Ok(())
    } else {
        Err(ProcessError::Failed {
            command: cmd.summary(),
            status,
            stderr,
        })
    }
}

/// Runs `cmd` with this process's environment minus the systemd notification variables,
/// bounded by `timeout` (then killed); pings the watchdog while it waits. What it prints on
/// stdout is not used; its stderr, reduced by `summarize`, explains a failure.
pub async fn run_async(
    cmd: &CommandLine,
    timeout: Duration,
    watchdog: &Watchdog,
    summarize: fn(&str) -> String,
) -> Result<(), ProcessError> {
    tracing::debug!("running {}", cmd.display());
    let mut command = tokio::process::Command::from(cmd.command());
    command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    systemd::strip_notify_env(&mut command);
    let child = command
        .spawn()
        .map_err(|source| ProcessError::spawn(cmd, source))?;
    let out = watchdog
        .bounded(timeout, child.wait_with_output())
        .await
        .map_err(|_| ProcessError::timeout(cmd, timeout))?
        .map_err(|source| ProcessError::spawn(cmd, source))?;
    check_exit(
        cmd,
        out.status,
        summarize(&String::from_utf8_lossy(&out.stderr)),
    )
}

/// Runs `cmd`, bounded by `timeout` (then killed), and returns its stdout; a failure carries
/// its stderr.
pub fn run_captured(cmd: &CommandLine, timeout: Duration) -> Result<String, ProcessError> {
    let mut command = cmd.command();
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|source| ProcessError::spawn(cmd, source))?;
    let stdout = read_to_end(child.stdout.take());
    let stderr = read_to_end(child.stderr.take());
    let status = wait_bounded(cmd, &mut child, timeout)?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    check_exit(cmd, status, stderr.trim().to_string())?;
    Ok(stdout)
}

/// Runs `cmd` with this process's stdout and stderr and `env` added to its environment,
/// bounded by `timeout` (then killed).
pub fn run_inherited(
    cmd: &CommandLine,
    env: &[(&str, &OsStr)],
    timeout: Duration,
) -> Result<(), ProcessError> {
    let mut command = cmd.command();
    command.envs(env.iter().copied());
    let mut child = command
        .spawn()
        .map_err(|source| ProcessError::spawn(cmd, source))?;
    let status = wait_bounded(cmd, &mut child, timeout)?;
    check_exit(cmd, status, String::new())
}

/// Reads a pipe to its end in a thread of its own, so that a child filling one pipe cannot
/// block while the other is read.
fn read_to_end<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

fn wait_bounded(
    cmd: &CommandLine,
    child: &mut Child,
    timeout: Duration,
) -> Result<ExitStatus, ProcessError> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProcessError::timeout(cmd, timeout));
            }
            Err(source) => return Err(ProcessError::spawn(cmd, source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> CommandLine {
        CommandLine::new("sh").args(["-c", script])
    }

    #[test]
    fn display_and_summary() {
        let c = CommandLine::new("systemctl")
            .arg("restart")
            .args(["--", "hail@a.service"]);
        assert_eq!(c.display(), "systemctl restart -- hail@a.service");
        assert_eq!(c.summary(), "systemctl restart");
        let bare = CommandLine::new("/p/bin/deactivate");
        assert_eq!(bare.display(), "/p/bin/deactivate");
        assert_eq!(bare.summary(), "/p/bin/deactivate");
    }

    #[test]
    fn a_timeout_reads_as_people_write_durations() {
        let e = ProcessError::Timeout {
            command: "nix-env --set".into(),
            timeout: Duration::from_secs(120),
        };
        assert_eq!(e.to_string(), "nix-env --set did not finish within 2m");
    }

    #[test]
    fn commands_are_bounded_and_report_failure() {
        let slow = CommandLine::new("sleep").arg("5");
        assert!(matches!(
            run_captured(&slow, Duration::from_millis(200)),
            Err(ProcessError::Timeout { .. })
        ));
        let failing = sh("echo oops >&2; exit 3");
        let e = run_captured(&failing, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("oops") && e.contains("3"), "{e}");
        assert_eq!(
            run_captured(&CommandLine::new("echo").arg("hi"), Duration::from_secs(5)).unwrap(),
            "hi\n"
        );
    }

    #[test]
    fn inherited_runs_get_their_environment() {
        let check = sh("test \"$X\" = yes");
        run_inherited(&check, &[("X", OsStr::new("yes"))], Duration::from_secs(5)).unwrap();
        assert!(matches!(
            run_inherited(&check, &[], Duration::from_secs(5)),
            Err(ProcessError::Failed { .. })
        ));
    }

    #[tokio::test]
    async fn the_async_runner_summarizes_stderr_and_is_bounded() {
        let failure = |cmd: CommandLine, timeout: Duration| async move {
            let last_line = |s: &str| s.lines().last().unwrap_or_default().to_string();
            run_async(&cmd, timeout, &Watchdog::disabled(), last_line)
                .await
                .unwrap_err()
        };
        let e = failure(
            sh("echo first >&2; echo last >&2; exit 1"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(e.to_string(), "sh -c failed (exit status: 1): last");
        let e = failure(
            CommandLine::new("sleep").arg("5"),
            Duration::from_millis(200),
        )
        .await;
        assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
        let e = failure(
            CommandLine::new("/nonexistent/program"),
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(e, ProcessError::Spawn { .. }), "{e}");
    }
}
