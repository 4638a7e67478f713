//! Test kit for hail: the real things hail talks to, small enough to start in every test.
//!
//! - [`http`]: a tiny HTTP/1.1 server on 127.0.0.1 (one `write` per response, `TCP_NODELAY`).
//! - [`hydra::HydraServer`]: answers like Hydra (302 to the latest build, build and evaluation
//!   JSON, Hydra's error bodies, private mode), changeable while a test runs, with fault
//!   injection and a record of every request.
//! - [`cache::Cache`]: a signed binary cache filled by real Nix; published closures are removed
//!   from the local store so the agent really substitutes them.
//! - [`docs`]: the README and the book's chapters, for the tests that hold them to the code.
//! - [`catalog`]: hail's journal message catalog and the `MESSAGE_ID`s and fields hail logs.
//! - [`prereq`]: fail (or skip, when asked to outside CI) when root or a command is missing.
//! - [`nixos`]: evaluating the NixOS module (nixpkgs' lib, NixOS's systemd option code).
//! - [`prometheus`]: the Prometheus project's own parser for the metrics hail writes.
//! - [`notify::NotifySocket`]: receives sd_notify datagrams.
//! - [`hail::Hail`]: runs the real hail binary in isolation.
//! - [`container::Container`]: a booted systemd (Debian 12 in systemd-nspawn); [`rig::Rig`] is
//!   one with hail installed and its own Hydra and cache, [`manager::ManagerRig`] one whose
//!   hail manages a set of hail instances.

pub mod cache;
pub mod catalog;
pub mod container;
pub mod docs;
pub mod hail;
pub mod http;
pub mod hydra;
pub mod manager;
pub mod nixos;
pub mod notify;
pub mod prereq;
pub mod prometheus;
pub mod rig;

/// This process's peak resident memory so far (`VmHWM` of `/proc/self/status`), in KiB: what a
/// test compares before and after to show that something large was not held in memory.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmHWM in /proc/self/status")
}
