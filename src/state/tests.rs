//! The state machine as tables: a start, a sequence of events, and what must follow.

use super::*;
use crate::record::Verdict;

fn path(c: char) -> StorePath {
    StorePath::parse(&format!("/nix/store/{}-p", c.to_string().repeat(32))).unwrap()
}

fn build(id: u64, c: char) -> Build {
    Build::new(id, path(c))
}

fn at(c: char, generation: u64) -> ProfileState {
    ProfileState {
        current: Some(path(c)),
        generation: Some(generation),
    }
}

fn empty() -> ProfileState {
    ProfileState::default()
}

fn polled(profile: ProfileState, latest: Build) -> Event {
    Event::Polled {
        profile,
        latest,
        passed_over: Vec::new(),
        hydra_ahead: None,
    }
}

fn deployed(b: Build, profile: ProfileState) -> Event {
    Event::Deployed {
        build: b,
        profile,
        result: Ok(()),
    }
}

fn failed(b: Build, profile: ProfileState, activation: bool) -> Event {
    let result = if activation {
        DeploymentResult::ActivationFailed
    } else {
        DeploymentResult::Failed
    };
    Event::Deployed {
        build: b,
        profile,
        result: Err(DeployFailure {
            result,
            message: "it broke".into(),
            reason: "activation failed: it broke".into(),
        }),
    }
}

fn control(r: Request) -> Event {
    Event::Control(r)
}

const MIN5: Duration = Duration::from_secs(300);
const JOB: &str = "http://h/job/p/j/x";
const PROFILE: &str = "/nix/var/nix/profiles/web";

/// A clock that moves a minute per event.
/// A state with no record and the default policy, started at minute 0.
fn fresh(profile: ProfileState) -> State {
    State::new(
        Record::default(),
        Policy::default(),
        JOB,
        PROFILE,
        profile,
        minute(0),
    )
}

fn minute(n: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + 60 * n).unwrap()
}

/// Starts from `record` with the profile at `start`, applies `events` (a minute apart); returns
/// the state, what the last event asked for, and the status line while waiting (no jitter).
fn run(record: Record, start: ProfileState, events: Vec<Event>) -> (State, Next, String) {
    let mut s = State::new(record, Policy::default(), JOB, PROFILE, start, minute(0));
    let mut next = Next::Wait;
    for (i, e) in events.into_iter().enumerate() {
        next = s.apply(minute(i as i64 + 1), e);
    }
    let wait = s.schedule(minute(100), MIN5, 0);
    let status = s.status_line(Activity::Waiting(wait));
    (s, next, status)
}

