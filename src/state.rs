//! The agent's state and its transitions, as pure functions of (state, event, clock): what hail
//! knows, what it does after a poll, a deployment or a control request, how long it waits, and
//! what its status line says. The agent ([`crate::agent`]) performs the effects and feeds their
//! outcomes in as [`Event`]s; what must survive a restart is the [`Record`] it saves.

use std::time::Duration;

use jiff::Timestamp;

use crate::decide::{self, Decision, Policy, Situation};
use crate::record::{
    self, BuildRef, Deployed, DeploymentRecord, DeploymentResult, GateMemory, KnownBad, Poll,
    Record,
};
use crate::store_path::StorePath;
use crate::types::{Build, ProfileState};

/// The shortest wait between polls (a rollout slot due now still waits this long).
const MIN_WAIT: Duration = Duration::from_secs(1);

/// Why a build is known-bad, as `hail status` and the journal say it.
pub const REASON_ROLLED_BACK_BY_HAND: &str = "rolled back by hand";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// What survives a restart.
    record: Record,
    /// The operator's rules for what may be deployed when.
    policy: Policy,
    /// What the profile points at, as last seen.
    profile: ProfileState,
    /// Why the start-up activation failed; shown until a deployment succeeds.
    startup_failure: Option<String>,
    /// How the last round ended; `None` before the first.
    last: Option<Round>,
    /// What the agent should log, in order; taken with [`State::take_notices`].
    notices: Vec<Notice>,
    /// A build the last hail switched to but did not see through (stopped during its activation,
    /// health checks or rollback): seen through once hail runs.
    unfinished: Option<Unfinished>,
    /// Why `--gate evaluation` passed over newer evaluations at the last poll.
    gate_note: Option<String>,
    /// A reboot waiting for its window: when the window opens and how long it lasts. The next
    /// poll comes no later.
    reboot_window: Option<(Timestamp, Duration)>,
}

