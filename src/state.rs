//! The agent's state and its transitions, as pure functions: what hail knows, what it does after
//! a poll and after a deployment, how long it waits, and what its status line says. The agent
//! ([`crate::agent`]) performs the effects and feeds their outcomes in as [`Event`]s.

use std::fmt;
use std::time::Duration;

use crate::decide::{self, Decision};
use crate::format;
use crate::store_path::StorePath;
use crate::types::{Build, ProfileState};

/// What hail knows between polls (in memory: a restart forgets it, so a restart retries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// What the profile points at, as last seen.
    profile: ProfileState,
    /// The Hydra build id of what the profile points at, once a poll or deployment has told us.
    deployed_build: Option<u64>,
    /// A path whose activation failed; it is not deployed again until Hydra names another one.
    known_bad: Option<StorePath>,
    /// Failures in a row (poll or deployment); 0 after a good poll.
    failures: u32,
    /// Why the start-up activation failed; shown until a deployment succeeds.
    startup_failure: Option<String>,
    /// How the last round ended; `None` before the first.
    last: Option<Round>,
}

/// What the effects report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The profile's `bin/activate` ran at start-up.
    StartupActivation(Result<(), String>),
    /// Asking Hydra failed (the message says why).
    PollFailed(String),
    /// Hydra named `latest`; the profile points at `profile`.
    Polled {
        profile: ProfileState,
        latest: Build,
    },
    /// A deployment of `build` ended, leaving the profile at `profile`.
    Deployed {
        build: Build,
        profile: ProfileState,
        result: Result<(), DeployFailure>,
    },
}

/// Why a deployment failed, as the core needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFailure {
    /// The build's activation failed (so the build is known-bad), rather than fetching or
    /// switching to it.
    pub activation: bool,
    pub message: String,
}

/// What the agent does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Realise, switch to and activate this build, then report [`Event::Deployed`].
    Deploy(Build),
    /// This round is over: wait for the next poll.
    Wait,
}

/// How one round (a poll, and the deployment it led to) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    UpToDate,
    Deployed,
    /// Hydra's latest build is the one that failed to activate.
    KnownBad {
        id: u64,
        path: StorePath,
    },
    PollFailed(String),
    DeployFailed {
        id: u64,
        failure: DeployFailure,
    },
}

impl Round {
    /// The documented exit codes of `--oneshot` (README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            Round::UpToDate | Round::Deployed => 0,
            Round::PollFailed(_) => 5,
            Round::DeployFailed { failure, .. } if !failure.activation => 6,
            Round::KnownBad { .. } | Round::DeployFailed { .. } => 7,
        }
    }

    fn is_failure(&self) -> bool {
        matches!(self, Round::PollFailed(_) | Round::DeployFailed { .. })
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Round::UpToDate => write!(f, "up to date"),
            Round::Deployed => write!(f, "deployed"),
            Round::KnownBad { id, path } => write!(
                f,
                "build {id} ({path}) failed to activate before; waiting for a newer build"
            ),
            Round::PollFailed(e) => write!(f, "poll failed: {e}"),
            Round::DeployFailed { id, failure } => {
                write!(f, "deploying build {id} failed: {}", failure.message)
            }
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
    /// Waiting this long for the next poll.
    Waiting(Duration),
    Stopping,
}

impl State {
    /// The state at start-up, with the profile as found.
    pub fn new(profile: ProfileState) -> Self {
        State {
            profile,
            ..State::default()
        }
    }

    pub fn profile(&self) -> &ProfileState {
        &self.profile
    }

    /// How the last round ended.
    pub fn last_round(&self) -> Option<&Round> {
        self.last.as_ref()
    }

