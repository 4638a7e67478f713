//! The deployment decision, the poll schedule and which generations to keep: pure functions of
//! what hail knows.

use std::time::Duration;

use crate::store_path::StorePath;
use crate::types::Build;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The profile already points at the latest build.
    UpToDate,
    /// Realise, switch and activate the latest build.
    Deploy,
    /// The latest build is known to be bad: keep what is deployed, wait for a new one.
    SkipKnownBad,
    /// The latest build would be deployed, but hail is paused.
    Paused,
}

/// `current`: what the profile points at; `known_bad`: whether a path must not be deployed;
/// `latest`: Hydra's latest successful build.
pub fn decide(
    current: Option<&StorePath>,
    known_bad: impl Fn(&StorePath) -> bool,
    paused: bool,
    latest: &Build,
) -> Decision {
    if known_bad(&latest.path) {
        // Even when the profile still points at it (switching back failed): it never activated.
        Decision::SkipKnownBad
    } else if current == Some(&latest.path) {
        Decision::UpToDate
    } else if paused {
        Decision::Paused
    } else {
        Decision::Deploy
    }
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
    let max_extra = wait / 10;
    let nanos = max_extra.as_nanos() as u64;
    if nanos == 0 {
        wait
    } else {
        wait + Duration::from_nanos(entropy % nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(c: char) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-p", c.to_string().repeat(32))).unwrap()
    }

    fn build(c: char) -> Build {
        Build {
            id: 1,
            path: path(c),
        }
    }

    fn decide(current: Option<&StorePath>, bad: Option<&StorePath>, latest: &Build) -> Decision {
        super::decide(current, |p| Some(p) == bad, false, latest)
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
            super::decide(current, |p| *p == path('a'), true, latest)
        }
        let b = path('b');
        assert_eq!(paused(None, &build('b')), Decision::Paused);
        assert_eq!(paused(Some(&b), &build('b')), Decision::UpToDate);
        assert_eq!(paused(Some(&b), &build('a')), Decision::SkipKnownBad);
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
}
