//! The deployment decision, the poll schedule and which generations to keep: pure functions of
//! what hail knows.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::store_path::StorePath;
use crate::types::Build;

mod reboot;
pub use reboot::{Reboot, RebootPolicy, RebootWindow, reboot};

/// What the operator decided about deploying (the command line), as the decision needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Deploy a build with a lower id than the deployed one (`--allow-downgrade`).
    pub allow_downgrade: bool,
    /// A build is deployed only once Hydra finished it this long ago (`--min-build-age`).
    pub min_build_age: Duration,
    /// This host's own delay within the fleet's rollout window (from `--rollout-spread`).
    pub rollout_delay: Duration,
}

/// What hail knows when Hydra names a build.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// What the profile points at.
    pub current: Option<&'a StorePath>,
    /// The Hydra build id of what is deployed, when known.
    pub deployed_build: Option<u64>,
    pub paused: bool,
    pub now: Timestamp,
    /// When hail first saw the build (its age when Hydra does not say when it finished).
    pub first_seen: Timestamp,
    /// How far Hydra's clock runs ahead of this host's (negative: behind), from its answer's
    /// `Date:`; `None` when it did not say.
    pub hydra_ahead: Option<SignedDuration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The profile already points at the latest build.
    UpToDate,
    /// Realise, switch and activate the latest build.
    Deploy,
    /// The latest build is known to be bad: keep what is deployed, wait for a new one.
    SkipKnownBad,
    /// The latest build is not deployed now.
    Hold(Hold),
}

/// Why a build waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Paused,
    /// Its id is lower than the deployed build's (builds were deleted, or a gate fell back).
    Downgrade {
        deployed: u64,
    },
    /// Younger than `--min-build-age` until then.
    TooYoung {
        until: Timestamp,
    },
    /// This host's rollout slot comes then.
    RolloutSlot {
        until: Timestamp,
    },
}

impl Hold {
    /// When the build becomes eligible by itself, if it will.
    pub fn until(&self) -> Option<Timestamp> {
        match self {
            Hold::TooYoung { until } | Hold::RolloutSlot { until } => Some(*until),
            Hold::Paused | Hold::Downgrade { .. } => None,
        }
    }
}

/// Whether to deploy Hydra's `latest` build. `known_bad` says whether a path must not be deployed.
pub fn decide(
    s: &Situation,
    policy: &Policy,
    known_bad: impl Fn(&StorePath) -> bool,
    latest: &Build,
) -> Decision {
    if known_bad(&latest.path) {
        // Even when the profile still points at it (switching back failed): it never activated.
        return Decision::SkipKnownBad;
    }
    if s.current == Some(&latest.path) {
        return Decision::UpToDate;
    }
    if let Some(deployed) = s
        .deployed_build
        .filter(|d| latest.id < *d && !policy.allow_downgrade)
    {
        return Decision::Hold(Hold::Downgrade { deployed });
    }
    // A build's age is measured on Hydra's clock when its answer said the time: neither a skew
    // between the two clocks nor a jump of this host's clock moves it. Else on this host's
    // clock, where a build finished no later than hail first saw it finished, nor later than
    // now: a Hydra clock ahead, or this host's set back, never holds a build back.
    let ahead = s.hydra_ahead.unwrap_or_default();
    let now = shift(s.now, ahead);
    let first_seen = shift(s.first_seen, ahead);
    let finished = match (latest.finished_at, s.hydra_ahead) {
        (Some(f), Some(_)) => f,
        (Some(f), None) => f.min(first_seen),
        (None, _) => first_seen,
    }
    .min(now);
    // Waits end by this host's clock.
    let here = |t| shift(t, -ahead);
    let old_enough = add(finished, policy.min_build_age);
    if now < old_enough {
        let until = here(old_enough);
        return Decision::Hold(Hold::TooYoung { until });
    }
    let slot = add(old_enough, policy.rollout_delay);
    if now < slot {
        let until = here(slot);
        return Decision::Hold(Hold::RolloutSlot { until });
    }
    if s.paused {
        return Decision::Hold(Hold::Paused);
    }
    Decision::Deploy
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn shift(t: Timestamp, d: SignedDuration) -> Timestamp {
    let bound = if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    };
    t.checked_add(d).unwrap_or(bound)
}

