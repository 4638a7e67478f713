//! How durations and generations read in the status line and the journal.

use std::time::Duration;

/// `90s` → `1m30s`, `300s` → `5m`; under a second in milliseconds (`250ms`).
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 && !d.is_zero() {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if sec > 0 || out.is_empty() {
        out += &format!("{sec}s");
    }
    out
}

/// A size for people: `512 B`, `12 KiB`, `3.5 MiB`, `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 {
        format!("{} {}", value.floor(), UNITS[unit])
    } else {
        format!("{:.1} {}", (value * 10.0).floor() / 10.0, UNITS[unit])
    }
}

/// A generation number, or `?` when the profile is not a numbered generation link.
pub fn generation(generation: Option<u64>) -> String {
    generation.map_or_else(|| "?".into(), |g| g.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(12 * 1024 + 1000), "12 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 600 * 1024), "3.5 MiB");
        assert_eq!(bytes(5 << 40), "5120 GiB");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_secs(0)), "0s");
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(330)), "5m30s");
        assert_eq!(duration(Duration::from_secs(3600)), "1h");
        assert_eq!(duration(Duration::from_millis(32_900)), "32s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn generations() {
        assert_eq!(generation(Some(4)), "4");
        assert_eq!(generation(None), "?");
    }
}
