//! Running a profile's `bin/activate`: hail's environment minus the notification variables,
//! output forwarded to hail's log line by line, a time bound, and a grace period on shutdown.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::process::CommandLine;
use crate::systemd::{self, Watchdog};

/// How long a running activation may go on once hail is asked to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(60);
/// Between SIGTERM and SIGKILL for an activation that ran out of time.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// After the script exits, how long to keep reading output still in the pipes (a daemon it
/// started may hold them open forever).
const DRAIN: Duration = Duration::from_millis(200);
/// Longest output line logged as one entry; longer output is split (memory stays bounded).
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("cannot run {script}: {source}")]
    Spawn {
        script: String,
        source: std::io::Error,
    },
    #[error("{script} failed ({status})")]
    Failed { script: String, status: ExitStatus },
    #[error("{script} did not finish within {} and was killed", crate::format::duration(*.timeout))]
    Timeout { script: String, timeout: Duration },
    #[error(
        "{script} was killed: hail is stopping and it did not finish within {}",
        crate::format::duration(STOP_GRACE)
    )]
    Stopped { script: String },
    /// A system's switch-to-configuration exited non-zero (see [`crate::system::exit_meaning`]).
    #[error("switch-to-configuration {action} exited {code}: {meaning}")]
    Switch {
        action: &'static str,
        code: i32,
        meaning: &'static str,
    },
    /// A system's switch, followed by a hail it restarted, ended otherwise than by exiting
    /// (killed by a signal, timed out in systemd).
    #[error("switch-to-configuration: {how}")]
    Ended { how: String },
    /// hail is stopping while a system's switch goes on in its transient unit.
    #[error("hail is stopping; the switch goes on in the unit {unit}")]
    Detached { unit: String },
}

/// Whether the profile has an activation script at all.
pub fn exists(script: &Path) -> bool {
    script.is_file()
}

/// Runs `cmd` (a profile's `bin/activate`, or a health check) with `env` added, bounded by
/// `timeout`, cut short to `STOP_GRACE` once `stop` turns true. Each output line is passed to
/// `on_line`.
pub async fn run(
    cmd: &CommandLine,
    env: &[(&str, String)],
    timeout: Duration,
    watchdog: &Watchdog,
    stop: &mut watch::Receiver<bool>,
    mut on_line: impl FnMut(&str),
) -> Result<(), ActivationError> {
    let name = cmd.display();
    let mut cmd = tokio::process::Command::from(cmd.command());
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so a timeout can end everything it started.
    cmd.process_group(0);
    systemd::strip_notify_env(&mut cmd);
    let mut child = cmd.spawn().map_err(|source| ActivationError::Spawn {
        script: name.clone(),
        source,
    })?;
    let pgid = child.id().map(|id| id as i32);
    let (tx, mut lines) = mpsc::unbounded_channel();
    if let Some(out) = child.stdout.take() {
        forward(out, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward(err, tx);
    }

    let mut deadline = Instant::now() + timeout;
    let mut stopping = *stop.borrow();
    if stopping {
        deadline = deadline.min(Instant::now() + STOP_GRACE);
    }
    let mut ticks = watchdog.ticks();
    let status = loop {
        tokio::select! {
            status = child.wait() => {
                break status.map_err(|source| ActivationError::Spawn { script: name.clone(), source })?;
            }
            Some(line) = lines.recv() => on_line(&line),
            _ = tokio::time::sleep_until(deadline) => {
                kill_group(pgid, &mut child).await;
                return Err(if stopping {
                    ActivationError::Stopped { script: name }
                } else {
                    ActivationError::Timeout { script: name, timeout }
                });
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    deadline = deadline.min(Instant::now() + STOP_GRACE);
                }
            }
            _ = systemd::tick(&mut ticks) => watchdog.ping(),
        }
    };
    let drain_until = Instant::now() + DRAIN;
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => on_line(&line),
                None => break,
            },
            _ = tokio::time::sleep_until(drain_until) => break,
        }
    }
    if status.success() {
        Ok(())
    } else {
        Err(ActivationError::Failed {
            script: name,
            status,
        })
    }
}

/// Reads a pipe to its end in a task of its own, sending each line (invalid UTF-8 replaced, cut
/// at `MAX_LINE`). The task outlives the activation: a daemon it started in the background may
/// keep writing, and a closed pipe would kill it with SIGPIPE; once nobody listens, output is
/// read and dropped.
fn forward<R: AsyncRead + Unpin + Send + 'static>(pipe: R, tx: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            let buf = match reader.fill_buf().await {
                Ok(b) if !b.is_empty() => b,
                _ => break,
            };
            let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            reader.consume(take);
            if complete || line.len() >= MAX_LINE {
                let _ = tx.send(text(&line));
                line.clear();
            }
        }
        if !line.is_empty() {
            let _ = tx.send(text(&line));
        }
    });
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\n', '\r'])
        .to_owned()
}

async fn kill_group(pgid: Option<i32>, child: &mut tokio::process::Child) {
    if let Some(pgid) = pgid {
        // SAFETY: kill(2) with a negative pid signals the process group; no memory is involved.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_ok() {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            return;
        }
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_people_write_durations() {
        let e = ActivationError::Timeout {
            script: "/p/bin/activate".into(),
            timeout: Duration::from_secs(300),
        };
        assert_eq!(
            e.to_string(),
            "/p/bin/activate did not finish within 5m and was killed"
        );
        let e = ActivationError::Stopped {
            script: "/p/bin/activate".into(),
        };
        assert!(e.to_string().ends_with("within 1m"), "{e}");
    }

    /// Asked to stop, a running activation gets `STOP_GRACE` (one minute) to finish, however
    /// long its own time bound, then it is killed. Tokio's clock is paused and jumps ahead
    /// whenever nothing else is ready; the activation is a real process.
    #[tokio::test(start_paused = true)]
    async fn stopping_cuts_an_activation_short_after_one_minute() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("echo $$ > '{}'; exec sleep 1000", pid_file.display());
        let cmd = CommandLine::new("/bin/sh").args(["-c", &script]);
        let (stop_tx, mut stop) = watch::channel(false);
        let env: [(&str, String); 0] = [];
        let watchdog = Watchdog::disabled();
        let run = run(
            &cmd,
            &env,
            Duration::from_secs(3600),
            &watchdog,
            &mut stop,
            |_| {},
        );
        let stop_when_started = async {
            // Real time: the shell needs a moment to start.
            while !pid_file.exists() {
                std::thread::sleep(Duration::from_millis(10));
                tokio::task::yield_now().await;
            }
            stop_tx.send(true).unwrap();
            Instant::now()
        };
        let (result, stopped_at) = tokio::join!(run, stop_when_started);
        let took = stopped_at.elapsed();
        assert!(
            matches!(result, Err(ActivationError::Stopped { .. })),
            "{result:?}"
        );
        assert!(
            took >= STOP_GRACE && took <= STOP_GRACE + KILL_GRACE + Duration::from_secs(1),
            "killed {took:?} after the stop"
        );
        assert_eq!(STOP_GRACE, Duration::from_secs(60));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "the activation {pid} still runs");
    }
}
