//! What the pure core takes in and gives back: events, requests, what to do next, notices, how
//! a round ended, and what the agent is doing.

use std::fmt;
use std::time::Duration;

use crate::decide::Hold;
use crate::format;
use crate::record::{BuildRef, DeploymentResult, KnownBad, Verdict};
use crate::store_path::StorePath;
use crate::types::{Build, ProfileState};

/// What the effects report, and what operators ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The profile's `bin/activate` ran at start-up.
    StartupActivation(Result<(), String>),
    /// Asking Hydra failed (the message says why).
    PollFailed(String),
    /// Hydra named `latest` (under `--gate evaluation`: the job's build of the newest
    /// evaluation that passed, the newer ones passed over for these reasons); the profile points
    /// at `profile`.
    Polled {
        profile: ProfileState,
        latest: Build,
        passed_over: Vec<String>,
        /// How far Hydra's clock ran ahead of this host's at this poll (its `Date:`), if it said.
        hydra_ahead: Option<jiff::SignedDuration>,
    },
    /// `--gate evaluation`: no evaluation among the last ones passes, for these reasons.
    NoneEligible(Vec<String>),
    /// The record saying that `build` is about to be deployed could not be written (the message
    /// says why): nothing was switched.
    NotRecorded { build: Build, error: String },
    /// The deployment of `build` failed (`verdict`); the rollback is about to start. The build
    /// is known-bad from now on: a hail stopped during the rollback finishes it at its next start.
    Failing { build: Build, verdict: Verdict },
    /// A deployment of `build` ended, leaving the profile at `profile`.
    Deployed {
        build: Build,
        profile: ProfileState,
        result: Result<(), DeployFailure>,
    },
    /// An operator's request (`hail pause`, `resume`, `retry`).
    Control(Request),
    /// `--system`: what differs between the deployed and the booted system (empty: no reboot
    /// needed).
    Booted(Vec<String>),
    /// `--reboot-window`: a reboot waits for its window (`None`: no reboot waits).
    RebootWaits(Option<WindowWait>),
    /// hail is about to ask systemd to reboot into the deployed system, from the booted one
    /// (its store path and the profile generation holding it).
    Rebooting { from: Option<ProfileState> },
    /// After a reboot into a new system (see [`AfterReboot::Confirm`]): whether Hydra was
    /// reached. If not, the system booted before is the good one again, and hail reboots into
    /// it, once (the new one's failure is a deployment's outcome: [`Event::Deployed`]).
    RebootChecked { reached: bool },
}

/// A deployment the last hail switched to but did not see through, found at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub build: BuildRef,
    /// Its verdict, when it had failed and its rollback was under way: the rollback is finished,
    /// the build is not activated again.
    pub verdict: Option<Verdict>,
}

/// What to do at the first start after a reboot hail asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterReboot {
    Nothing,
    /// The host booted the new system: confirm contact with Hydra.
    Confirm(Build),
}

/// A reboot waiting for its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowWait {
    /// How long until the window opens (by the local clock, as seen now).
    pub opens_in: Duration,
    /// How long the window lasts.
    pub length: Duration,
}

/// Why a deployment failed, as the core needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFailure {
    /// How: a failed activation or health check makes the build known-bad (for `reason`); a
    /// failed download or switch is tried again.
    pub result: DeploymentResult,
    pub message: String,
    /// Why the build is known-bad now, in a few words (`activation failed: …`).
    pub reason: String,
}

/// An operator's request, carried from a control command to the agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    Pause {
        reason: Option<String>,
    },
    Resume,
    /// Forget one known-bad build (by Hydra build id), or all of them.
    Retry {
        build_id: Option<u64>,
    },
}

/// As the journal and stderr say it: `pause (reason: maintenance)`, `resume`, `retry (build 42)`.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Pause { reason: None } => write!(f, "pause"),
            Request::Pause {
                reason: Some(reason),
            } => write!(f, "pause (reason: {reason})"),
            Request::Resume => write!(f, "resume"),
            Request::Retry { build_id: None } => write!(f, "retry (every known-bad build)"),
            Request::Retry { build_id: Some(id) } => write!(f, "retry (build {id})"),
        }
    }
}