/// A name, the profile at start, the events, what the last one asks for, the status line while
/// waiting, and the last round's exit code.
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
            empty(),
            vec![polled(empty(), build(1, 'a'))],
            Next::Deploy(build(1, 'a')),
            "deployed nothing; idle, next poll in 5m",
            None,
        ),
        (
            "a deployment that succeeds",
            empty(),
            vec![
                polled(empty(), build(1, 'a')),
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
            "a deployment that could not be recorded is not under way, and backs off",
            at('a', 3),
            vec![
                polled(at('a', 3), build(8, 'b')),
                Event::NotRecorded {
                    build: build(8, 'b'),
                    error: "No space left on device".into(),
                },
            ],
            Next::Wait,
            "deployed aaaaaaaa…-p, generation 3; build 8 not deployed: the state could not be written (No space left on device); nothing was switched; retrying in 30s",
            Some(6),
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
            "deployed aaaaaaaa…-p, generation 3; build 8 (/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-p) is known to be bad (activation failed: it broke); waiting for a newer build; next poll in 5m",
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
            "deployed build 8 (bbbbbbbb…-p), generation 4; build 8 (/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-p) is known to be bad (activation failed: it broke); waiting for a newer build; next poll in 5m",
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
            "a manual rollback is kept, and the build rolled away from is not deployed again",
            at('a', 3),
            vec![
                polled(at('a', 3), build(8, 'b')),
                deployed(build(8, 'b'), at('b', 4)),
                polled(at('a', 3), build(8, 'b')),
            ],
            Next::Wait,
            "deployed aaaaaaaa…-p, generation 3; build 8 (/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-p) is known to be bad (rolled back by hand); waiting for a newer build; next poll in 5m",
            Some(7),
        ),
        (
            "after a manual rollback a newer build is deployed",
            at('a', 3),
            vec![
                polled(at('a', 3), build(8, 'b')),
                deployed(build(8, 'b'), at('b', 4)),
                polled(at('a', 3), build(9, 'c')),
            ],
            Next::Deploy(build(9, 'c')),
            "deployed aaaaaaaa…-p, generation 3; idle, next poll in 5m",
            Some(0),
        ),
        (
            "a rollback by hand to a build hail deployed before names its build id",
            empty(),
            vec![
                polled(empty(), build(7, 'a')),
                deployed(build(7, 'a'), at('a', 1)),
                polled(at('a', 1), build(8, 'b')),
                deployed(build(8, 'b'), at('b', 2)),
                polled(at('a', 3), build(8, 'b')),
            ],
            Next::Wait,
            "deployed build 7 (aaaaaaaa…-p), generation 3; build 8 (/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-p) is known to be bad (rolled back by hand); waiting for a newer build; next poll in 5m",
            Some(7),
        ),
        (
            "paused: polls, reports what it would deploy, changes nothing",
            at('a', 3),
            vec![
                control(Request::Pause {
                    reason: Some("maintenance".into()),
                }),
                polled(at('a', 3), build(8, 'b')),
            ],
            Next::Wait,
            "deployed aaaaaaaa…-p, generation 3; paused: build 8 (bbbbbbbb…-p) waits; next poll in 5m (paused: maintenance)",
            Some(8),
        ),
        (
            "paused and up to date",
            at('a', 3),
            vec![
                control(Request::Pause { reason: None }),
                polled(at('a', 3), build(7, 'a')),
            ],
            Next::Wait,
            "deployed build 7 (aaaaaaaa…-p), generation 3; paused; next poll in 5m",
            Some(0),
        ),
        (
            "resume polls at once",
            at('a', 3),
            vec![
                control(Request::Pause { reason: None }),
                control(Request::Resume),
            ],
            Next::PollNow,
            "deployed aaaaaaaa…-p, generation 3; idle, next poll in 5m",
            None,
        ),
        (
            "retry forgets a known-bad build, which is then deployed",
            at('a', 3),
            vec![
                polled(at('a', 3), build(8, 'b')),
                failed(build(8, 'b'), at('a', 3), true),
                control(Request::Retry { build_id: Some(8) }),
                polled(at('a', 3), build(8, 'b')),
            ],
            Next::Deploy(build(8, 'b')),
            "deployed aaaaaaaa…-p, generation 3; deploying build 8 failed: it broke; retrying in 30s",
            Some(7),
        ),
        (
            "retry of another build keeps this one bad",
            at('a', 3),
            vec![
                polled(at('a', 3), build(8, 'b')),
                failed(build(8, 'b'), at('a', 3), true),
                control(Request::Retry { build_id: Some(5) }),
                polled(at('a', 3), build(8, 'b')),
            ],
            Next::Wait,
            "deployed aaaaaaaa…-p, generation 3; build 8 (/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-p) is known to be bad (activation failed: it broke); waiting for a newer build; next poll in 5m",
            Some(7),
        ),
    ];
    for (name, start, events, next, status, code) in cases {
        let (s, got_next, got_status) = run(Record::default(), start, events);
        assert_eq!(got_next, next, "{name}");
        assert_eq!(got_status, status, "{name}");
        assert_eq!(s.last_round().map(Round::exit_code), code, "{name}");
    }
}

/// The record a state leaves behind, as the next process reads it.
fn after(start: ProfileState, events: Vec<Event>) -> Record {
    run(Record::default(), start, events).0.record().clone()
}

#[test]
fn known_bad_builds_survive_a_restart() {
    let record = after(
        at('a', 3),
        vec![
            polled(at('a', 3), build(8, 'b')),
            failed(build(8, 'b'), at('a', 3), true),
        ],
    );
    let (_, next, _) = run(
        record.clone(),
        at('a', 3),
        vec![polled(at('a', 3), build(8, 'b'))],
    );
    assert_eq!(next, Next::Wait);
    let (_, next, _) = run(record, at('a', 3), vec![polled(at('a', 3), build(9, 'c'))]);
    assert_eq!(next, Next::Deploy(build(9, 'c')));
}

#[test]
fn a_manual_rollback_while_stopped_is_noticed_at_start() {
    let record = after(
        at('a', 3),
        vec![
            polled(at('a', 3), build(8, 'b')),
            deployed(build(8, 'b'), at('b', 4)),
        ],
    );
    let mut s = State::new(
        record,
        Policy::default(),
        JOB,
        PROFILE,
        at('a', 3),
        minute(50),
    );
    assert_eq!(
        s.take_notices(),
        [Notice::ManualChange {
            build_id: Some(8),
            from: path('b').to_string(),
            to: Some(path('a')),
            generation: Some(3),
        }]
    );
    let bad = &s.record().known_bad;
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].build_id, Some(8));
    assert_eq!(bad[0].reason, REASON_ROLLED_BACK_BY_HAND);
    assert_eq!(bad[0].time, minute(50));
    assert_eq!(
        s.apply(minute(51), polled(at('a', 3), build(8, 'b'))),
        Next::Wait
    );
}

