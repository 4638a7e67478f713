//! Whether to reboot now: the reboot policy, whether a reboot is needed and the local time of
//! day. Pure: the clock is passed in.

use std::fmt;
use std::time::Duration;

use jiff::civil::Time;

/// `--reboot`: whether hail reboots a system whose kernel, initrd or modules changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebootPolicy {
    /// Only report that a reboot is needed.
    #[default]
    Never,
    /// Reboot after a successful switch and health check, inside the window if one is given.
    WhenNeeded(Option<RebootWindow>),
}

/// `--reboot-window HH:MM-HH:MM`, local time: from the start (included) to the end (excluded);
/// a window whose end is before its start goes over midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebootWindow {
    pub start: Time,
    pub end: Time,
}

impl RebootWindow {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<RebootWindow, String> {
        let bad = || format!("{s:?}: expected HH:MM-HH:MM (local time), e.g. 02:00-04:30");
        let (start, end) = s.trim().split_once('-').ok_or_else(bad)?;
        let time = |t: &str| -> Result<Time, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            Time::new(h, m, 0, 0).map_err(|_| bad())
        };
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(format!("{s:?}: the window is empty"));
        }
        Ok(RebootWindow { start, end })
    }

    /// How long the window lasts.
    pub fn length(&self) -> Duration {
        let minutes = |t: Time| i64::from(t.hour()) * 60 + i64::from(t.minute());
        Duration::from_secs(
            (minutes(self.end) - minutes(self.start)).rem_euclid(24 * 60) as u64 * 60,
        )
    }

    /// How long from `now` (local time of day) until the window opens next.
    pub fn opens_in(&self, now: Time) -> Duration {
        let seconds = |t: Time| {
            i64::from(t.hour()) * 3600 + i64::from(t.minute()) * 60 + i64::from(t.second())
        };
        Duration::from_secs((seconds(self.start) - seconds(now)).rem_euclid(24 * 3600) as u64)
    }

    /// Whether `now` (local time of day) is inside the window.
    pub fn contains(&self, now: Time) -> bool {
        if self.start < self.end {
            self.start <= now && now < self.end
        } else {
            now >= self.start || now < self.end
        }
    }
}

impl fmt::Display for RebootWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |t: Time| format!("{:02}:{:02}", t.hour(), t.minute());
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// What to do about a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reboot {
    /// Nothing: no reboot is needed, or it may not happen now (see [`State::may_reboot`]).
    ///
    /// [`State::may_reboot`]: crate::state::State::may_reboot
    Nothing,
    /// Needed, but `--reboot never`: only reported.
    Report,
    /// Reboot now.
    Now,
    /// Reboot when the window opens, in `opens_in`.
    InWindow {
        window: RebootWindow,
        opens_in: Duration,
    },
}