/// This host's delay in a rollout window of `spread`: fixed for a host and a job (from `key`,
/// the machine id or `--rollout-key`), spread evenly over [0, spread) across a fleet.
pub fn rollout_delay(key: &str, job: &str, spread: Duration) -> Duration {
    if spread.is_zero() {
        return Duration::ZERO;
    }
    let h = crate::hash::spread(format!("{key}\n{job}").as_bytes());
    let nanos = spread.as_nanos();
    Duration::from_nanos(((u128::from(h) * nanos) >> 64) as u64)
}

/// What the gate knows of an evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Every build finished and succeeded; this is the job's build in it.
    Passed(Build),
    /// Why it does not pass.
    Refused(String),
}

/// What `--gate evaluation` does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Deploy the job's build of the newest evaluation that passes; the newer ones were passed
    /// over for these reasons.
    Deploy {
        eval: u64,
        build: Build,
        passed_over: Vec<String>,
    },
    /// Read this evaluation's builds to learn whether it passes.
    Fetch(u64),
    /// No evaluation among those looked at passes.
    Nothing(Vec<String>),
}

/// The newest evaluation of `evals` (newest first) that passes the gate. Evaluations newer than
/// `finished_upto` (Hydra's newest evaluation with no unfinished builds) have unfinished builds:
/// they are passed over without reading their builds.
pub fn pick(
    evals: &[u64],
    finished_upto: Option<u64>,
    known: impl Fn(u64) -> Option<Known>,
) -> Pick {
    let mut passed_over = Vec::new();
    for &eval in evals {
        if finished_upto.is_none_or(|f| eval > f) {
            passed_over.push(format!("evaluation {eval} has unfinished builds"));
            continue;
        }
        match known(eval) {
            None => return Pick::Fetch(eval),
            Some(Known::Passed(build)) => {
                return Pick::Deploy {
                    eval,
                    build,
                    passed_over,
                };
            }
            Some(Known::Refused(why)) => passed_over.push(why),
        }
    }
    Pick::Nothing(passed_over)
}

/// The generations to delete so that the newest `keep` remain (0 keeps all), never `current` nor
/// `rollback_to` (the one a rollback would return to).
pub fn generations_to_delete(
    generations: &[u64],
    keep: usize,
    current: Option<u64>,
    rollback_to: Option<u64>,
) -> Vec<u64> {
    if keep == 0 {
        return Vec::new();
    }
    let mut newest_first = generations.to_vec();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    newest_first.dedup();
    newest_first
        .into_iter()
        .skip(keep)
        .filter(|g| Some(*g) != current && Some(*g) != rollback_to)
        .collect()
}

/// The first retry after a failure waits this long (or the poll period, if shorter).
pub const BACKOFF_START: Duration = Duration::from_secs(30);
/// Retries never wait longer than this (or the poll period, if longer).
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// How long to wait before the next poll. After `failures` failures in a row the wait starts at
/// min(period, 30 s) and doubles, up to max(period, 5 min): never back to back, never more than
/// the poll period's worth of extra delay once things recover.
pub fn next_wait(period: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return period;
    }
    let start = period.min(BACKOFF_START);
    let cap = period.max(BACKOFF_CAP);
    let factor = 1u32
        .checked_shl(failures - 1)
        .unwrap_or(u32::MAX)
        .min(1 << 16);
    start.saturating_mul(factor).min(cap)
}

/// Adds up to 10 % to `wait`, from `entropy` (so that many hosts polling one Hydra spread out).
pub fn with_jitter(wait: Duration, entropy: u64) -> Duration {
    wait + jitter(wait, entropy)
}