#[test]
fn a_deployment_interrupted_after_its_switch_is_hails_own() {
    let mut s = fresh(at('a', 3));
    assert_eq!(
        s.apply(minute(1), polled(at('a', 3), build(8, 'b'))),
        Next::Deploy(build(8, 'b'))
    );
    // The agent saves this record before it switches, then dies after the switch.
    let record = s.record().clone();
    assert!(record.deploying.is_some());
    let mut s = State::new(
        record.clone(),
        Policy::default(),
        JOB,
        PROFILE,
        at('b', 4),
        minute(2),
    );
    assert_eq!(s.take_notices(), []);
    // Still under way until it is seen through.
    assert_eq!(s.record().deploying, record.deploying);
    assert_eq!(s.record().deployed.as_ref().unwrap().build_id, Some(8));
    // ... or before it: nothing happened.
    let mut s = State::new(
        record,
        Policy::default(),
        JOB,
        PROFILE,
        at('a', 3),
        minute(2),
    );
    assert_eq!(s.take_notices(), []);
    assert_eq!(
        s.record().deployed.as_ref().unwrap().store_path,
        path('a').as_str()
    );
}

#[test]
fn another_profiles_record_is_not_taken_for_a_manual_change() {
    let record = after(
        empty(),
        vec![
            polled(empty(), build(8, 'b')),
            deployed(build(8, 'b'), at('b', 1)),
        ],
    );
    let mut s = State::new(
        record,
        Policy::default(),
        JOB,
        "/nix/var/nix/profiles/other",
        at('a', 3),
        minute(9),
    );
    assert_eq!(s.take_notices(), []);
    assert!(s.record().known_bad.is_empty());
    assert_eq!(s.record().profile, "/nix/var/nix/profiles/other");
}

#[test]
fn history_counters_and_polls_are_recorded() {
    let record = after(
        at('a', 3),
        vec![
            Event::PollFailed("down".into()),
            polled(at('a', 3), build(8, 'b')),
            failed(build(8, 'b'), at('a', 3), true),
            polled(at('a', 3), build(9, 'c')),
            deployed(build(9, 'c'), at('c', 5)),
        ],
    );
    assert_eq!(record.history.len(), 2);
    assert_eq!(record.history[0].build_id, 9);
    assert_eq!(record.history[0].result, DeploymentResult::Deployed);
    assert_eq!(record.history[1].result, DeploymentResult::ActivationFailed);
    assert_eq!(record.last_deployment, Some(record.history[0].clone()));
    assert_eq!(record.counters.polls_ok, 2);
    assert_eq!(record.counters.polls_failed, 1);
    assert_eq!(record.counters.deployments_deployed, 1);
    assert_eq!(record.counters.deployments_activation_failed, 1);
    assert_eq!(record.counters.last_deployment_success, Some(minute(5)));
    assert_eq!(record.latest.as_ref().unwrap().build_id, 9);
    let poll = record.last_poll.as_ref().unwrap();
    assert!(poll.ok && poll.time == minute(4));
    assert_eq!(record.consecutive_failures, 0);
    assert_eq!(record.next_poll, Some(minute(105)));
}

#[test]
fn lists_are_bounded() {
    let mut s = fresh(at('a', 1));
    for id in 0..(record::MAX_KNOWN_BAD as u64 + 5) {
        let b = Build::new(
            id,
            StorePath::parse(&format!("/nix/store/{:0>32}-p", id)).unwrap(),
        );
        s.apply(minute(1), polled(at('a', 1), b.clone()));
        s.apply(minute(1), failed(b, at('a', 1), true));
    }
    let r = s.record();
    assert_eq!(r.known_bad.len(), record::MAX_KNOWN_BAD);
    assert_eq!(r.known_bad[0].build_id, Some(5), "the oldest go first");
    assert_eq!(r.history.len(), record::MAX_HISTORY);
}

#[test]
fn activities() {
    let s = fresh(at('a', 3));
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
    let unnumbered = ProfileState {
        current: Some(path('a')),
        generation: None,
    };
    assert_eq!(
        fresh(unnumbered).status_line(Activity::Stopping),
        "deployed aaaaaaaa…-p, generation ?; stopping"
    );
}

#[test]
fn failures_never_overflow() {
    let mut s = fresh(empty());
    s.record.consecutive_failures = u32::MAX;
    s.apply(minute(1), Event::PollFailed("x".into()));
    assert_eq!(
        s.schedule(minute(1), Duration::from_secs(1), 0),
        decide::BACKOFF_CAP
    );
}

#[test]
fn a_reboot_waiting_for_its_window_wakes_hail_when_it_opens() {
    let mut s = fresh(at('a', 3));
    let hour = Duration::from_secs(3600);
    let min = |n: u64| Duration::from_secs(n * 60);
    let second = Duration::from_secs(1);
    let waits = |opens_in, length| Event::RebootWaits(Some(WindowWait { opens_in, length }));
    // The window opens in 20 minutes: hail polls then (a second after), not an hour later.
    assert_eq!(s.apply(minute(10), waits(min(20), min(30))), Next::Wait);
    assert_eq!(s.schedule(minute(10), hour, 0), min(20) + second);
    assert_eq!(s.schedule(minute(25), hour, 0), min(5) + second);
    // A fleet spreads over up to a tenth of the window (30 minutes: 3 minutes)…
    let latest = s.schedule(minute(10), hour, u64::MAX);
    assert!(
        latest > min(20) + second && latest < min(23) + second,
        "{latest:?}"
    );
    // … or of the poll period when that is shorter (and it wakes first anyway).
    assert_eq!(s.schedule(minute(10), MIN5, 0), MIN5);
    // Once the opening has passed, no faster than once a second.
    assert_eq!(s.schedule(minute(40), hour, 0), second);
    // Further than an hour away: the local clock is read again within the hour (daylight
    // saving time may move the opening).
    s.apply(minute(41), waits(min(300), min(30)));
    assert_eq!(
        s.schedule(minute(41), Duration::from_secs(6 * 3600), 0),
        hour
    );
    // An hour away exactly is not further: a second after the opening.
    s.apply(minute(42), waits(hour, min(30)));
    assert_eq!(
        s.schedule(minute(42), Duration::from_secs(6 * 3600), 0),
        hour + second
    );
    // No reboot waits any more: the poll period again.
    s.apply(minute(42), Event::RebootWaits(None));
    assert_eq!(s.schedule(minute(42), hour, 0), hour);
}

