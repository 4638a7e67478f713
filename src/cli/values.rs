//! Values on the command line: periods, durations, profile names.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The original's default: five minutes.
pub const DEFAULT_POLL_PERIOD: Duration = Duration::from_secs(300);

/// Where profiles given by name live, as with `nix-env --profile NAME`.
pub const PROFILES_DIR: &str = "/nix/var/nix/profiles";

/// `NAME` → `/nix/var/nix/profiles/NAME`; an absolute path as is; anything else is refused.
pub fn profile_path(arg: &str) -> Option<PathBuf> {
    if arg.starts_with('/') {
        let p = Path::new(arg);
        let clean = p.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        return (clean && p.file_name().is_some()).then(|| p.to_path_buf());
    }
    let ok = !arg.is_empty()
        && !arg.starts_with('.')
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    ok.then(|| Path::new(PROFILES_DIR).join(arg))
}

/// A poll period: a bare number is minutes (the original's unit), or a number with s, m or h.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        let minutes: u64 = s.parse().map_err(|_| format!("{s:?} is too large"))?;
        return parse_duration(&format!("{minutes}m"));
    }
    parse_duration(s)
}

/// The longest period or timeout accepted: larger ones are surely mistakes (and would overflow
/// a deadline).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration with a unit: `30s`, `5m`, `1h`, `250ms`; at most a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_unbounded(s)?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is too large (at most a year)"));
    }
    Ok(d)
}

fn parse_duration_unbounded(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with a unit, such as 30s, 5m or 1h"))?;
    let secs_per = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m or h)")),
    };
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_number_is_minutes() {
        assert_eq!(parse_period("5"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_period("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn units() {
        assert_eq!(parse_period("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_period("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_period("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        let refused = |r: Result<Duration, String>, why: &str| {
            let e = r.unwrap_err();
            assert!(e.contains(why), "{e:?} does not say {why:?}");
        };
        refused(parse_period("5x"), "unknown unit \"x\"");
        refused(parse_period(""), "expected a number with a unit");
        refused(parse_period("-1"), "expected a number with a unit");
        refused(parse_period("99999999999999999999"), "too large");
        refused(parse_period("999999999999999999m"), "too large");
        refused(parse_duration("5000000000000000h"), "too large");
        refused(parse_period("527041"), "at most a year");
        assert_eq!(parse_duration("8784h"), Ok(MAX_DURATION));
    }

    #[test]
    fn profile_names_and_paths() {
        assert_eq!(
            profile_path("web"),
            Some(PathBuf::from("/nix/var/nix/profiles/web"))
        );
        assert_eq!(
            profile_path("/srv/p/web"),
            Some(PathBuf::from("/srv/p/web"))
        );
        assert_eq!(profile_path("../etc"), None);
        assert_eq!(profile_path("a/b"), None);
        assert_eq!(profile_path(""), None);
        assert_eq!(profile_path("/srv/../etc"), None);
        assert_eq!(profile_path("/"), None);
    }
}