/// What the agent does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Save the record (it says a deployment is under way), then realise, switch to and
    /// activate this build, and report [`Event::Deployed`].
    Deploy(Build),
    /// Poll again at once.
    PollNow,
    /// Wait for the next poll.
    Wait,
}

/// Something the agent should log with its own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The profile no longer points at what hail deployed: an operator moved it. The build
    /// moved away from is known-bad now.
    ManualChange {
        build_id: Option<u64>,
        from: String,
        to: Option<StorePath>,
        generation: Option<u64>,
    },
    /// Known-bad builds forgotten at an operator's request (none when nothing matched).
    Forgotten(Vec<KnownBad>),
    /// The deployed system needs a reboot (these differ from the booted system); said once.
    RebootNeeded(Vec<String>),
}

/// How one round (a poll, and the deployment it led to) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    UpToDate,
    Deployed,
    /// Hydra's latest build is known-bad.
    KnownBad {
        id: u64,
        path: StorePath,
        reason: String,
    },
    /// Hydra's latest build is not deployed now: paused, a downgrade, too young, or this host's
    /// rollout slot has not come (`wait`: how long until it does, when it will by itself).
    Held {
        id: u64,
        path: StorePath,
        why: Hold,
        wait: Option<Duration>,
    },
    PollFailed(String),
    DeployFailed {
        id: u64,
        failure: DeployFailure,
    },
    /// Build `id` was not deployed: the record that it was about to be could not be written.
    NotRecorded {
        id: u64,
        error: String,
    },
    /// No evaluation passes the gate (why, for each one looked at).
    NoneEligible(Vec<String>),
}

impl Round {
    /// The documented exit codes of `--oneshot` (docs/src/reference/exit-codes.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Round::UpToDate | Round::Deployed => 0,
            Round::PollFailed(_) => 5,
            Round::DeployFailed { failure, .. } if failure.result == DeploymentResult::Failed => 6,
            Round::NotRecorded { .. } => 6,
            Round::KnownBad { .. } | Round::DeployFailed { .. } => 7,
            Round::Held { .. } | Round::NoneEligible(_) => 8,
        }
    }

    pub(super) fn is_failure(&self) -> bool {
        matches!(
            self,
            Round::PollFailed(_) | Round::DeployFailed { .. } | Round::NotRecorded { .. }
        )
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Round::UpToDate => write!(f, "up to date"),
            Round::Deployed => write!(f, "deployed"),
            Round::KnownBad { id, path, reason } => write!(
                f,
                "build {id} ({path}) is known to be bad ({reason}); waiting for a newer build"
            ),
            Round::Held {
                id,
                path,
                why,
                wait,
            } => {
                let wait = wait.map(format::duration).unwrap_or_default();
                match why {
                    Hold::Paused => write!(f, "paused: build {id} ({}) waits", path.short()),
                    Hold::Downgrade { deployed } => write!(
                        f,
                        "build {id} is older than the deployed build {deployed}; not \
                         downgrading (--allow-downgrade allows it)"
                    ),
                    Hold::TooYoung { .. } => {
                        write!(f, "build {id} waits until it is old enough (in {wait})")
                    }
                    Hold::RolloutSlot { .. } => {
                        write!(f, "build {id} waits for its rollout slot (in {wait})")
                    }
                }
            }
            Round::PollFailed(e) => write!(f, "poll failed: {e}"),
            Round::NoneEligible(why) => {
                write!(f, "no evaluation passes the gate ({})", why.join("; "))
            }
            Round::DeployFailed { id, failure } => {
                write!(f, "deploying build {id} failed: {}", failure.message)
            }
            Round::NotRecorded { id, error } => write!(
                f,
                "build {id} not deployed: the state could not be written ({error}); nothing \
                 was switched"
            ),
        }
    }
}

/// What the agent is doing, for the status line.
#[derive(Debug, Clone, Copy)]
pub enum Activity<'a> {
    Starting,
    StartupActivation,
    Polling,
    Deploying(&'a Build),
    /// Confirming contact with Hydra after deploying this build.
    Confirming(&'a Build),
    /// Waiting this long for the next poll.
    Waiting(Duration),
    Stopping,
}