#[test]
fn reboots_only_after_a_good_round_and_not_while_paused() {
    let mut s = fresh(at('a', 3));
    assert!(!s.may_reboot(), "before any round");
    s.apply(minute(1), polled(at('a', 3), build(3, 'a')));
    assert_eq!(s.last_round(), Some(&Round::UpToDate));
    assert!(s.may_reboot());
    s.apply(minute(2), Event::Control(Request::Pause { reason: None }));
    assert!(!s.may_reboot(), "paused");
    s.apply(minute(3), Event::Control(Request::Resume));
    s.apply(minute(4), Event::PollFailed("down".into()));
    assert!(!s.may_reboot(), "after a failed poll");
    s.apply(minute(5), polled(at('a', 3), build(3, 'a')));
    assert!(s.may_reboot());
}

#[test]
fn held_builds_wait_and_hail_wakes_at_their_slot() {
    let policy = Policy {
        min_build_age: Duration::from_secs(600),
        rollout_delay: Duration::from_secs(37 * 60),
        ..Policy::default()
    };
    let mut s = State::new(
        Record::default(),
        policy,
        JOB,
        PROFILE,
        at('a', 3),
        minute(0),
    );
    let young = Build {
        finished_at: Some(minute(1)),
        ..build(8, 'b')
    };
    assert_eq!(
        s.apply(minute(2), polled(at('a', 3), young.clone())),
        Next::Wait
    );
    assert_eq!(s.last_round().map(Round::exit_code), Some(8));
    // Woken when it is old enough (minute 11), not a poll period later.
    let hour = Duration::from_secs(3600);
    assert_eq!(s.schedule(minute(2), hour, 0), Duration::from_secs(9 * 60));
    assert_eq!(s.schedule(minute(2), MIN5, 0), MIN5);
    assert_eq!(
        s.status_line(Activity::Waiting(Duration::from_secs(540))),
        "deployed aaaaaaaa…-p, generation 3; build 8 waits until it is old enough (in 9m); next poll in 9m"
    );
    assert_eq!(
        s.apply(minute(11), polled(at('a', 3), young.clone())),
        Next::Wait
    );
    assert_eq!(
        s.status_line(Activity::Waiting(MIN5)),
        "deployed aaaaaaaa…-p, generation 3; build 8 waits for its rollout slot (in 37m); next poll in 5m"
    );
    assert_eq!(
        s.schedule(minute(11), Duration::from_secs(3600), 0),
        Duration::from_secs(37 * 60)
    );
    assert_eq!(
        s.apply(minute(48), polled(at('a', 3), young.clone())),
        Next::Deploy(young)
    );
}

#[test]
fn a_lower_build_id_is_not_deployed_unless_allowed() {
    for (allow, want) in [(false, Next::Wait), (true, Next::Deploy(build(6, 'c')))] {
        let policy = Policy {
            allow_downgrade: allow,
            ..Policy::default()
        };
        let mut s = State::new(
            Record::default(),
            policy,
            JOB,
            PROFILE,
            at('a', 3),
            minute(0),
        );
        s.apply(minute(1), polled(at('a', 3), build(7, 'a')));
        assert_eq!(s.apply(minute(2), polled(at('a', 3), build(6, 'c'))), want);
        if !allow {
            assert_eq!(
                s.status_line(Activity::Waiting(MIN5)),
                "deployed build 7 (aaaaaaaa…-p), generation 3; build 6 is older than the deployed \
                 build 7; not downgrading (--allow-downgrade allows it); next poll in 5m"
            );
            assert_eq!(s.last_round().map(Round::exit_code), Some(8));
        }
    }
}