impl State {
    /// The state at start-up: the record as saved (for this job and profile) and the profile as
    /// found. A deployment the last hail left half-way is settled here; an operator's change made
    /// while hail was stopped is noticed.
    pub fn new(
        mut record: Record,
        policy: Policy,
        job: &str,
        profile_path: &str,
        profile: ProfileState,
        now: Timestamp,
    ) -> Self {
        if record.profile != profile_path {
            // The state of another profile says nothing about what this one holds.
            record.deployed = None;
            record.good = None;
            record.deploying = None;
            record.rebooting = None;
        }
        record.job = job.to_owned();
        record.profile = profile_path.to_owned();
        let mut unfinished = None;
        // Kept in the record until the deployment is seen through: a hail stopped again while
        // it finishes knows the same at its next start.
        if let Some(b) = record.deploying.clone() {
            let current = profile.current.as_ref().map(StorePath::as_str);
            let at_build = current == Some(b.store_path.as_str());
            let verdict = record.rolling_back.clone();
            // A rollback under way may have switched back already: it is finished from where
            // the profile is (at the good build, or removed after a first deployment).
            let mid_rollback = verdict.is_some()
                && (current.is_none()
                    || record.good.as_ref().map(|g| g.store_path.as_str()) == current);
            if at_build {
                // The last hail switched to it (its activation may not have run).
                record.deployed = Some(Deployed {
                    build_id: Some(b.build_id),
                    store_path: b.store_path.clone(),
                    generation: profile.generation,
                    since: now,
                });
            }
            if mid_rollback
                && !at_build
                && let Some(d) = &record.deployed
                && d.store_path == b.store_path
            {
                // The rollback switched back: the profile moved by hail's hand.
                record.deployed = None;
            }
            if at_build || mid_rollback {
                unfinished = Some(Unfinished { build: b, verdict });
            } else {
                record.deploying = None;
                record.rolling_back = None;
            }
        }
        let mut state = State {
            gate_note: None,
            reboot_window: None,
            unfinished,
            record,
            policy,
            profile: ProfileState::default(),
            startup_failure: None,
            last: None,
            notices: Vec::new(),
        };
        state.see(profile, now);
        state
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    pub fn profile(&self) -> &ProfileState {
        &self.profile
    }

    /// How the last round ended.
    /// Whether a reboot the deployed system needs may happen now, the window aside: the last
    /// round deployed the build or found it current, and hail is not paused.
    pub fn may_reboot(&self) -> bool {
        !self.record.paused && matches!(self.last, Some(Round::Deployed | Round::UpToDate))
    }

    pub fn last_round(&self) -> Option<&Round> {
        self.last.as_ref()
    }

    /// What `--gate evaluation` remembers.
    pub fn gate(&self) -> &GateMemory {
        &self.record.gate
    }

    pub fn remember_gate(&mut self, memory: GateMemory) {
        self.record.gate = memory;
    }

    fn record_poll_ok(&mut self, now: Timestamp) {
        self.record.last_poll = Some(Poll {
            time: now,
            ok: true,
            error: None,
        });
        self.record.counters.polls_ok += 1;
        self.record.counters.last_poll_success = Some(now);
    }

    /// At the first start after a reboot hail asked for, with the host booted into `booted`:
    /// whether its contact with Hydra must be confirmed. A reboot back into the last good system
    /// (or one that did not come up in the system asked for) is not confirmed again.
    pub fn after_reboot(&mut self, booted: Option<&StorePath>) -> AfterReboot {
        let Some(r) = &self.record.rebooting else {
            return AfterReboot::Nothing;
        };
        let into = StorePath::parse(&r.into.store_path).ok();
        match into {
            Some(path) if !r.back && booted == Some(&path) => {
                AfterReboot::Confirm(Build::new(r.into.build_id, path))
            }
            _ => {
                self.record.rebooting = None;
                AfterReboot::Nothing
            }
        }
    }

    /// The deployment to see through once hail runs (see [`State::new`]), once.
    pub fn take_unfinished(&mut self) -> Option<Unfinished> {
        self.unfinished.take()
    }

    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    pub fn apply(&mut self, now: Timestamp, event: Event) -> Next {
        match event {
            Event::StartupActivation(result) => {
                self.startup_failure = result.err();
                Next::Wait
            }
            Event::PollFailed(error) => {
                self.record.last_poll = Some(Poll {
                    time: now,
                    ok: false,
                    error: Some(error.clone()),
                });
                self.record.counters.polls_failed += 1;
                self.finish(Round::PollFailed(error))
            }
            Event::NoneEligible(why) => {
                self.record_poll_ok(now);
                self.gate_note = None;
                self.finish(Round::NoneEligible(why))
            }
            Event::Polled {
                profile,
                latest,
                passed_over,
                hydra_ahead,
            } => {
                self.gate_note = Some(passed_over.join("; ")).filter(|n| !n.is_empty());
                self.record_poll_ok(now);
                let latest_ref = build_ref(&latest);
                if self.record.latest.as_ref() != Some(&latest_ref) {
                    self.record.latest = Some(latest_ref);
                    self.record.latest_since = Some(now);
                }
                self.see(profile, now);
                self.decide(now, latest, hydra_ahead)
            }
            Event::NotRecorded { build, error } => {
                // Nothing was switched: no deployment is under way.
                self.record.deploying = None;
                self.record.rolling_back = None;
                self.finish(Round::NotRecorded {
                    id: build.id,
                    error,
                })
            }
            Event::Failing { build, verdict } => {
                // What the profile points at next is hail's doing, whoever finishes the rollback.
                self.record.deploying = Some(build_ref(&build));
                self.mark_bad(Some(build.id), build.path.as_str(), &verdict.reason, now);
                self.record.rolling_back = Some(verdict);
                Next::Wait
            }
            Event::Deployed {
                build,
                profile,
                result,
            } => self.deployed(now, build, profile, result),
            Event::Control(request) => self.control(request),
            Event::Booted(differs) => {
                if !differs.is_empty() && differs != self.record.reboot_needed {
                    self.notices.push(Notice::RebootNeeded(differs.clone()));
                }
                self.record.reboot_needed = differs;
                Next::Wait
            }
            Event::Rebooting { from } => {
                let from = from.and_then(|f| {
                    let path = f.current?;
                    Some(Deployed {
                        build_id: self.build_id_of(&path),
                        store_path: path.to_string(),
                        generation: f.generation,
                        since: now,
                    })
                });
                self.record.rebooting = self.record.deployed.as_ref().and_then(|d| {
                    Some(record::Rebooting {
                        into: BuildRef {
                            build_id: d.build_id?,
                            store_path: d.store_path.clone(),
                        },
                        from,
                        back: false,
                    })
                });
                Next::Wait
            }
            Event::RebootChecked { reached: true } => {
                self.record.rebooting = None;
                Next::Wait
            }
            Event::RebootChecked { reached: false } => {
                // Recorded before hail switches back: the new system is known-bad, and what the
                // profile points at next is hail's doing, not an operator's.
                if let Some(r) = &self.record.rebooting {
                    let (id, path) = (r.into.build_id, r.into.store_path.clone());
                    let reason = "contact with Hydra lost after the reboot";
                    self.mark_bad(Some(id), &path, reason, now);
                    self.record.deployed = None;
                }
                // Back into the system booted before, the last one known to reach Hydra; once.
                if let Some(from) = self.record.rebooting.take().and_then(|r| r.from) {
                    self.record.good = Some(from.clone());
                    self.record.rebooting = Some(record::Rebooting {
                        into: BuildRef {
                            build_id: from.build_id.unwrap_or_default(),
                            store_path: from.store_path.clone(),
                        },
                        from: None,
                        back: true,
                    });
                }
                Next::Wait
            }
            Event::RebootWaits(wait) => {
                self.reboot_window =
                    wait.and_then(|w| Some((now.checked_add(w.opens_in).ok()?, w.length)));
                Next::Wait
            }
        }
    }

    fn decide(
        &mut self,
        now: Timestamp,
        latest: Build,
        hydra_ahead: Option<jiff::SignedDuration>,
    ) -> Next {
        let known_bad = &self.record.known_bad;
        let is_bad = |p: &StorePath| known_bad.iter().any(|k| k.store_path == p.as_str());
        let situation = Situation {
            current: self.profile.current.as_ref(),
            deployed_build: self.deployed_build(),
            paused: self.record.paused,
            now,
            first_seen: self.record.latest_since.unwrap_or(now),
            hydra_ahead,
        };
        match decide::decide(&situation, &self.policy, is_bad, &latest) {
            Decision::UpToDate => {
                if let Some(d) = &mut self.record.deployed {
                    d.build_id = Some(latest.id);
                }
                self.finish(Round::UpToDate)
            }
            Decision::SkipKnownBad => {
                let reason = known_bad
                    .iter()
                    .rev()
                    .find(|k| k.store_path == latest.path.as_str())
                    .map(|k| k.reason.clone())
                    .unwrap_or_default();
                self.finish(Round::KnownBad {
                    id: latest.id,
                    path: latest.path,
                    reason,
                })
            }
            Decision::Hold(why) => {
                let wait = why
                    .until()
                    .map(|until| until.duration_since(now).unsigned_abs());
                self.finish(Round::Held {
                    id: latest.id,
                    path: latest.path,
                    why,
                    wait,
                })
            }
            Decision::Deploy => {
                self.record.deploying = Some(build_ref(&latest));
                Next::Deploy(latest)
            }
        }
    }

    fn deployed(
        &mut self,
        now: Timestamp,
        build: Build,
        profile: ProfileState,
        result: Result<(), DeployFailure>,
    ) -> Next {
        self.record.deploying = None;
        self.record.rolling_back = None;
        let (outcome, error) = match &result {
            Ok(()) => (DeploymentResult::Deployed, None),
            Err(f) => (f.result, Some(&f.message)),
        };
        let entry = DeploymentRecord {
            build_id: build.id,
            store_path: build.path.to_string(),
            generation: profile.generation,
            time: now,
            result: outcome,
            error: error.cloned(),
        };
        self.record.history.insert(0, entry.clone());
        self.record.history.truncate(record::MAX_HISTORY);
        self.record.last_deployment = Some(entry);
        let counters = &mut self.record.counters;
        match outcome {
            DeploymentResult::Deployed => counters.deployments_deployed += 1,
            DeploymentResult::ActivationFailed => counters.deployments_activation_failed += 1,
            DeploymentResult::HealthCheckFailed => counters.deployments_health_check_failed += 1,
            DeploymentResult::ContactLost => counters.deployments_contact_lost += 1,
            DeploymentResult::Failed => counters.deployments_failed += 1,
        }
        if let Err(f) = &result
            && f.result != DeploymentResult::Failed
        {
            self.mark_bad(Some(build.id), build.path.as_str(), &f.reason, now);
        }
        let ours = profile.current.as_ref() == Some(&build.path);
        let current = profile.current.as_ref().map(StorePath::as_str);
        if !ours
            && self
                .record
                .deployed
                .as_ref()
                .is_some_and(|d| Some(d.store_path.as_str()) != current)
        {
            // The profile moved during hail's own deployment: its rollback (of a deployment the
            // last hail left half-way, or past a build left in place earlier), not an operator.
            self.record.deployed = None;
        }
        if ours {
            // Deployed, or left at the failed build because switching back failed.
            let deployed = Deployed {
                build_id: Some(build.id),
                store_path: build.path.to_string(),
                generation: profile.generation,
                since: now,
            };
            if result.is_ok() {
                self.record.good = Some(deployed.clone());
            }
            self.record.deployed = Some(deployed);
            self.profile = profile;
        } else {
            // Switched back (or never switched): what was deployed before still is.
            self.see(profile, now);
        }
        match result {
            Ok(()) => {
                self.record.counters.last_deployment_success = Some(now);
                self.startup_failure = None;
                self.finish(Round::Deployed)
            }
            Err(failure) => self.finish(Round::DeployFailed {
                id: build.id,
                failure,
            }),
        }
    }

    fn control(&mut self, request: Request) -> Next {
        match request {
            Request::Pause { reason } => {
                self.record.paused = true;
                self.record.pause_reason = reason;
                Next::Wait
            }
            Request::Resume => {
                self.record.paused = false;
                self.record.pause_reason = None;
                Next::PollNow
            }
            Request::Retry { build_id } => {
                let (forgotten, kept) = std::mem::take(&mut self.record.known_bad)
                    .into_iter()
                    .partition(|k| build_id.is_none() || k.build_id == build_id);
                self.record.known_bad = kept;
                self.notices.push(Notice::Forgotten(forgotten));
                Next::PollNow
            }
        }
    }

    /// Takes note of the profile as read now. A profile moved away from what hail deployed was
    /// moved by an operator: that is respected, and the build moved away from is not deployed
    /// again.
    fn see(&mut self, profile: ProfileState, now: Timestamp) {
        let current = profile.current.as_ref().map(StorePath::as_str);
        if let Some(d) = &self.record.deployed
            && current != Some(d.store_path.as_str())
        {
            let d = self.record.deployed.take().expect("checked above");
            self.mark_bad(d.build_id, &d.store_path, REASON_ROLLED_BACK_BY_HAND, now);
            self.notices.push(Notice::ManualChange {
                build_id: d.build_id,
                from: d.store_path,
                to: profile.current.clone(),
                generation: profile.generation,
            });
        }
        match (&mut self.record.deployed, &profile.current) {
            (Some(d), Some(_)) => d.generation = profile.generation,
            (None, Some(p)) => {
                // Found there (adopted, or an operator's choice): good unless known-bad.
                let build_id = self.build_id_of(p);
                let found = Deployed {
                    build_id,
                    store_path: p.to_string(),
                    generation: profile.generation,
                    since: now,
                };
                if !self.is_known_bad(p.as_str()) {
                    self.record.good = Some(found.clone());
                }
                self.record.deployed = Some(found);
            }
            (_, None) => self.record.deployed = None,
        }
        // A state written before hail kept `good`: what runs is good, unless known-bad or a
        // deployment the last hail did not see through.
        if self.record.good.is_none()
            && let Some(d) = &self.record.deployed
            && !self.is_known_bad(&d.store_path)
            && self
                .unfinished
                .as_ref()
                .is_none_or(|u| u.build.store_path != d.store_path)
        {
            self.record.good = Some(d.clone());
        }
        if let (Some(good), Some(d)) = (&mut self.record.good, &self.record.deployed)
            && good.store_path == d.store_path
        {
            good.generation = d.generation;
            good.build_id = good.build_id.or(d.build_id);
        }
        self.profile = profile;
    }

    fn is_known_bad(&self, path: &str) -> bool {
        self.record.known_bad.iter().any(|k| k.store_path == path)
    }

    /// Where a failed deployment returns: the last build known to run well (its store path and
    /// the generation that held it), unless it has become known-bad since. `None`: nothing good
    /// is known, and the profile stays where it is.
    pub fn rollback_target(&self) -> Option<ProfileState> {
        let good = self.record.good.as_ref()?;
        if self.is_known_bad(&good.store_path) {
            return None;
        }
        Some(ProfileState {
            current: Some(StorePath::parse(&good.store_path).ok()?),
            generation: good.generation,
        })
    }

    /// The build id of a path hail deployed before, from its history.
    fn build_id_of(&self, path: &StorePath) -> Option<u64> {
        self.record
            .history
            .iter()
            .find(|h| h.store_path == path.as_str())
            .map(|h| h.build_id)
    }

    fn mark_bad(&mut self, build_id: Option<u64>, path: &str, reason: &str, now: Timestamp) {
        let list = &mut self.record.known_bad;
        list.retain(|k| k.store_path != path);
        list.push(KnownBad {
            build_id,
            store_path: path.to_owned(),
            reason: reason.to_owned(),
            time: now,
        });
        let excess = list.len().saturating_sub(record::MAX_KNOWN_BAD);
        list.drain(..excess);
    }

    fn finish(&mut self, round: Round) -> Next {
        self.record.consecutive_failures = if round.is_failure() {
            self.record.consecutive_failures.saturating_add(1)
        } else {
            0
        };
        self.last = Some(round);
        Next::Wait
    }
}

fn build_ref(b: &Build) -> BuildRef {
    BuildRef {
        build_id: b.id,
        store_path: b.path.to_string(),
    }
}

mod events;
mod status_line;

pub use events::{
    Activity, AfterReboot, DeployFailure, Event, Next, Notice, Request, Round, Unfinished,
    WindowWait,
};

#[cfg(test)]
mod tests;
