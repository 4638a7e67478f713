//! Evaluating the NixOS module (`tests/nix/eval.nix`): nixpkgs' lib from `NIXPKGS_LIB`, and
//! NixOS's own systemd option code from `NIXOS_SYSTEMD_LIB` when it is set (a directory holding
//! nixpkgs' `nixos/lib/systemd-lib.nix`, `systemd-unit-options.nix` and `systemd-types.nix`);
//! without it, the stand-in `tests/nix/nixos-systemd.nix`. The tests that need nixpkgs' lib are
//! ignored (shown as skipped) unless run on purpose, as `scripts/test` does when `NIXPKGS_LIB`
//! is set.

use std::path::{Path, PathBuf};
use std::process::Command;

/// nixpkgs' lib directory from `NIXPKGS_LIB` (its lib directory, or a checkout holding `lib/`).
pub fn nixpkgs_lib() -> PathBuf {
    let value = std::env::var_os("NIXPKGS_LIB")
        .filter(|v| !v.is_empty())
        .expect(
            "NIXPKGS_LIB is not set (nixpkgs' lib directory, e.g. from nix-community/nixpkgs.lib)",
        );
    let path = PathBuf::from(value);
    if path.join("default.nix").exists() {
        path
    } else if path.join("lib/default.nix").exists() {
        path.join("lib")
    } else {
        panic!(
            "NIXPKGS_LIB={} holds neither default.nix nor lib/default.nix",
            path.display()
        );
    }
}

/// The files of NixOS's systemd options every service is evaluated with.
pub const SYSTEMD_FILES: [&str; 3] = [
    "systemd-lib.nix",
    "systemd-unit-options.nix",
    "systemd-types.nix",
];

/// The directory named by `NIXOS_SYSTEMD_LIB`, checked to hold [`SYSTEMD_FILES`]; `None` when
/// it is not set.
pub fn systemd_lib() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("NIXOS_SYSTEMD_LIB").filter(|v| !v.is_empty())?);
    let dir = std::fs::canonicalize(&dir)
        .unwrap_or_else(|e| panic!("NIXOS_SYSTEMD_LIB={}: {e}", dir.display()));
    for file in SYSTEMD_FILES {
        assert!(
            dir.join(file).is_file(),
            "NIXOS_SYSTEMD_LIB={} has no {file} (copy it from nixpkgs' nixos/lib)",
            dir.display()
        );
    }
    Some(dir)
}

/// `nix-instantiate --eval --strict --json tests/nix/eval.nix` in `root` with nixpkgs' lib and,
/// when `systemd` is given, NixOS's own systemd option code; add `--arg config …` and the rest.
pub fn eval_command(root: &Path, systemd: Option<&Path>) -> Command {
    let mut c = Command::new("nix-instantiate");
    c.current_dir(root)
        .args(["--eval", "--strict", "--json", "tests/nix/eval.nix"])
        .arg("--argstr")
        .arg("nixpkgsLib")
        .arg(nixpkgs_lib());
    if let Some(dir) = systemd {
        c.arg("--argstr").arg("nixosLib").arg(dir);
    }
    c
}