#[test]
fn a_build_interrupted_during_its_checks_is_checked_at_start() {
    let mut s = fresh(at('a', 3));
    assert!(matches!(
        s.apply(minute(1), polled(at('a', 3), build(8, 'b'))),
        Next::Deploy(_)
    ));
    let record = s.record().clone();
    let mut s = State::new(
        record.clone(),
        Policy::default(),
        JOB,
        PROFILE,
        at('b', 4),
        minute(2),
    );
    assert_eq!(s.take_unfinished().map(|u| u.build.build_id), Some(8));
    assert_eq!(s.take_unfinished(), None);
    // Killed again while it is seen through: the record still says so.
    let mut again = State::new(
        s.record().clone(),
        Policy::default(),
        JOB,
        PROFILE,
        at('b', 4),
        minute(3),
    );
    assert_eq!(again.take_unfinished().map(|u| u.build.build_id), Some(8));
    let mut s = State::new(
        record,
        Policy::default(),
        JOB,
        PROFILE,
        at('a', 3),
        minute(2),
    );
    assert_eq!(s.take_unfinished(), None);
}

#[test]
fn a_resumed_deployment_that_fails_is_rolled_back_by_hail_not_by_hand() {
    // Build 7 deployed; hail killed while build 8 activates; the next hail resumes it, its
    // activation fails, and the profile goes back to generation 3.
    let mut s = fresh(at('a', 3));
    s.apply(minute(1), polled(at('a', 3), build(7, 'a')));
    s.apply(minute(2), deployed(build(7, 'a'), at('a', 3)));
    assert!(matches!(
        s.apply(minute(3), polled(at('a', 3), build(8, 'b'))),
        Next::Deploy(_)
    ));
    let mut s = State::new(
        s.record().clone(),
        Policy::default(),
        JOB,
        PROFILE,
        at('b', 4),
        minute(4),
    );
    assert_eq!(s.take_unfinished().map(|u| u.build.build_id), Some(8));
    s.apply(minute(5), failed(build(8, 'b'), at('a', 3), true));
    assert_eq!(s.take_notices(), []);
    let bad: Vec<_> = s
        .record()
        .known_bad
        .iter()
        .map(|k| (k.build_id, k.reason.as_str()))
        .collect();
    assert_eq!(bad, [(Some(8), "activation failed: it broke")]);
    let d = s.record().deployed.clone().unwrap();
    assert_eq!(
        (d.build_id, d.store_path.as_str(), d.generation),
        (Some(7), path('a').as_str(), Some(3))
    );
    assert_eq!(s.last_round().map(Round::exit_code), Some(7));
    // And the next poll of build 8 deploys nothing.
    s.apply(minute(6), polled(at('a', 3), build(8, 'b')));
    assert!(matches!(
        s.last_round(),
        Some(Round::KnownBad { id: 8, .. })
    ));
}

#[test]
fn a_rollback_returns_to_the_last_build_known_to_be_good() {
    let target = |s: &State| s.rollback_target().map(|t| (t.current, t.generation));
    // Adopted: what the profile held when hail found it.
    let mut s = fresh(at('a', 1));
    assert_eq!(target(&s), Some((Some(path('a')), Some(1))));
    // Build 7 deployed (generation 2), build 8 failed and rolled back: 7 stays the target.
    s.apply(minute(1), polled(at('a', 1), build(7, 'b')));
    s.apply(minute(2), deployed(build(7, 'b'), at('b', 2)));
    assert_eq!(target(&s), Some((Some(path('b')), Some(2))));
    s.apply(minute(3), polled(at('b', 2), build(8, 'c')));
    s.apply(minute(4), failed(build(8, 'c'), at('b', 2), true));
    assert_eq!(target(&s), Some((Some(path('b')), Some(2))));
    // Killed while build 9 (generation 4, above build 8's generation 3) ran: still build 7.
    s.apply(minute(5), polled(at('b', 2), build(9, 'd')));
    let s = State::new(
        s.record().clone(),
        Policy::default(),
        JOB,
        PROFILE,
        at('d', 4),
        minute(6),
    );
    assert_eq!(target(&s), Some((Some(path('b')), Some(2))));
    // An operator rolled away from the good build: nothing good is known until one runs well.
    let mut s = fresh(at('a', 1));
    s.apply(minute(1), polled(at('a', 1), build(7, 'b')));
    s.apply(minute(2), deployed(build(7, 'b'), at('b', 2)));
    s.apply(minute(3), polled(at('c', 3), build(7, 'b')));
    assert_eq!(
        target(&s),
        Some((Some(path('c')), Some(3))),
        "the operator's choice"
    );
    let mut record = s.record().clone();
    record.known_bad.push(KnownBad {
        build_id: None,
        store_path: path('c').to_string(),
        reason: "x".into(),
        time: minute(4),
    });
    let s = State::new(
        record,
        Policy::default(),
        JOB,
        PROFILE,
        at('c', 3),
        minute(5),
    );
    assert_eq!(target(&s), None);
}