    pub fn apply(&mut self, event: Event) -> Next {
        match event {
            Event::StartupActivation(result) => {
                self.startup_failure = result.err();
                Next::Wait
            }
            Event::PollFailed(e) => self.finish(Round::PollFailed(e)),
            Event::Polled { profile, latest } => {
                self.see(profile);
                let current = self.profile.current.as_ref();
                match decide::decide(current, self.known_bad.as_ref(), &latest) {
                    Decision::UpToDate => {
                        self.deployed_build = Some(latest.id);
                        self.finish(Round::UpToDate)
                    }
                    Decision::SkipKnownBad => self.finish(Round::KnownBad {
                        id: latest.id,
                        path: latest.path,
                    }),
                    Decision::Deploy => Next::Deploy(latest),
                }
            }
            Event::Deployed {
                build,
                profile,
                result,
            } => match result {
                Ok(()) => {
                    self.profile = profile;
                    self.deployed_build = Some(build.id);
                    self.known_bad = None;
                    self.startup_failure = None;
                    self.finish(Round::Deployed)
                }
                Err(failure) => {
                    // Rolled back to what was deployed before: its build id still describes it.
                    self.see(profile);
                    if failure.activation {
                        self.known_bad = Some(build.path);
                    }
                    self.finish(Round::DeployFailed {
                        id: build.id,
                        failure,
                    })
                }
            },
        }
    }

    /// How long to wait before the next poll: the period, or a growing backoff after failures,
    /// plus jitter from `entropy`.
    pub fn next_wait(&self, period: Duration, entropy: u64) -> Duration {
        decide::with_jitter(decide::next_wait(period, self.failures), entropy)
    }

    /// `deployed <what>; <activity>`: the one line systemd shows under the unit.
    pub fn status_line(&self, activity: Activity) -> String {
        let generation = format::generation(self.profile.generation);
        let what = match (&self.profile.current, self.deployed_build) {
            (None, _) => "nothing".to_owned(),
            (Some(p), Some(id)) => format!("build {id} ({}), generation {generation}", p.short()),
            (Some(p), None) => format!("{}, generation {generation}", p.short()),
        };
        let activity = match activity {
            Activity::Starting => "starting".to_owned(),
            Activity::StartupActivation => "running the start-up activation".to_owned(),
            Activity::Polling => "polling Hydra".to_owned(),
            Activity::Deploying(b) => format!("deploying build {} ({})", b.id, b.path.short()),
            Activity::Stopping => "stopping".to_owned(),
            Activity::Waiting(wait) => {
                let wait = format::duration(wait);
                match (&self.last, &self.startup_failure) {
                    (Some(r), _) if r.is_failure() => format!("{r}; retrying in {wait}"),
                    (Some(r @ Round::KnownBad { .. }), _) => format!("{r}; next poll in {wait}"),
                    (_, None) => format!("idle, next poll in {wait}"),
                    (_, Some(e)) => {
                        format!("idle, next poll in {wait} (start-up activation failed: {e})")
                    }
                }
            }
        };
        format!("deployed {what}; {activity}")
    }

    /// Takes note of the profile as read now; a build id known for another path no longer
    /// describes it.
    fn see(&mut self, profile: ProfileState) {
        if profile.current != self.profile.current {
            self.deployed_build = None;
        }
        self.profile = profile;
    }

    fn finish(&mut self, round: Round) -> Next {
        self.failures = if round.is_failure() {
            self.failures.saturating_add(1)
        } else {
            0
        };
        self.last = Some(round);
        Next::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(c: char) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-p", c.to_string().repeat(32))).unwrap()
    }

    fn build(id: u64, c: char) -> Build {
        Build { id, path: path(c) }
    }

    fn at(c: char, generation: u64) -> ProfileState {
        ProfileState {
            current: Some(path(c)),
            generation: Some(generation),
        }
    }

    fn polled(profile: ProfileState, latest: Build) -> Event {
        Event::Polled { profile, latest }
    }

    fn deployed(b: Build, profile: ProfileState) -> Event {
        Event::Deployed {
            build: b,
            profile,
            result: Ok(()),
        }
    }

