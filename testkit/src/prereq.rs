//! Prerequisites of a test: root, commands on `PATH`.
//!
//! When one is missing, a test must not silently pass: it panics, naming what is missing. Only
//! where that is asked for on purpose (`HAIL_TEST_SKIP_MISSING=1`, and never with `CI=true`) it
//! prints one `skipped: …` line and the test returns early.
//!
//! ```no_run
//! if !hail_testkit::prereq::require(&["root", "nix-store", "nix-env"]) {
//!     return;
//! }
//! ```

use std::path::Path;

/// Everything a test driving real Nix needs.
pub const NIX: &[&str] = &["root", "nix", "nix-build", "nix-store", "nix-env"];

/// `"root"` means running as uid 0; anything else is a command that must be on `PATH`.
/// Returns whether all are there (see the module documentation for what happens otherwise).
pub fn require(what: &[&str]) -> bool {
    let missing: Vec<String> = what
        .iter()
        .filter(|w| !present(w))
        .map(|w| {
            if *w == "root" {
                "root privileges".to_string()
            } else {
                format!("`{w}` on PATH")
            }
        })
        .collect();
    missing.is_empty() || missing_one(&missing.join(", "))
}

/// Reports `what` as missing: panics, unless skipping was asked for (`HAIL_TEST_SKIP_MISSING=1`,
/// not on CI), when it prints `skipped: …`; returns false.
pub fn missing_one(what: &str) -> bool {
    let test = std::thread::current().name().unwrap_or("test").to_string();
    let reason = format!("{test}: missing {what}");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = std::env::var("HAIL_TEST_SKIP_MISSING").is_ok_and(|v| v == "1");
    if ci || !skip {
        panic!(
            "prerequisite missing: {reason} (scripts/prerequisites test installs them; \
             HAIL_TEST_SKIP_MISSING=1 skips such tests outside CI)"
        );
    }
    println!("skipped: {reason}");
    eprintln!("skipped: {reason}");
    false
}

/// As [`require`] with [`NIX`].
pub fn require_nix() -> bool {
    require(NIX)
}

fn present(what: &str) -> bool {
    if what == "root" {
        // SAFETY: geteuid has no preconditions and cannot fail.
        return unsafe { libc::geteuid() } == 0;
    }
    on_path(what)
}

/// Whether `command` is an executable file in one of `PATH`'s directories.
pub fn on_path(command: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| {
        let p = Path::new(&d).join(command);
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}