#[test]
fn the_gates_reasons_show_in_the_status() {
    let mut s = fresh(at('a', 3));
    let why = vec!["evaluation 105 has unfinished builds".to_owned()];
    s.apply(
        minute(1),
        Event::Polled {
            profile: at('a', 3),
            latest: build(7, 'a'),
            passed_over: why.clone(),
            hydra_ahead: None,
        },
    );
    assert_eq!(
        s.status_line(Activity::Waiting(MIN5)),
        "deployed build 7 (aaaaaaaa…-p), generation 3; idle, next poll in 5m (passed over: \
         evaluation 105 has unfinished builds)"
    );
    assert_eq!(s.apply(minute(2), Event::NoneEligible(why)), Next::Wait);
    assert_eq!(s.last_round().map(Round::exit_code), Some(8));
    assert_eq!(
        s.schedule(minute(2), MIN5, 0),
        MIN5,
        "no backoff: nothing failed"
    );
    assert_eq!(
        s.status_line(Activity::Waiting(MIN5)),
        "deployed build 7 (aaaaaaaa…-p), generation 3; no evaluation passes the gate \
         (evaluation 105 has unfinished builds); next poll in 5m"
    );
}

#[test]
fn reboot_needed_is_kept_shown_and_said_once() {
    let booted = |d: &[&str]| Event::Booted(d.iter().map(|s| s.to_string()).collect());
    // (events, reboot_needed afterwards, notices of the last event, status line suffix)
    #[rustfmt::skip]
    let cases: Vec<(Vec<Event>, &[&str], usize, &str)> = vec![
        (vec![booted(&[])], &[], 0, "idle, next poll in 5m"),
        (vec![booted(&["kernel"])], &["kernel"], 1, "idle, next poll in 5m (reboot needed: kernel)"),
        (vec![booted(&["kernel"]), booted(&["kernel"])], &["kernel"], 0, "(reboot needed: kernel)"),
        (vec![booted(&["kernel"]), booted(&["kernel", "initrd"])], &["kernel", "initrd"], 1, "(reboot needed: kernel, initrd)"),
        (vec![booted(&["kernel"]), booted(&[])], &[], 0, "idle, next poll in 5m"),
        (vec![booted(&["kernel"]), booted(&[]), booted(&["kernel"])], &["kernel"], 1, "(reboot needed: kernel)"),
    ];
    for (events, want, notices, status) in cases {
        let mut s = fresh(at('a', 1));
        let n = events.len();
        for (i, e) in events.into_iter().enumerate() {
            if i + 1 == n {
                s.take_notices();
            }
            assert_eq!(s.apply(minute(i as i64 + 1), e), Next::Wait);
        }
        assert_eq!(s.record().reboot_needed, want);
        let said = s.take_notices();
        assert_eq!(said.len(), notices, "{said:?}");
        assert!(said.iter().all(|n| matches!(n, Notice::RebootNeeded(_))));
        let wait = s.schedule(minute(100), MIN5, 0);
        let line = s.status_line(Activity::Waiting(wait));
        assert!(line.ends_with(status), "{line}");
        let metrics = crate::metrics::render(s.record(), None);
        let flag = if want.is_empty() { 0 } else { 1 };
        assert!(
            metrics.contains(&format!("hail_reboot_required {flag}")),
            "{metrics}"
        );
    }
}

