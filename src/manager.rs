//! The manager: converge this host's `hail@` instances to a set given as data.

use std::path::PathBuf;

/// Options of `hail apply-instances`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// JSON file describing the instance set.
    #[arg(value_name = "FILE")]
    pub instances: PathBuf,
}

/// Converges systemd to the set in `args.instances`.
pub fn apply(_args: &ApplyArgs) -> Result<(), ManagerError> {
    Err(ManagerError::NotImplemented)
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("not implemented yet")]
    NotImplemented,
}