/// Up to 10 % of `span`, from `entropy`.
pub fn jitter(span: Duration, entropy: u64) -> Duration {
    let nanos = (span / 10).as_nanos() as u64;
    if nanos == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(entropy % nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(c: char) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-p", c.to_string().repeat(32))).unwrap()
    }

    fn build(c: char) -> Build {
        Build::new(1, path(c))
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn at(current: Option<&StorePath>) -> Situation<'_> {
        Situation {
            current,
            deployed_build: None,
            paused: false,
            now: t(0),
            first_seen: t(0),
            hydra_ahead: None,
        }
    }

    fn decide(current: Option<&StorePath>, bad: Option<&StorePath>, latest: &Build) -> Decision {
        super::decide(&at(current), &Policy::default(), |p| Some(p) == bad, latest)
    }

    #[test]
    fn decisions() {
        let none = None;
        assert_eq!(decide(None, none, &build('a')), Decision::Deploy);
        assert_eq!(
            decide(Some(&path('a')), none, &build('a')),
            Decision::UpToDate
        );
        assert_eq!(
            decide(Some(&path('b')), none, &build('a')),
            Decision::Deploy
        );
        let a = path('a');
        let bad = Some(&a);
        assert_eq!(
            decide(Some(&path('b')), bad, &build('a')),
            Decision::SkipKnownBad
        );
        assert_eq!(decide(None, bad, &build('a')), Decision::SkipKnownBad);
        // A newer build is deployed even though an older one failed.
        assert_eq!(decide(Some(&path('b')), bad, &build('c')), Decision::Deploy);
        // A profile left at the failed build (switching back failed) is not "up to date".
        assert_eq!(
            decide(Some(&path('a')), bad, &build('a')),
            Decision::SkipKnownBad
        );
    }

    #[test]
    fn pause_holds_back_a_deployment_only() {
        fn paused(current: Option<&StorePath>, latest: &Build) -> Decision {
            let s = Situation {
                paused: true,
                ..at(current)
            };
            super::decide(&s, &Policy::default(), |p| *p == path('a'), latest)
        }
        let b = path('b');
        assert_eq!(paused(None, &build('b')), Decision::Hold(Hold::Paused));
        assert_eq!(paused(Some(&b), &build('b')), Decision::UpToDate);
        assert_eq!(paused(Some(&b), &build('a')), Decision::SkipKnownBad);
    }

    #[test]
    fn no_downgrades_unless_allowed() {
        let a = path('a');
        let s = Situation {
            deployed_build: Some(10),
            ..at(Some(&a))
        };
        let older = Build::new(9, path('b'));
        let newer = Build::new(11, path('b'));
        let never = |_: &StorePath| false;
        let policy = Policy::default();
        assert_eq!(
            super::decide(&s, &policy, never, &older),
            Decision::Hold(Hold::Downgrade { deployed: 10 })
        );
        assert_eq!(super::decide(&s, &policy, never, &newer), Decision::Deploy);
        // The same id is no downgrade: only a lower one is.
        let same = Build::new(10, path('b'));
        assert_eq!(super::decide(&s, &policy, never, &same), Decision::Deploy);
        let allow = Policy {
            allow_downgrade: true,
            ..Policy::default()
        };
        assert_eq!(super::decide(&s, &allow, never, &older), Decision::Deploy);
    }

    #[test]
    fn age_and_rollout_slot_with_an_injected_clock() {
        let hour = Duration::from_secs(3600);
        let policy = Policy {
            min_build_age: hour,
            rollout_delay: Duration::from_secs(600),
            ..Policy::default()
        };
        let b = Build {
            finished_at: Some(t(0)),
            ..build('b')
        };
        let never = |_: &StorePath| false;
        let when = |now| Situation { now, ..at(None) };
        let cases = [
            (t(0), Decision::Hold(Hold::TooYoung { until: t(3600) })),
            (t(3599), Decision::Hold(Hold::TooYoung { until: t(3600) })),
            (
                t(3600),
                Decision::Hold(Hold::RolloutSlot { until: t(4200) }),
            ),
            (
                t(4199),
                Decision::Hold(Hold::RolloutSlot { until: t(4200) }),
            ),
            (t(4200), Decision::Deploy),
        ];
        for (now, want) in cases {
            assert_eq!(super::decide(&when(now), &policy, never, &b), want, "{now}");
        }
        // Without Hydra's stoptime, the age counts from when hail first saw the build.
        let unknown = build('b');
        let s = Situation {
            first_seen: t(100),
            ..when(t(3650))
        };
        assert_eq!(
            super::decide(&s, &policy, never, &unknown),
            Decision::Hold(Hold::TooYoung { until: t(3700) })
        );
    }

    #[test]
    fn hydras_clock_ahead_never_holds_a_build_back() {
        let never = |_: &StorePath| false;
        let ahead = |seconds| Build {
            finished_at: Some(t(seconds)),
            ..build('b')
        };
        // No minimum age: deployed at once, however far Hydra's clock runs ahead.
        for seconds in [1, 3600, 86400 * 365] {
            assert_eq!(
                super::decide(&at(None), &Policy::default(), never, &ahead(seconds)),
                Decision::Deploy,
                "{seconds}"
            );
        }
        // A minimum age counts from when hail first saw the build, not from Hydra's future.
        let hour = Policy {
            min_build_age: Duration::from_secs(3600),
            ..Policy::default()
        };
        assert_eq!(
            super::decide(&at(None), &hour, never, &ahead(3600)),
            Decision::Hold(Hold::TooYoung { until: t(3600) })
        );
        // Behind: Hydra's stoptime counts.
        let s = Situation {
            now: t(100),
            first_seen: t(100),
            ..at(None)
        };
        assert_eq!(
            super::decide(&s, &hour, never, &ahead(-7200)),
            Decision::Deploy
        );
    }

    /// The true time is T = t(0). The build finished at T - 10m by Hydra's clock, which may be
    /// skewed; this host's clock may have been set forward or back since hail first saw the
    /// build (at T - 5m, by the host's clock then). With Hydra's `Date:`, the waits end when they
    /// should, whatever the two clocks say; without it, time never holds a build back when no
    /// age is asked for, and a clock set back delays a wait by no more than the age asked for.
    #[test]
    fn clock_skew_and_jumps_neither_fire_early_nor_stall() {
        let min = |m: i64| m * 60;
        let hour = Duration::from_secs(3600);
        let never = |_: &StorePath| false;
        // (Hydra's clock, this host's clock) ahead of true time, Hydra's Date: known?, minimum
        // age, rollout delay → how long from now the build waits (0: deployed now).
        let cases: [(i64, i64, bool, Duration, Duration, i64); 12] = [
            // Both clocks right.
            (0, 0, true, hour, Duration::ZERO, min(50)),
            (0, 0, false, hour, Duration::ZERO, min(50)),
            // Hydra's clock an hour ahead or behind.
            (min(60), 0, true, hour, Duration::ZERO, min(50)),
            (-min(60), 0, true, hour, Duration::ZERO, min(50)),
            (min(60), 0, false, hour, Duration::ZERO, min(55)),
            // This host's clock set five hours forward, or back, since the build was seen.
            (0, min(300), true, hour, Duration::ZERO, min(50)),
            (0, -min(300), true, hour, Duration::ZERO, min(50)),
            (0, -min(300), false, hour, Duration::ZERO, min(60)),
            // The rollout slot is measured the same way.
            (0, min(300), true, Duration::ZERO, hour, min(50)),
            (0, -min(300), true, Duration::ZERO, hour, min(50)),
            // No minimum age and no slot: never held, whatever the clocks say.
            (
                min(600),
                -min(300),
                false,
                Duration::ZERO,
                Duration::ZERO,
                0,
            ),
            (-min(600), min(300), true, Duration::ZERO, Duration::ZERO, 0),
        ];
        for (i, (hydra, host, date, age, delay, want)) in cases.into_iter().enumerate() {
            let b = Build {
                finished_at: Some(t(hydra - min(10))),
                ..build('b')
            };
            let s = Situation {
                now: t(host),
                first_seen: t(-min(5)),
                hydra_ahead: date.then(|| SignedDuration::from_secs(hydra - host)),
                ..at(None)
            };
            let policy = Policy {
                min_build_age: age,
                rollout_delay: delay,
                ..Policy::default()
            };
            let waits = match super::decide(&s, &policy, never, &b) {
                Decision::Deploy => 0,
                Decision::Hold(h) => h.until().unwrap().as_second() - s.now.as_second(),
                other => panic!("case {i}: {other:?}"),
            };
            assert_eq!(waits, want, "case {i}");
        }
    }

    #[test]
    fn rollout_delays_are_fixed_per_host_and_spread_over_the_window() {
        let window = Duration::from_secs(3600);
        let a = rollout_delay("machine-a", "http://h/job/p/j/x", window);
        assert_eq!(a, rollout_delay("machine-a", "http://h/job/p/j/x", window));
        assert_ne!(a, rollout_delay("machine-a", "http://h/job/p/j/y", window));
        assert_eq!(
            rollout_delay("machine-a", "x", Duration::ZERO),
            Duration::ZERO
        );
        // 1000 hosts: every delay inside the window, and each tenth of it holds some.
        let mut tenths = [0; 10];
        for i in 0..1000 {
            let d = rollout_delay(&format!("machine-{i}"), "job", window);
            assert!(d < window);
            tenths[(d.as_secs() / 360) as usize] += 1;
        }
        assert!(tenths.iter().all(|n| (50..=150).contains(n)), "{tenths:?}");
    }

    #[test]
    fn the_gate_picks_the_newest_evaluation_that_passed() {
        let b = |id| Build::new(id, path('b'));
        let known = |eval| match eval {
            104 => Some(Known::Refused(
                "evaluation 104: 3 of 120 builds failed".into(),
            )),
            103 => Some(Known::Passed(b(48213))),
            102 => Some(Known::Passed(b(48100))),
            _ => None,
        };
        // 105 is newer than the newest finished evaluation: passed over unread.
        assert_eq!(
            pick(&[105, 104, 103, 102], Some(104), known),
            Pick::Deploy {
                eval: 103,
                build: b(48213),
                passed_over: vec![
                    "evaluation 105 has unfinished builds".into(),
                    "evaluation 104: 3 of 120 builds failed".into()
                ],
            }
        );
        // Unknown and finished: read it first.
        assert_eq!(pick(&[106, 105], Some(106), known), Pick::Fetch(106));
        // The look-back ends at the evaluations given (--gate-depth).
        assert_eq!(
            pick(&[105, 104], Some(105), |e| (e == 104)
                .then(|| known(104).unwrap())),
            Pick::Fetch(105)
        );
        assert_eq!(
            pick(&[104], Some(104), known),
            Pick::Nothing(vec!["evaluation 104: 3 of 120 builds failed".into()])
        );
        assert_eq!(
            pick(&[2, 1], None, known),
            Pick::Nothing(vec![
                "evaluation 2 has unfinished builds".into(),
                "evaluation 1 has unfinished builds".into()
            ])
        );
    }

    #[test]
    fn pruning_keeps_the_newest_the_current_and_the_rollback_target() {
        let gens = [1, 2, 3, 4, 5, 6];
        assert_eq!(generations_to_delete(&gens, 3, Some(6), Some(5)), [3, 2, 1]);
        assert_eq!(generations_to_delete(&gens, 0, Some(6), Some(5)), [0u64; 0]);
        // An operator's rollback to generation 2: it and its predecessor stay.
        assert_eq!(generations_to_delete(&gens, 2, Some(2), Some(1)), [4, 3]);
        assert_eq!(generations_to_delete(&gens, 10, Some(6), None), [0u64; 0]);
        assert_eq!(generations_to_delete(&[7, 3, 5], 1, Some(7), None), [5, 3]);
        assert_eq!(generations_to_delete(&[], 3, None, None), [0u64; 0]);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let five_min = Duration::from_secs(300);
        let waits: Vec<u64> = (0..8).map(|f| next_wait(five_min, f).as_secs()).collect();
        assert_eq!(waits, [300, 30, 60, 120, 240, 300, 300, 300]);
        let hour = Duration::from_secs(3600);
        assert_eq!(next_wait(hour, 1).as_secs(), 30);
        assert_eq!(next_wait(hour, 8).as_secs(), 3600);
        let second = Duration::from_secs(1);
        let waits: Vec<u64> = (0..5).map(|f| next_wait(second, f).as_secs()).collect();
        assert_eq!(waits, [1, 1, 2, 4, 8]);
        assert_eq!(next_wait(second, 40).as_secs(), 300);
        assert_eq!(next_wait(second, u32::MAX).as_secs(), 300);
    }

    #[test]
    fn jitter_is_small() {
        let w = Duration::from_secs(100);
        for e in [0, 1, 12_345_678_901, u64::MAX] {
            let j = with_jitter(w, e);
            assert!(j >= w && j < w + Duration::from_secs(10), "{j:?}");
        }
        assert_eq!(with_jitter(Duration::ZERO, 7), Duration::ZERO);
    }

    /// The entropy picks a point in the first tenth of the span, wrapping around: hosts with
    /// random entropy spread evenly over it.
    #[test]
    fn jitter_spreads_over_a_tenth_of_the_span() {
        let second = Duration::from_secs(1);
        let tenth = 100_000_000; // nanoseconds
        #[rustfmt::skip]
        let table = [
            // span,   entropy,        jitter (ns)
            (second,   0,              0),
            (second,   1,              1),
            (second,   tenth - 1,      tenth - 1),
            (second,   tenth,          0),
            (second,   tenth + 7,      7),
            (second,   u64::MAX,       u64::MAX % tenth),
            (second * 10, tenth,       tenth),
        ];
        for (span, entropy, want) in table {
            assert_eq!(
                jitter(span, entropy),
                Duration::from_nanos(want),
                "{span:?} {entropy}"
            );
        }
    }
}