/// What the next hail does after a crash in each phase of a deployment of build 8 over build 7
/// (docs/src/concepts/state.md, "After a crash"): the saved record is what the last hail wrote before the phase, the
/// profile is where the crash left it.
#[test]
fn recovery_after_a_crash_in_each_phase() {
    // The record as saved before the switch: build 7 deployed (generation 3), build 8 under way.
    let mut s = fresh(at('a', 1));
    s.apply(minute(1), polled(at('a', 1), build(7, 'a')));
    assert!(matches!(
        s.apply(minute(2), polled(at('a', 1), build(8, 'b'))),
        Next::Deploy(_)
    ));
    let saved = s.record().clone();
    // The record as saved before the last one: nothing under way.
    let mut before = fresh(at('a', 1));
    before.apply(minute(1), polled(at('a', 1), build(7, 'a')));
    let unsaved = before.record().clone();
    // The record as saved once build 8 failed, before its rollback started.
    let mut judged = State::new(
        saved.clone(),
        Policy::default(),
        JOB,
        PROFILE,
        at('b', 2),
        minute(3),
    );
    let verdict = Verdict {
        result: DeploymentResult::ActivationFailed,
        reason: "activation failed: it broke".into(),
    };
    let failing = Event::Failing {
        build: build(8, 'b'),
        verdict: verdict.clone(),
    };
    judged.apply(minute(4), failing);
    let judged = judged.record().clone();

    /// How the next hail takes build 8 up at its start.
    #[derive(Debug, PartialEq)]
    enum Then {
        /// At its first poll of build 8, it deploys it (again).
        Deploys,
        /// It sees build 8 through: activates it again and checks it.
        Resumes,
        /// It finishes the rollback to build 7 (build 8 is not activated again).
        RollsBack,
    }
    struct Row {
        phase: &'static str,
        record: Record,
        profile: ProfileState,
        then: Then,
    }
    let rows = [
        Row {
            phase: "writing the state before the switch (the old file stays)",
            record: unsaved.clone(),
            profile: at('a', 1),
            then: Then::Deploys,
        },
        Row {
            phase: "realising or switching (the profile not switched yet)",
            record: saved.clone(),
            profile: at('a', 1),
            then: Then::Deploys,
        },
        Row {
            phase: "the activation, after the switch",
            record: saved.clone(),
            profile: at('b', 2),
            then: Then::Resumes,
        },
        Row {
            phase: "the health checks",
            record: saved.clone(),
            profile: at('b', 2),
            then: Then::Resumes,
        },
        Row {
            phase: "saving the verdict, after a failed activation or check",
            record: saved.clone(),
            profile: at('b', 2),
            then: Then::Resumes,
        },
        Row {
            phase: "the rollback, before switching back",
            record: judged.clone(),
            profile: at('b', 2),
            then: Then::RollsBack,
        },
        Row {
            phase: "the rollback's re-activation of build 7, after switching back",
            record: judged.clone(),
            profile: at('a', 1),
            then: Then::RollsBack,
        },
        Row {
            phase: "pruning, or saving the outcome, after a success",
            record: saved.clone(),
            profile: at('b', 2),
            then: Then::Resumes,
        },
    ];
    for row in rows {
        let mut s = State::new(
            row.record,
            Policy::default(),
            JOB,
            PROFILE,
            row.profile.clone(),
            minute(10),
        );
        let then = match s.take_unfinished() {
            None => Then::Deploys,
            Some(u) => {
                assert_eq!(u.build.build_id, 8, "{}", row.phase);
                match u.verdict {
                    None => Then::Resumes,
                    Some(v) => {
                        assert_eq!(v, verdict, "{}", row.phase);
                        Then::RollsBack
                    }
                }
            }
        };
        assert_eq!(then, row.then, "{}", row.phase);
        // Never taken for an operator's change; build 7 stays the one to return to.
        assert_eq!(s.take_notices(), [], "{}", row.phase);
        assert_eq!(
            s.rollback_target().and_then(|t| t.current),
            Some(path('a')),
            "{}",
            row.phase
        );
        match then {
            Then::Deploys => {
                let next = s.apply(minute(11), polled(row.profile, build(8, 'b')));
                assert!(matches!(next, Next::Deploy(_)), "{}", row.phase);
                assert_eq!(s.take_notices(), [], "{}", row.phase);
            }
            Then::Resumes => {}
            Then::RollsBack => {
                // Known-bad already; once back at build 7, it is not deployed again, and the
                // deployment is on record as failed.
                let next = s.apply(minute(11), failed(build(8, 'b'), at('a', 1), true));
                assert_eq!(next, Next::Wait, "{}", row.phase);
                assert_eq!(s.take_notices(), [], "{}", row.phase);
                let next = s.apply(minute(12), polled(at('a', 1), build(8, 'b')));
                assert_eq!(next, Next::Wait, "{}", row.phase);
                assert_eq!(s.record().deploying, None, "{}", row.phase);
                assert_eq!(s.record().rolling_back, None, "{}", row.phase);
                let last = s.record().last_deployment.as_ref().map(|d| d.result);
                assert_eq!(
                    last,
                    Some(DeploymentResult::ActivationFailed),
                    "{}",
                    row.phase
                );
                assert_eq!(s.take_notices(), [], "{}", row.phase);
            }
        }
    }
}

#[test]
fn a_reboot_is_confirmed_at_the_next_start_and_goes_back_once() {
    // System b (build 8) deployed over a (build 7, booted); hail reboots into b.
    let mut s = fresh(at('a', 1));
    s.apply(minute(1), polled(at('a', 1), build(7, 'a')));
    s.apply(minute(2), polled(at('a', 1), build(8, 'b')));
    s.apply(minute(3), deployed(build(8, 'b'), at('b', 2)));
    s.apply(
        minute(4),
        Event::Rebooting {
            from: Some(at('a', 1)),
        },
    );
    let saved = s.record().clone();
    let start = |record: &Record| {
        State::new(
            record.clone(),
            Policy::default(),
            JOB,
            PROFILE,
            at('b', 2),
            minute(5),
        )
    };
    // Booted into b: confirm; booted into anything else: nothing (the reboot did not happen).
    assert_eq!(
        start(&saved).after_reboot(Some(&path('b'))),
        AfterReboot::Confirm(build(8, 'b'))
    );
    let mut other = start(&saved);
    assert_eq!(other.after_reboot(Some(&path('a'))), AfterReboot::Nothing);
    assert_eq!(other.record().rebooting, None);
    // Reached: nothing left to do.
    let mut s = start(&saved);
    s.after_reboot(Some(&path('b')));
    s.apply(minute(6), Event::RebootChecked { reached: true });
    assert_eq!(s.record().rebooting, None);
    // Not reached: a is the good system again, and the reboot back is not confirmed again.
    let mut s = start(&saved);
    s.after_reboot(Some(&path('b')));
    s.apply(minute(6), Event::RebootChecked { reached: false });
    assert_eq!(s.rollback_target().and_then(|t| t.current), Some(path('a')));
    let back = s.record().clone();
    assert!(back.rebooting.as_ref().is_some_and(|r| r.back));
    let mut s = State::new(back, Policy::default(), JOB, PROFILE, at('a', 1), minute(7));
    assert_eq!(s.after_reboot(Some(&path('a'))), AfterReboot::Nothing);
    assert_eq!(s.record().rebooting, None);
}

