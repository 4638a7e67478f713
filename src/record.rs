//! What hail keeps across restarts: the schema of `state.json` (pure data; [`crate::state_file`]
//! reads and writes it, [`crate::state`] changes it). docs/src/reference/state-json.md documents it.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The format version written now; a file with a higher one is not read (it is moved aside).
pub const VERSION: u32 = 1;
/// Known-bad builds remembered at most (the oldest is forgotten first).
pub const MAX_KNOWN_BAD: usize = 50;
/// Deployments remembered in `history`.
pub const MAX_HISTORY: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// The job (without credentials) and profile this state belongs to.
    #[serde(default)]
    pub job: String,
    #[serde(default)]
    pub profile: String,
    /// What the profile points at, as hail deployed it (or found it).
    #[serde(default)]
    pub deployed: Option<Deployed>,
    /// The last build known to run well: deployed by hail and seen through, or found in the
    /// profile (adopted, or put there by an operator) and not known-bad. A failed deployment
    /// returns to it, never blindly to the generation below.
    #[serde(default)]
    pub good: Option<Deployed>,
    /// A deployment under way: written before the switch, so that a hail stopped half-way knows
    /// at its next start that the profile moved by its own hand, not an operator's.
    #[serde(default)]
    pub deploying: Option<BuildRef>,
    /// The deployment under way failed (its activation, a health check or the contact with
    /// Hydra): the verdict, saved before the rollback starts, so that a hail stopped during the
    /// rollback finishes it at its next start instead of activating the failed build again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_back: Option<Verdict>,
    /// What Hydra offered at the last poll that got an answer, and since when.
    #[serde(default)]
    pub latest: Option<BuildRef>,
    #[serde(default)]
    pub latest_since: Option<Timestamp>,
    #[serde(default)]
    pub last_poll: Option<Poll>,
    #[serde(default)]
    pub last_deployment: Option<DeploymentRecord>,
    /// Builds not to deploy again (oldest first).
    #[serde(default)]
    pub known_bad: Vec<KnownBad>,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub pause_reason: Option<String>,
    /// The last deployments, newest first.
    #[serde(default)]
    pub history: Vec<DeploymentRecord>,
    #[serde(default)]
    pub next_poll: Option<Timestamp>,
    /// Failed polls and deployments in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub counters: Counters,
    /// What `--gate evaluation` learnt from Hydra (so that a fleet reads an evaluation's builds
    /// once per host, not at every poll).
    #[serde(default)]
    pub gate: GateMemory,
    /// `--system`: what differs from the booted system (kernel, initrd, …) so that the deployed
    /// system needs a reboot to run fully; empty when none is needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reboot_needed: Vec<String>,
    /// `--system`: a reboot hail asked for, and the system it should come up in; its contact
    /// with Hydra is confirmed at the first start after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebooting: Option<Rebooting>,
}

/// A reboot hail asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebooting {
    /// The system the host should boot.
    pub into: BuildRef,
    /// The system it booted before (and reached Hydra from): where it goes back to when the
    /// new one cannot reach Hydra.
    #[serde(default)]
    pub from: Option<Deployed>,
    /// A reboot back into the last good system, after the one before lost contact: it is not
    /// tried again.
    #[serde(default)]
    pub back: bool,
}

/// The evaluations the gate last looked at, and its verdicts on those that had finished.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateMemory {
    /// The newest evaluation with no unfinished builds, when `evals` was read.
    pub finished_upto: Option<u64>,
    /// The jobset's newest evaluations (newest first), as read then, and how many were asked for.
    pub evals: Vec<u64>,
    #[serde(default)]
    pub depth: usize,
    /// Verdicts on finished evaluations among `evals`.
    pub verdicts: Vec<GateVerdict>,
}

/// Whether an evaluation passes the gate: every build finished and succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateVerdict {
    pub eval: u64,
    /// The job's build in it, when it passes.
    pub build: Option<GateBuild>,
    /// Why it does not pass (`evaluation 1234: 3 of 120 builds failed`).
    pub refusal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateBuild {
    pub build_id: u64,
    pub store_path: String,
    pub finished_at: Option<Timestamp>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            version: VERSION,
            job: String::new(),
            profile: String::new(),
            deployed: None,
            good: None,
            deploying: None,
            rolling_back: None,
            latest: None,
            latest_since: None,
            last_poll: None,
            reboot_needed: Vec::new(),
            rebooting: None,
            last_deployment: None,
            known_bad: Vec::new(),
            paused: false,
            pause_reason: None,
            history: Vec::new(),
            next_poll: None,
            consecutive_failures: 0,
            counters: Counters::default(),
            gate: GateMemory::default(),
        }
    }
}

/// A build as Hydra named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRef {
    pub build_id: u64,
    pub store_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    /// `None` for a profile hail found rather than deployed (before its first deployment, or
    /// after an operator moved it).
    pub build_id: Option<u64>,
    pub store_path: String,
    pub generation: Option<u64>,
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    pub time: Timestamp,
    pub ok: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownBad {
    pub build_id: Option<u64>,
    pub store_path: String,
    pub reason: String,
    pub time: Timestamp,
}

/// Why a deployment failed, as it is recorded before its rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub result: DeploymentResult,
    /// Why the build is known-bad (`activation failed: …`).
    pub reason: String,
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentResult {
    Deployed,
    /// `bin/activate` failed; the profile was switched back.
    ActivationFailed,
    /// A health check did not pass in time; the profile was switched back.
    HealthCheckFailed,
    /// Hydra could not be reached after the switch (`--confirm-timeout`); switched back.
    ContactLost,
    /// Fetching or switching failed; the profile is untouched.
    Failed,
}

impl DeploymentResult {
    /// The `result` label of `hail_deployments_total`.
    pub fn label(self) -> &'static str {
        match self {
            DeploymentResult::Deployed => "deployed",
            DeploymentResult::ActivationFailed => "activation-failed",
            DeploymentResult::HealthCheckFailed => "health-check-failed",
            DeploymentResult::ContactLost => "contact-lost",
            DeploymentResult::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub build_id: u64,
    pub store_path: String,
    /// The generation the profile was at afterwards.
    pub generation: Option<u64>,
    pub time: Timestamp,
    pub result: DeploymentResult,
    pub error: Option<String>,
}

/// Totals since the state file was created (for the metrics' counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub polls_ok: u64,
    pub polls_failed: u64,
    pub deployments_deployed: u64,
    pub deployments_activation_failed: u64,
    #[serde(default)]
    pub deployments_health_check_failed: u64,
    #[serde(default)]
    pub deployments_contact_lost: u64,
    pub deployments_failed: u64,
    /// When a poll last succeeded, and a deployment.
    pub last_poll_success: Option<Timestamp>,
    pub last_deployment_success: Option<Timestamp>,
}