/// Whether to reboot now. `needed`: the deployed system's kernel, initrd or modules differ from
/// the booted system's; `allowed`: the last round deployed the build or found it current (switch
/// and health checks passed), and hail is not paused.
pub fn reboot(policy: RebootPolicy, needed: bool, allowed: bool, now: Time) -> Reboot {
    match policy {
        _ if !needed => Reboot::Nothing,
        RebootPolicy::Never => Reboot::Report,
        _ if !allowed => Reboot::Nothing,
        RebootPolicy::WhenNeeded(None) => Reboot::Now,
        RebootPolicy::WhenNeeded(Some(w)) if w.contains(now) => Reboot::Now,
        RebootPolicy::WhenNeeded(Some(window)) => Reboot::InWindow {
            window,
            opens_in: window.opens_in(now),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i8, m: i8) -> Time {
        Time::new(h, m, 0, 0).unwrap()
    }

    fn w(s: &str) -> RebootWindow {
        RebootWindow::parse(s).unwrap()
    }

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    fn when_the_window_opens() {
        let at = |h, m, s| Time::new(h, m, s, 0).unwrap();
        #[rustfmt::skip]
        let table = [
            // window,       now,            opens in (seconds)
            ("02:00-04:00", at(1, 59, 30),  30),
            ("02:00-04:00", at(0, 0, 0),    2 * 3600),
            ("02:00-04:00", at(4, 0, 0),    22 * 3600),
            ("02:00-04:00", at(23, 59, 59), 2 * 3600 + 1),
            // over midnight
            ("23:00-01:30", at(1, 30, 0),   21 * 3600 + 30 * 60),
            ("23:00-01:30", at(22, 15, 10), 44 * 60 + 50),
            ("00:00-00:01", at(23, 59, 0),  60),
        ];
        for (window, now, secs) in table {
            assert_eq!(
                w(window).opens_in(now),
                Duration::from_secs(secs),
                "{window} at {now}"
            );
        }
        assert_eq!(w("02:00-04:30").length(), Duration::from_secs(150 * 60));
        assert_eq!(w("23:00-01:30").length(), Duration::from_secs(150 * 60));
        assert_eq!(w("00:01-00:00").length(), Duration::from_secs(1439 * 60));
    }

    #[test]
    fn windows_parse_and_print() {
        assert_eq!(w("02:00-04:30").to_string(), "02:00-04:30");
        assert_eq!(w(" 23:15 - 1:05 ").to_string(), "23:15-01:05");
        for bad in [
            "",
            "2-4",
            "02:00",
            "24:00-01:00",
            "02:60-03:00",
            "x:00-03:00",
            "03:00-03:00",
        ] {
            assert!(RebootWindow::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inside_the_window() {
        #[rustfmt::skip]
        let table = [
            // window,       now,       inside
            ("02:00-04:00", t(1, 59), false),
            ("02:00-04:00", t(2, 0),  true),
            ("02:00-04:00", t(3, 30), true),
            ("02:00-04:00", t(4, 0),  false),
            ("02:00-04:00", t(23, 0), false),
            // over midnight
            ("23:00-01:30", t(22, 59), false),
            ("23:00-01:30", t(23, 0),  true),
            ("23:00-01:30", t(0, 0),   true),
            ("23:00-01:30", t(1, 29),  true),
            ("23:00-01:30", t(1, 30),  false),
            ("23:00-01:30", t(12, 0),  false),
            ("00:00-00:01", t(0, 0),   true),
            ("00:01-00:00", t(0, 0),   false),
            ("00:01-00:00", t(23, 59), true),
        ];
        for (window, now, inside) in table {
            assert_eq!(w(window).contains(now), inside, "{window} at {now}");
        }
    }

    #[test]
    fn reboot_decisions() {
        let night = RebootPolicy::WhenNeeded(Some(w("02:00-04:00")));
        let any = RebootPolicy::WhenNeeded(None);
        let never = RebootPolicy::Never;
        #[rustfmt::skip]
        let table = [
            // policy, needed, allowed, now,      decision
            (never, false, true,  t(3, 0),  Reboot::Nothing),
            (never, true,  true,  t(3, 0),  Reboot::Report),
            (never, true,  false, t(3, 0),  Reboot::Report),
            (any,   false, true,  t(12, 0), Reboot::Nothing),
            (any,   true,  true,  t(12, 0), Reboot::Now),
            (any,   true,  false, t(12, 0), Reboot::Nothing),
            (night, true,  true,  t(3, 0),  Reboot::Now),
            (night, true,  true,  t(12, 0), Reboot::InWindow { window: w("02:00-04:00"), opens_in: hours(14) }),
            (night, true,  true,  t(1, 0),  Reboot::InWindow { window: w("02:00-04:00"), opens_in: hours(1) }),
            (night, true,  false, t(3, 0),  Reboot::Nothing),
            (night, false, true,  t(3, 0),  Reboot::Nothing),
        ];
        for (policy, needed, allowed, now, want) in table {
            assert_eq!(
                reboot(policy, needed, allowed, now),
                want,
                "{policy:?} {needed} {allowed} {now}"
            );
        }
    }
}