    fn failed(b: Build, profile: ProfileState, activation: bool) -> Event {
        Event::Deployed {
            build: b,
            profile,
            result: Err(DeployFailure {
                activation,
                message: "it broke".into(),
            }),
        }
    }

    const MIN5: Duration = Duration::from_secs(300);

    /// Applies `events` in turn; returns the state, what the last event asked for, and the status
    /// line while waiting (with no jitter).
    fn run(start: ProfileState, events: Vec<Event>) -> (State, Next, String) {
        let mut s = State::new(start);
        let mut next = Next::Wait;
        for e in events {
            next = s.apply(e);
        }
        let wait = s.next_wait(MIN5, 0);
        let status = s.status_line(Activity::Waiting(wait));
        (s, next, status)
    }

    /// A name, the profile at start, the events, what the last one asks for, the status line
    /// while waiting, and the last round's exit code.
    type Case = (
        &'static str,
        ProfileState,
        Vec<Event>,
        Next,
        &'static str,
        Option<u8>,
    );

    #[test]
    fn rounds_as_tables() {
        let cases: Vec<Case> = vec![
            (
                "first poll of an empty profile deploys",
                ProfileState::default(),
                vec![polled(ProfileState::default(), build(1, 'a'))],
                Next::Deploy(build(1, 'a')),
                "deployed nothing; idle, next poll in 5m",
                None,
            ),
            (
                "a deployment that succeeds",
                ProfileState::default(),
                vec![
                    polled(ProfileState::default(), build(1, 'a')),
                    deployed(build(1, 'a'), at('a', 1)),
                ],
                Next::Wait,
                "deployed build 1 (aaaaaaaa…-p), generation 1; idle, next poll in 5m",
                Some(0),
            ),
            (
                "up to date learns the build id",
                at('a', 3),
                vec![polled(at('a', 3), build(7, 'a'))],
                Next::Wait,
                "deployed build 7 (aaaaaaaa…-p), generation 3; idle, next poll in 5m",
                Some(0),
            ),
            (
                "a failed poll backs off",
                at('a', 3),
                vec![Event::PollFailed("Hydra answered 500".into())],
                Next::Wait,
                "deployed aaaaaaaa…-p, generation 3; poll failed: Hydra answered 500; retrying in 30s",
                Some(5),
            ),
            (
                "failures in a row double the wait",
                at('a', 3),
                vec![
                    Event::PollFailed("x".into()),
                    Event::PollFailed("x".into()),
                    Event::PollFailed("y".into()),
                ],
                Next::Wait,
                "deployed aaaaaaaa…-p, generation 3; poll failed: y; retrying in 2m",
                Some(5),
            ),
            (
                "a good poll ends the backoff",
                at('a', 3),
                vec![
                    Event::PollFailed("x".into()),
                    polled(at('a', 3), build(7, 'a')),
                ],
                Next::Wait,
                "deployed build 7 (aaaaaaaa…-p), generation 3; idle, next poll in 5m",
                Some(0),
            ),
            (
                "a failed activation, rolled back: the old build id stays, the new one is bad",
                at('a', 3),
                vec![
                    polled(at('a', 3), build(7, 'a')),
                    polled(at('a', 3), build(8, 'b')),
                    failed(build(8, 'b'), at('a', 3), true),
                ],
                Next::Wait,
                "deployed build 7 (aaaaaaaa…-p), generation 3; deploying build 8 failed: it broke; retrying in 30s",
                Some(7),
            ),
            (
                "the known-bad build is not deployed again, and that is no failure",
                at('a', 3),
                vec![
                    polled(at('a', 3), build(8, 'b')),
                    failed(build(8, 'b'), at('a', 3), true),
                    polled(at('a', 3), build(8, 'b')),
                ],
                Next::Wait,
                "deployed aaaaaaaa…-p, generation 3; build 8 (/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-p) failed to activate before; waiting for a newer build; next poll in 5m",
                Some(7),
            ),
            (
                "a newer build after a known-bad one is deployed",
                at('a', 3),
                vec![
                    polled(at('a', 3), build(8, 'b')),
                    failed(build(8, 'b'), at('a', 3), true),
                    polled(at('a', 3), build(9, 'c')),
                ],
                Next::Deploy(build(9, 'c')),
                "deployed aaaaaaaa…-p, generation 3; deploying build 8 failed: it broke; retrying in 30s",
                Some(7),
            ),
            (
                "a profile left at the failed build (switching back failed) is not up to date",
                at('a', 3),
                vec![
                    polled(at('a', 3), build(8, 'b')),
                    failed(build(8, 'b'), at('b', 4), true),
                    polled(at('b', 4), build(8, 'b')),
                ],
                Next::Wait,
                "deployed bbbbbbbb…-p, generation 4; build 8 (/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-p) failed to activate before; waiting for a newer build; next poll in 5m",
                Some(7),
            ),
            (
                "a failed download is retried: the build is not known-bad",
                at('a', 3),
                vec![
                    polled(at('a', 3), build(8, 'b')),
                    failed(build(8, 'b'), at('a', 3), false),
                    polled(at('a', 3), build(8, 'b')),
                ],
                Next::Deploy(build(8, 'b')),
                "deployed aaaaaaaa…-p, generation 3; deploying build 8 failed: it broke; retrying in 30s",
                Some(6),
            ),
            (
                "a start-up activation failure stays in the status until a deployment succeeds",
                at('a', 3),
                vec![
                    Event::StartupActivation(Err("exit status 1".into())),
                    polled(at('a', 3), build(7, 'a')),
                ],
                Next::Wait,
                "deployed build 7 (aaaaaaaa…-p), generation 3; idle, next poll in 5m (start-up activation failed: exit status 1)",
                Some(0),
            ),
            (
                "... and goes with one",
                at('a', 3),
                vec![
                    Event::StartupActivation(Err("exit status 1".into())),
                    polled(at('a', 3), build(8, 'b')),
                    deployed(build(8, 'b'), at('b', 4)),
                ],
                Next::Wait,
                "deployed build 8 (bbbbbbbb…-p), generation 4; idle, next poll in 5m",
                Some(0),
            ),
            (
                "a profile changed by someone else loses its build id",
                at('a', 3),
                vec![
                    polled(at('a', 3), build(7, 'a')),
                    polled(at('c', 2), build(7, 'a')),
                ],
                Next::Deploy(build(7, 'a')),
                "deployed cccccccc…-p, generation 2; idle, next poll in 5m",
                Some(0),
            ),
        ];
        for (name, start, events, next, status, code) in cases {
            let (s, got_next, got_status) = run(start, events);
            assert_eq!(got_next, next, "{name}");
            assert_eq!(got_status, status, "{name}");
            assert_eq!(s.last_round().map(Round::exit_code), code, "{name}");
        }
    }

    #[test]
    fn activities() {
        let s = State::new(at('a', 3));
        let b = build(8, 'b');
        let line = |a| s.status_line(a);
        assert_eq!(
            line(Activity::Starting),
            "deployed aaaaaaaa…-p, generation 3; starting"
        );
        assert_eq!(
            line(Activity::Deploying(&b)),
            "deployed aaaaaaaa…-p, generation 3; deploying build 8 (bbbbbbbb…-p)"
        );
        assert_eq!(
            line(Activity::Polling),
            "deployed aaaaaaaa…-p, generation 3; polling Hydra"
        );
        assert_eq!(
            State::new(ProfileState {
                current: Some(path('a')),
                generation: None
            })
            .status_line(Activity::Stopping),
            "deployed aaaaaaaa…-p, generation ?; stopping"
        );
    }

    #[test]
    fn failures_never_overflow() {
        let mut s = State::new(ProfileState::default());
        s.failures = u32::MAX;
        s.apply(Event::PollFailed("x".into()));
        assert_eq!(s.next_wait(Duration::from_secs(1), 0), decide::BACKOFF_CAP);
    }
}