#[test]
fn the_profile_as_seen_and_the_gates_memory_are_kept() {
    let mut s = fresh(at('a', 3));
    assert_eq!(s.profile(), &at('a', 3));
    s.apply(minute(1), polled(at('a', 3), build(8, 'b')));
    s.apply(minute(2), deployed(build(8, 'b'), at('b', 4)));
    assert_eq!(s.profile(), &at('b', 4));
    // An operator's change is seen at the next poll.
    s.apply(minute(3), polled(at('a', 5), build(8, 'b')));
    assert_eq!(s.profile(), &at('a', 5));

    assert_eq!(s.gate(), &GateMemory::default());
    let memory = GateMemory {
        finished_upto: Some(104),
        evals: vec![105, 104],
        depth: 2,
        verdicts: vec![record::GateVerdict {
            eval: 104,
            build: None,
            refusal: Some("evaluation 104: 3 of 120 builds failed".into()),
        }],
    };
    s.remember_gate(memory.clone());
    assert_eq!(s.gate(), &memory);
    // In the record, and so across a restart.
    let s = State::new(
        s.record().clone(),
        Policy::default(),
        JOB,
        PROFILE,
        at('a', 5),
        minute(4),
    );
    assert_eq!(s.gate(), &memory);
}

#[test]
fn each_deployment_outcome_has_its_counter() {
    use DeploymentResult::*;
    let counts = |c: &record::Counters| {
        [
            c.deployments_deployed,
            c.deployments_activation_failed,
            c.deployments_health_check_failed,
            c.deployments_contact_lost,
            c.deployments_failed,
        ]
    };
    // Two deployments of each outcome (builds 8 and 9 over build 7): its counter says 2, the
    // others 0.
    let outcomes = [
        Deployed,
        ActivationFailed,
        HealthCheckFailed,
        ContactLost,
        Failed,
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let mut s = fresh(at('a', 3));
        for (id, c) in [(8, 'b'), (9, 'c')] {
            s.apply(minute(1), polled(at('a', 3), build(id, c)));
            let result = match outcome {
                Deployed => Ok(()),
                _ => Err(DeployFailure {
                    result: outcome,
                    message: "it broke".into(),
                    reason: "it broke".into(),
                }),
            };
            let profile = if outcome == Deployed {
                at(c, id)
            } else {
                at('a', 3)
            };
            s.apply(
                minute(2),
                Event::Deployed {
                    build: build(id, c),
                    profile,
                    result,
                },
            );
        }
        let mut want = [0; 5];
        want[i] = 2;
        assert_eq!(counts(&s.record().counters), want, "{outcome:?}");
    }
}

/// A record written before hail kept `good` (no such key): what runs is taken as good at the
/// start, unless it is known-bad or a deployment the last hail did not see through.
#[test]
fn a_record_without_a_good_build_takes_what_runs_as_good() {
    let deployed = |c: char, id: u64| Deployed {
        build_id: Some(id),
        store_path: path(c).to_string(),
        generation: Some(3),
        since: minute(0),
    };
    let bad = |c: char| KnownBad {
        build_id: None,
        store_path: path(c).to_string(),
        reason: "x".into(),
        time: minute(0),
    };
    // What, known-bad, deploying, the profile at start, the rollback target.
    type Legacy = (
        &'static str,
        Vec<KnownBad>,
        Option<BuildRef>,
        ProfileState,
        Option<StorePath>,
    );
    #[rustfmt::skip]
    let cases: Vec<Legacy> = vec![
        ("what runs", vec![], None, at('a', 3), Some(path('a'))),
        ("what runs, known-bad", vec![bad('a')], None, at('a', 3), None),
        ("a deployment not seen through", vec![], Some(build_ref(&build(8, 'b'))), at('b', 4), None),
    ];
    for (what, known_bad, deploying, profile, want) in cases {
        let record = Record {
            job: JOB.into(),
            profile: PROFILE.into(),
            deployed: Some(deployed('a', 7)),
            good: None,
            known_bad,
            deploying,
            ..Record::default()
        };
        let s = State::new(record, Policy::default(), JOB, PROFILE, profile, minute(1));
        assert_eq!(s.rollback_target().and_then(|t| t.current), want, "{what}");
    }
}

#[test]
fn requests_as_the_journal_says_them() {
    #[rustfmt::skip]
    let table = [
        (Request::Pause { reason: None }, "pause"),
        (Request::Pause { reason: Some("maintenance".into()) }, "pause (reason: maintenance)"),
        (Request::Resume, "resume"),
        (Request::Retry { build_id: None }, "retry (every known-bad build)"),
        (Request::Retry { build_id: Some(42) }, "retry (build 42)"),
    ];
    for (request, said) in table {
        assert_eq!(request.to_string(), said);
    }
}
