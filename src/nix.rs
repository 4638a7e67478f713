//! The nix commands hail runs, built as data (so they are unit-tested) and run with a time bound.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::store_path::StorePath;
use crate::systemd::Watchdog;

/// A command line: program and arguments, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixCommand {
    pub program: &'static str,
    pub args: Vec<OsString>,
}

impl NixCommand {
    fn new(program: &'static str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Self {
        NixCommand {
            program,
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
        }
    }

    /// The program and its first argument (`nix-store --realise`): enough to name the step in
    /// a one-line error, which names the path already.
    pub fn summary(&self) -> String {
        match self.args.first() {
            Some(a) => format!("{} {}", self.program, a.to_string_lossy()),
            None => self.program.to_owned(),
        }
    }

    /// The whole command line, for debug logs and tests.
    pub fn display(&self) -> String {
        let mut s = self.program.to_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// Substitute `path` (and its closure) from the configured binary caches and point `profile` at
/// it: one new generation. A negative look-up cached by Nix (remembered for an hour by default)
/// must not hide a just-uploaded path. Signature checks are whatever nix.conf says: hail never
/// weakens them.
pub fn set_profile(profile: &Path, path: &StorePath) -> NixCommand {
    NixCommand::new(
        "nix-env",
        &[
            &"--profile",
            &profile,
            &"--set",
            &path.as_str(),
            &"--option",
            &"narinfo-cache-negative-ttl",
            &"0",
        ],
    )
}

/// Point `profile` back at an existing generation.
pub fn switch_generation(profile: &Path, generation: u64) -> NixCommand {
    NixCommand::new(
        "nix-env",
        &[
            &"--profile",
            &profile,
            &"--switch-generation",
            &generation.to_string(),
        ],
    )
}

#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("cannot run {command}: {source} (is Nix installed and on PATH?)")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("{command} failed ({status}): {message}")]
    Failed {
        command: String,
        status: String,
        message: String,
    },
    #[error("{command} printed {output:?}, expected {expected}")]
    UnexpectedOutput {
        command: String,
        output: String,
        expected: String,
    },
}

/// Runs `cmd` with hail's environment (so `NIX_CONFIG`, `PATH` work as users expect) minus the
/// systemd notification variables, bounded by `timeout`; pings the watchdog while it runs.
/// What it prints is not used: the outcome is checked on disk.
pub async fn run(cmd: &NixCommand, timeout: Duration, watchdog: &Watchdog) -> Result<(), NixError> {
    let command = cmd.summary();
    tracing::debug!("running {}", cmd.display());
    let mut c = tokio::process::Command::new(cmd.program);
    c.args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    crate::activation::strip_notify_env(&mut c);
    c.kill_on_drop(true);
    let child = c.spawn().map_err(|source| NixError::Spawn {
        command: command.clone(),
        source,
    })?;
    let out = watchdog
        .bounded(timeout, child.wait_with_output())
        .await
        .map_err(|_| NixError::Timeout {
            command: command.clone(),
            timeout,
        })?
        .map_err(|source| NixError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NixError::Failed {
            command,
            status: out.status.to_string(),
            message: error_summary(&String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(())
}

/// Nix's stderr, reduced to what an operator needs in one line: the `error:` lines (and the
/// signature warning that explains a refused substitute), else the last non-empty line.
pub fn error_summary(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let important: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("error:") || l.contains("is not signed by any of the keys"))
        .collect();
    let chosen = if important.is_empty() {
        lines.last().copied().into_iter().collect()
    } else {
        important
    };
    let joined = chosen.join("; ");
    let flat: String = joined
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.is_empty() {
        "no error message".into()
    } else {
        flat.chars().take(400).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> StorePath {
        StorePath::parse("/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile").unwrap()
    }

    #[test]
    fn set_profile_keeps_signature_checks_and_disables_negative_cache() {
        let c = set_profile(Path::new("/nix/var/nix/profiles/web"), &p());
        assert_eq!(
            c.display(),
            "nix-env --profile /nix/var/nix/profiles/web \
             --set /nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile \
             --option narinfo-cache-negative-ttl 0"
        );
        let all = c.display();
        for weakening in [
            "require-sigs",
            "substitute false",
            "trusted-public-keys",
            "--no-",
        ] {
            assert!(!all.contains(weakening));
        }
    }

    #[test]
    fn profile_commands() {
        let prof = Path::new("/nix/var/nix/profiles/web");
        assert_eq!(
            switch_generation(prof, 7).display(),
            "nix-env --profile /nix/var/nix/profiles/web --switch-generation 7"
        );
    }

    #[test]
    fn error_summaries() {
        let refused = "copying path '/nix/store/x' from 'http://127.0.0.1:1'...\n\
            warning: the substitute for '/nix/store/x' from 'http://127.0.0.1:1' is not signed by any of the keys in 'trusted-public-keys'\n\
            error: build of '/nix/store/x' failed\n";
        let s = error_summary(refused);
        assert!(
            s.contains("not signed") && s.contains("error: build of"),
            "{s}"
        );
        assert_eq!(error_summary("a\n\nlast line\n"), "last line");
        assert_eq!(error_summary(""), "no error message");
        assert!(!error_summary("error: a\u{1b}[31mred\n").contains('\u{1b}'));
    }
}
