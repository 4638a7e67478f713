//! What `hail status` shows, built from a state file and the profile as they are now: the
//! `--json` schema (docs/src/reference/status-json.md) and its text forms. Pure: no I/O here.

use jiff::Timestamp;
use serde::Serialize;

use crate::format;
use crate::record::{BuildRef, DeploymentRecord, KnownBad, Poll, Record};
use crate::types::ProfileState;

/// One instance's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `NAME` of `hail@NAME`, when the instance was named so.
    pub instance: Option<String>,
    pub state_dir: String,
    /// Whether an agent runs on this state now, and its pid.
    pub running: bool,
    pub pid: Option<u32>,
    /// `false` for an instance that never ran (no state file yet).
    pub started: bool,
    pub job: Option<String>,
    pub profile: Option<String>,
    pub deployed: Option<DeployedNow>,
    /// What Hydra offered at the last poll that got an answer.
    pub latest: Option<BuildRef>,
    pub last_poll: Option<Poll>,
    pub next_poll: Option<Timestamp>,
    pub paused: bool,
    pub pause_reason: Option<String>,
    pub known_bad: Vec<KnownBad>,
    pub last_deployment: Option<DeploymentRecord>,
    /// The last deployments, newest first.
    pub history: Vec<DeploymentRecord>,
    pub consecutive_failures: u32,
    /// `--system`: what differs from the booted system; empty when no reboot is needed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reboot_needed: Vec<String>,
}

/// What the profile points at now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployedNow {
    /// `null` when hail does not know the build (the profile was moved by hand since hail last
    /// looked, or hail has not polled yet).
    pub build_id: Option<u64>,
    pub store_path: String,
    pub generation: Option<u64>,
    pub since: Option<Timestamp>,
}

/// Where the agent is, as `hail status` finds it.
#[derive(Debug, Clone)]
pub struct Found {
    pub instance: Option<String>,
    pub state_dir: String,
    pub pid: Option<u32>,
    pub record: Option<Record>,
    /// The profile as read now (`None` when it could not be read or is not known).
    pub profile: Option<ProfileState>,
}

pub fn report(found: Found) -> Report {
    let Found {
        instance,
        state_dir,
        pid,
        record,
        profile,
    } = found;
    let started = record.is_some();
    let r = record.unwrap_or_default();
    let deployed = match (&profile, &r.deployed) {
        (Some(ProfileState { current: None, .. }), _) => None,
        (
            Some(ProfileState {
                current: Some(p),
                generation,
            }),
            d,
        ) => {
            let known = d.as_ref().filter(|d| d.store_path == p.as_str());
            Some(DeployedNow {
                build_id: known.and_then(|d| d.build_id),
                store_path: p.to_string(),
                generation: *generation,
                since: known.map(|d| d.since),
            })
        }
        (None, d) => d.as_ref().map(|d| DeployedNow {
            build_id: d.build_id,
            store_path: d.store_path.clone(),
            generation: d.generation,
            since: Some(d.since),
        }),
    };
    let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
    Report {
        instance,
        state_dir,
        running: pid.is_some(),
        pid,
        started,
        job: non_empty(r.job),
        profile: non_empty(r.profile),
        deployed,
        latest: r.latest,
        last_poll: r.last_poll,
        next_poll: r.next_poll.filter(|_| pid.is_some()),
        paused: r.paused,
        pause_reason: r.pause_reason,
        known_bad: r.known_bad,
        last_deployment: r.last_deployment,
        history: r.history,
        consecutive_failures: r.consecutive_failures,
        reboot_needed: r.reboot_needed,
    }
}

/// `2026-11-29 22:40:05 UTC (3m ago)`.
fn when(t: Timestamp, now: Timestamp) -> String {
    // Whole seconds, truncated: a time just past must not read as "in 1s".
    let t = Timestamp::from_second(t.as_second()).unwrap_or(t);
    let secs = now.as_second() - t.as_second();
    let d = std::time::Duration::from_secs(secs.unsigned_abs());
    let rel = if secs >= 0 {
        format!("{} ago", format::duration(d))
    } else {
        format!("in {}", format::duration(d))
    };
    format!("{} ({rel})", t.strftime("%Y-%m-%d %H:%M:%S UTC"))
}

fn build(id: Option<u64>) -> String {
    id.map_or_else(|| "an unknown build".to_owned(), |id| format!("build {id}"))
}

