//! What every system test starts from: a booted container with hail installed (see
//! [`Container::boot_with_hail`]), and the Hydra-compatible server and signed binary cache on the
//! host's 127.0.0.1 that it deploys from.

use std::path::Path;

use crate::cache::Cache;
use crate::container::{self, Container};
use crate::hydra::HydraServer;

/// The container and the servers; everything is stopped when dropped.
pub struct Rig {
    pub c: Container,
    pub cache: Cache,
    pub hydra: HydraServer,
    /// Unique to this rig: a Nix argument that keeps its store paths apart from every other
    /// test's.
    pub nonce: String,
}

impl Rig {
    /// Boots a container (named after `label`) with the hail binary `hail`. A missing
    /// prerequisite panics (see [`crate::prereq`]); a test using it is marked
    /// `#[cfg_attr(any(hail_skip_container, hail_skip_nix), ignore = "…")]`.
    pub fn new(label: &str, hail: &Path) -> Rig {
        container::require();
        crate::prereq::require_nix();
        let cache = Cache::start();
        let hydra = HydraServer::start();
        let c = Container::boot_with_hail(label, hail, &cache);
        let nonce = format!("{label}-{:x}", crate::hydra::unique());
        Rig {
            c,
            cache,
            hydra,
            nonce,
        }
    }

    /// The job URI of `job` in the default project and jobset.
    pub fn job_uri(&self, job: &str) -> String {
        self.hydra.job_uri(
            crate::hydra::DEFAULT_PROJECT,
            crate::hydra::DEFAULT_JOBSET,
            job,
        )
    }
}
