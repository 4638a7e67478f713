//! Plain values the pure core and the effects share: what Hydra offers, what the profile holds.

use jiff::Timestamp;

use crate::store_path::StorePath;

/// The part of a Hydra build hail acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub id: u64,
    pub path: StorePath,
    /// When Hydra finished it (`stoptime`), if it says.
    pub finished_at: Option<Timestamp>,
}

impl Build {
    pub fn new(id: u64, path: StorePath) -> Build {
        Build {
            id,
            path,
            finished_at: None,
        }
    }
}

/// What the profile resolves to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileState {
    /// The store path the profile points at; `None` when the profile does not exist yet.
    pub current: Option<StorePath>,
    /// The generation number, when the profile is a `NAME-N-link` generation as nix-env makes them.
    pub generation: Option<u64>,
}

/// Which of Hydra's builds hail deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The job's latest successful build.
    Latest,
    /// The job's build of the newest evaluation (among the jobset's last `depth`) whose builds
    /// all finished and succeeded.
    Evaluation { depth: usize },
}
