//! The nix commands hail runs, built as data (so they are unit-tested), run through
//! [`crate::process`], and what their failures mean.

use std::path::Path;
use std::time::Duration;

use crate::format;
use crate::process::{self, CommandLine, ProcessError};
use crate::store_path::StorePath;
use crate::systemd::Watchdog;

/// Substitute `path` (and its closure) from the configured binary caches and point `profile` at
/// it: one new generation. A negative look-up cached by Nix (remembered for an hour by default)
/// must not hide a just-uploaded path. Signature checks are whatever nix.conf says: hail never
/// weakens them.
pub fn set_profile(profile: &Path, path: &StorePath) -> CommandLine {
    CommandLine::new("nix-env")
        .arg("--profile")
        .arg(profile)
        .args(["--set", path.as_str()])
        .args(["--option", "narinfo-cache-negative-ttl", "0"])
}

/// Substitute `path` (and its closure) from the configured binary caches, with nix.conf's
/// signature checks, without touching any profile; `gc_root` keeps it from a garbage collection
/// until a profile or the running system does.
pub fn realise(path: &StorePath, gc_root: &Path) -> CommandLine {
    CommandLine::new("nix-store")
        .args(["--realise", path.as_str(), "--add-root"])
        .arg(gc_root)
        .args(["--option", "narinfo-cache-negative-ttl", "0"])
}

/// Point `profile` back at an existing generation.
pub fn switch_generation(profile: &Path, generation: u64) -> CommandLine {
    CommandLine::new("nix-env")
        .arg("--profile")
        .arg(profile)
        .args(["--switch-generation", &generation.to_string()])
}

#[derive(Debug, thiserror::Error)]
pub enum NixError {
    /// Not even started (or not waited for): most likely Nix is missing.
    #[error("{0} (is Nix installed and on PATH?)")]
    NotStarted(ProcessError),
    #[error(transparent)]
    Process(ProcessError),
    /// Failed with the Nix store's file system (nearly) full: Nix says so only as a failed
    /// write, or SQLite's "disk I/O error".
    #[error("{source}; the Nix store's file system has only {} free", format::bytes(*.free))]
    LowSpace { source: ProcessError, free: u64 },
}

/// Where the Nix store is.
const STORE_DIR: &str = "/nix/store";
/// Less free space than this on the store's file system explains a failed Nix command.
const LOW_SPACE: u64 = 64 << 20;

/// The free space (for unprivileged writers, as Nix is when run by a daemon) on the file
/// system holding `dir`.
fn free_bytes(dir: &str) -> Option<u64> {
    let path = std::ffi::CString::new(dir).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `st` a buffer statvfs fills on success.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

impl From<ProcessError> for NixError {
    fn from(e: ProcessError) -> NixError {
        match e {
            ProcessError::Spawn { .. } => NixError::NotStarted(e),
            e => NixError::Process(e),
        }
    }
}

/// Runs `cmd` with hail's environment (so `NIX_CONFIG`, `PATH` work as users expect) minus the
/// systemd notification variables, bounded by `timeout`; pings the watchdog while it runs.
/// What it prints is not used: the outcome is checked on disk.
pub async fn run(
    cmd: &CommandLine,
    timeout: Duration,
    watchdog: &Watchdog,
) -> Result<(), NixError> {
    process::run_async(cmd, timeout, watchdog, error_summary)
        .await
        .map_err(|e| match (NixError::from(e), free_bytes(STORE_DIR)) {
            (NixError::Process(source), Some(free)) if free < LOW_SPACE => {
                NixError::LowSpace { source, free }
            }
            (e, _) => e,
        })
}

/// What Nix says when it refuses a path for want of a trusted signature, in every version: the
/// substituter's warning (Nix up to 2.9: "the substitute for 'P' from 'U' is not signed by any
/// of the keys in 'trusted-public-keys'"; Nix 2.10 and later, and Lix: "ignoring substitute for
/// 'P' from 'U', as it's not signed by any of the keys in 'trusted-public-keys'") and the local
/// store's error ("cannot add path 'P' because it lacks a signature by a trusted key"). Without
/// it an operator would read only "no substituter that can build it", as for a path not uploaded.
const SIGNATURE_REFUSALS: [&str; 2] = [
    "not signed by any of the keys",
    "lacks a signature by a trusted key",
];

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
        .filter(|l| l.starts_with("error:") || SIGNATURE_REFUSALS.iter().any(|r| l.contains(r)))
        .collect();
    let chosen = if important.is_empty() {
        lines.last().copied().into_iter().collect()
    } else {
        important
    };
    let flat = crate::systemd::one_line(&chosen.join("; "));
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
    fn realise_roots_the_path_and_keeps_signature_checks() {
        let c = realise(&p(), Path::new("/nix/var/nix/profiles/system.hail-pending"));
        assert_eq!(
            c.display(),
            "nix-store --realise /nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile \
             --add-root /nix/var/nix/profiles/system.hail-pending \
             --option narinfo-cache-negative-ttl 0"
        );
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
    }

    #[test]
    fn a_refused_signature_is_kept_in_the_wording_of_every_nix() {
        let unavailable =
            "error: path '/nix/store/x' is required, but there is no substituter that can build it";
        for warning in [
            // Nix 2.3 to 2.9.
            "warning: the substitute for '/nix/store/x' from 'http://c' is not signed by any of the keys in 'trusted-public-keys'",
            // Nix 2.10 and later, and Lix.
            "warning: ignoring substitute for '/nix/store/x' from 'http://c', as it's not signed by any of the keys in 'trusted-public-keys'",
        ] {
            let s = error_summary(&format!("{warning}\n{unavailable}\n"));
            assert!(
                s.contains("not signed by any of the keys") && s.contains("no substituter"),
                "{s}"
            );
        }
        let s = error_summary(
            "error: cannot add path '/nix/store/x' because it lacks a signature by a trusted key\n",
        );
        assert!(s.contains("lacks a signature by a trusted key"), "{s}");
        // Without a refusal, only the error.
        assert_eq!(error_summary(unavailable), unavailable);
        assert_eq!(error_summary(""), "no error message");
        assert!(!error_summary("error: a\u{1b}[31mred\n").contains('\u{1b}'));
    }

    #[tokio::test]
    async fn a_missing_nix_is_named() {
        let missing = CommandLine::new("/nonexistent/nix-env").arg("--profile");
        let e = run(&missing, Duration::from_secs(5), &Watchdog::disabled())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot run /nonexistent/nix-env --profile: ")
                && e.ends_with(" (is Nix installed and on PATH?)"),
            "{e}"
        );
    }
}
