//! hail: pull-based continuous deployment of a Nix profile from a Hydra job.
//!
//! Data flows one way: trigger (timer, SIGHUP, start) → [`hydra`] poll → [`state`] (the pure
//! core, with [`decide`]) → [`deploy`] (realise and switch through [`nix`], run [`activation`])
//! → report ([`systemd`], journal) → wait. [`agent`] performs those effects; [`manager`]
//! converges a host's hail instances.
//! Every program hail runs, but for a profile's `bin/activate` ([`activation`]), goes through
//! [`process`].

pub mod activation;
pub mod agent;
pub mod cli;
pub mod control;
pub mod decide;
pub mod deploy;
pub mod format;
pub mod hash;
pub mod health;
pub mod hooks;
pub mod hydra;
pub mod logging;
pub mod manager;
pub mod metrics;
pub mod netrc;
pub mod nix;
pub mod process;
pub mod profile;
pub mod record;
pub mod state;
pub mod state_file;
pub mod status;
pub mod store_path;
pub mod system;
pub mod systemd;
pub mod types;
pub mod unit_change;