/// The human-readable form of one instance.
pub fn text(r: &Report, now: Timestamp) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out += &format!("{k:<12}{v}\n");
    let name = r
        .instance
        .as_ref()
        .map_or_else(|| r.state_dir.clone(), |n| format!("hail@{n}"));
    let agent = match (r.pid, r.started) {
        (Some(pid), _) => format!("running (pid {pid})"),
        (None, true) => "not running".to_owned(),
        (None, false) => "never ran (no state yet)".to_owned(),
    };
    line("instance", format!("{name}: {agent}"));
    if let Some(j) = &r.job {
        line("job", j.clone());
    }
    if let Some(p) = &r.profile {
        line("profile", p.clone());
    }
    line(
        "deployed",
        match &r.deployed {
            None => "nothing".to_owned(),
            Some(d) => {
                let since = d.since.map(|s| format!(", since {}", when(s, now)));
                format!(
                    "{} ({}), generation {}{}",
                    build(d.build_id),
                    d.store_path,
                    format::generation(d.generation),
                    since.unwrap_or_default()
                )
            }
        },
    );
    if let Some(l) = &r.latest {
        line("latest", format!("build {} ({})", l.build_id, l.store_path));
    }
    if let Some(p) = &r.last_poll {
        let outcome = match &p.error {
            None => "ok".to_owned(),
            Some(e) => format!("failed: {e}"),
        };
        line("last poll", format!("{}: {outcome}", when(p.time, now)));
    }
    if let Some(t) = r.next_poll {
        line("next poll", when(t, now));
    }
    if !r.reboot_needed.is_empty() {
        line("reboot", format!("needed ({})", r.reboot_needed.join(", ")));
    }
    if r.paused {
        let why = r.pause_reason.as_deref().map(|w| format!(": {w}"));
        line("paused", format!("yes{}", why.unwrap_or_default()));
    }
    for k in &r.known_bad {
        line(
            "known bad",
            format!(
                "{} ({}): {}, {}",
                build(k.build_id),
                k.store_path,
                k.reason,
                when(k.time, now)
            ),
        );
    }
    for (i, h) in r.history.iter().take(5).enumerate() {
        let error = h.error.as_deref().map(|e| format!(": {e}"));
        line(
            if i == 0 { "history" } else { "" },
            format!(
                "{} build {} → generation {}: {}{}",
                h.time.strftime("%Y-%m-%d %H:%M:%S"),
                h.build_id,
                format::generation(h.generation),
                h.result.label(),
                error.unwrap_or_default()
            ),
        );
    }
    out
}

/// One line per instance, for `hail status` with no instance named.
pub fn table(reports: &[Report], now: Timestamp) -> String {
    let mut rows = vec![[
        "INSTANCE".to_owned(),
        "AGENT".to_owned(),
        "DEPLOYED".to_owned(),
        "LATEST".to_owned(),
        "LAST POLL".to_owned(),
        "NOTE".to_owned(),
    ]];
    for r in reports {
        let id = |b: Option<u64>| b.map_or_else(|| "-".to_owned(), |b| b.to_string());
        let poll = r.last_poll.as_ref().map_or_else(
            || "-".to_owned(),
            |p| {
                let ago = now.as_second() - p.time.as_second();
                let ago = format::duration(std::time::Duration::from_secs(ago.unsigned_abs()));
                format!("{ago} ago {}", if p.ok { "ok" } else { "failed" })
            },
        );
        let note = if r.paused {
            "paused".to_owned()
        } else if !r.known_bad.is_empty() {
            format!("{} known bad", r.known_bad.len())
        } else {
            String::new()
        };
        rows.push([
            r.instance.clone().unwrap_or_else(|| r.state_dir.clone()),
            if r.running { "running" } else { "stopped" }.to_owned(),
            r.deployed
                .as_ref()
                .map_or_else(|| "-".to_owned(), |d| id(d.build_id)),
            id(r.latest.as_ref().map(|l| l.build_id)),
            poll,
            note,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned() + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Deployed;
    use crate::store_path::StorePath;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-p";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-p";

    fn record() -> Record {
        Record {
            job: "http://h/job/p/j/x".into(),
            profile: "/nix/var/nix/profiles/web".into(),
            deployed: Some(Deployed {
                build_id: Some(7),
                store_path: A.into(),
                generation: Some(3),
                since: t(0),
            }),
            ..Record::default()
        }
    }

    fn found(profile: Option<&str>, pid: Option<u32>) -> Found {
        Found {
            instance: Some("web".into()),
            state_dir: "/var/lib/hail/web".into(),
            pid,
            record: Some(record()),
            profile: profile.map(|p| ProfileState {
                current: Some(StorePath::parse(p).unwrap()),
                generation: Some(3),
            }),
        }
    }

    #[test]
    fn the_profile_as_it_is_now_wins() {
        let r = report(found(Some(A), Some(42)));
        assert_eq!(r.deployed.as_ref().unwrap().build_id, Some(7));
        assert!(r.running);
        // Moved by hand since the agent last looked: the build is not claimed.
        let r = report(found(Some(B), None));
        let d = r.deployed.unwrap();
        assert_eq!((d.build_id, d.store_path.as_str()), (None, B));
        assert!(!r.running);
        // The profile unreadable: what the state says.
        let r = report(found(None, None));
        assert_eq!(r.deployed.unwrap().build_id, Some(7));
    }

    #[test]
    fn a_never_started_instance() {
        let r = report(Found {
            record: None,
            profile: None,
            ..found(None, None)
        });
        assert!(!r.started && r.deployed.is_none() && r.job.is_none());
        assert!(text(&r, t(0)).contains("never ran"), "{}", text(&r, t(0)));
    }

    #[test]
    fn text_and_table() {
        let r = report(found(Some(A), Some(42)));
        let s = text(&r, t(180));
        assert!(s.contains("hail@web: running (pid 42)"), "{s}");
        assert!(s.contains("build 7 (/nix/store/aaaa"), "{s}");
        assert!(s.contains("(3m ago)"), "{s}");
        let table = table(&[r], t(180));
        assert!(table.starts_with("INSTANCE"), "{table}");
        assert!(
            table.lines().nth(1).unwrap().starts_with("web  "),
            "{table}"
        );
    }
}
