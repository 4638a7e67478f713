//! Runs the real `hail` binary in isolation: a temporary profile directory, the cache's
//! `NIX_CONFIG`, `HOME`/`XDG_CACHE_HOME` of its own, a clean environment (only `PATH` is kept
//! from the caller), output captured and echoed with a `hail| ` prefix.
//!
//! The binary's path is a parameter: `env!("CARGO_BIN_EXE_hail")` exists only in the root
//! package's tests.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::notify::NotifySocket;

/// How to run hail; every [`Hail::spawn`] / [`Hail::run`] uses the same profile and home.
pub struct Hail {
    bin: PathBuf,
    dir: TempDir,
    /// `--profile`; defaults to `<temp dir>/profiles/test`.
    pub profile: PathBuf,
    /// `--job-uri`.
    pub job_uri: String,
    /// Options added after `--profile` and `--job-uri`.
    pub args: Vec<String>,
    /// Environment variables added to the clean environment.
    pub env: Vec<(String, String)>,
}

impl Hail {
    /// `bin` is the hail binary; `nix_config` becomes the child's `NIX_CONFIG`
    /// (see `Cache::nix_config`).
    pub fn new(bin: impl AsRef<Path>, job_uri: &str, nix_config: &str) -> Hail {
        let dir = tempfile::Builder::new()
            .prefix("hail-run-")
            .tempdir()
            .expect("temp dir");
        let profile = dir.path().join("profiles").join("test");
        Hail {
            bin: bin.as_ref().to_path_buf(),
            dir,
            profile,
            job_uri: job_uri.into(),
            args: Vec::new(),
            env: vec![("NIX_CONFIG".into(), nix_config.into())],
        }
    }

    pub fn arg(mut self, arg: &str) -> Hail {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Hail {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets `NOTIFY_SOCKET`.
    pub fn notify(self, socket: &NotifySocket) -> Hail {
        let path = socket
            .path()
            .to_str()
            .expect("UTF-8 socket path")
            .to_string();
        self.env("NOTIFY_SOCKET", &path)
    }

    /// The command [`Hail::spawn`] runs: the clean environment, `--profile`, `--job-uri`,
    /// [`Hail::args`], then `extra`.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut c = self.bare_command(&[]);
        c.arg("--profile")
            .arg(&self.profile)
            .arg("--job-uri")
            .arg(&self.job_uri);
        c.args(&self.args).args(extra);
        c
    }

    /// The clean environment and `args` only (no `--profile`, `--job-uri` or [`Hail::args`]):
    /// for checking how hail treats its command line.
    pub fn bare_command(&self, args: &[&str]) -> Command {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).expect("create HOME");
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("RUST_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Starts hail with `extra` arguments.
    pub fn spawn(&self, extra: &[&str]) -> Running {
        self.spawn_env(extra, &[])
    }

    /// Starts hail with `extra` arguments and extra environment variables.
    pub fn spawn_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Running {
        let mut c = self.command(extra);
        c.envs(env.iter().copied());
        Running::start(c)
    }

    /// Runs `hail … --oneshot extra…` to completion (at most `timeout`; killed after that).
    pub fn oneshot(&self, extra: &[&str], timeout: Duration) -> Finished {
        let mut args = vec!["--oneshot"];
        args.extend_from_slice(extra);
        self.run(&args, timeout)
    }

    /// Runs hail with `extra` arguments to completion (at most `timeout`; killed after that).
    pub fn run(&self, extra: &[&str], timeout: Duration) -> Finished {
        Running::start(self.command(extra)).finish_within(timeout)
    }

    /// Runs `hail args…` without the usual options to completion (at most `timeout`).
    pub fn run_bare(&self, args: &[&str], timeout: Duration) -> Finished {
        Running::start(self.bare_command(args)).finish_within(timeout)
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// stdout and stderr, interleaved as they arrived.
    pub output: String,
}

impl Finished {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// A running hail; killed (SIGKILL) when dropped.
pub struct Running {
    child: Child,
    output: Arc<(Mutex<String>, Condvar)>,
    readers: Vec<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Running {
    /// Starts `command`, collecting its stdout and stderr.
    pub fn start(mut command: Command) -> Running {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let output = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let readers = vec![
            pump(child.stdout.take().unwrap(), output.clone()),
            pump(child.stderr.take().unwrap(), output.clone()),
        ];
        Running {
            child,
            output,
            readers,
            status: None,
        }
    }

    /// Waits for the exit (killing it after `timeout`, which is a test failure).
    pub fn finish_within(mut self, timeout: Duration) -> Finished {
        if self.wait_timeout(timeout).is_none() {
            self.kill();
            panic!(
                "hail did not exit within {timeout:?}; its output:\n{}",
                self.output()
            );
        }
        self.finish()
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal, e.g. `libc::SIGHUP`.
    pub fn signal(&self, signal: i32) {
        if self.status.is_none() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not yet
            // reaped (so not reused).
            unsafe { libc::kill(self.child.id() as i32, signal) };
        }
    }

    /// Waits for the exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status {
                return Some(s);
            }
            if let Some(s) = self.child.try_wait().expect("wait for hail") {
                self.status = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.wait_timeout(Duration::ZERO)
    }

    /// SIGTERM, then wait (at most `timeout`) for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_timeout(timeout)
    }

    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Output so far (stdout and stderr interleaved).
    pub fn output(&self) -> String {
        self.output.0.lock().unwrap().clone()
    }

    /// Waits until the output contains `text`; false after `timeout`.
    pub fn wait_for_output(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.output;
        let mut out = lock.lock().unwrap();
        loop {
            if out.contains(text) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            out = cvar.wait_timeout(out, left).unwrap().0;
        }
    }

    /// After the exit: the status and the complete output.
    pub fn finish(mut self) -> Finished {
        let status = self
            .wait_timeout(Duration::from_secs(600))
            .expect("hail exited");
        // A grandchild (a still-sleeping activation) may hold the pipes open: don't wait long.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        Finished {
            status,
            output: self.output(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies a child's stream line by line into `output` and to the test's stderr.
fn pump(
    stream: impl Read + Send + 'static,
    output: Arc<(Mutex<String>, Condvar)>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).into_owned();
            eprint!("hail| {text}");
            output.0.lock().unwrap().push_str(&text);
            output.1.notify_all();
            line.clear();
        }
    })
}
