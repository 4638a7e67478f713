//! Prometheus metrics in the text exposition format, for node_exporter's textfile collector:
//! built from the record (so counters survive restarts) and written atomically; nothing listens.
//! The encoding (escaping, `# HELP`/`# TYPE`) is the `prometheus` crate's.
//!
//! Under systemd every series carries `name="NAME"` of `hail@NAME`: node_exporter serves all
//! files of its textfile directory as one, so the instances of one host must differ by a label
//! (two identical series are an error there, and one of them is dropped).

use std::collections::HashMap;
use std::path::Path;

use prometheus::{Encoder, Gauge, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::record::Record;
use crate::state_file::{self, StateError};

/// The label every series carries: `NAME` of `hail@NAME` (see the module's documentation).
pub const INSTANCE_LABEL: &str = "name";

/// The metrics of one agent, as text; `instance` is `NAME` of the `hail@NAME` it runs as.
pub fn render(record: &Record, instance: Option<&str>) -> String {
    let labels = instance.map(|i| HashMap::from([(INSTANCE_LABEL.to_string(), i.to_string())]));
    let registry = Registry::new_custom(None, labels).expect("no prefix, valid labels");
    let add = |c: Box<dyn prometheus::core::Collector>| {
        registry.register(c).expect("metric names are unique");
    };
    let gauge = |name: &str, help: &str, value: i64| {
        let g = IntGauge::new(name, help).expect("a valid metric name");
        g.set(value);
        Box::new(g)
    };
    let seconds = |name: &str, help: &str, t: Option<jiff::Timestamp>| {
        t.map(|t| {
            let g = Gauge::new(name, help).expect("a valid metric name");
            g.set(t.as_millisecond() as f64 / 1000.0);
            Box::new(g)
        })
    };

    let info = IntGauge::with_opts(
        Opts::new(
            "hail_build_info",
            "hail's version, the job and the profile; always 1",
        )
        .const_label("version", env!("CARGO_PKG_VERSION"))
        .const_label("job", &record.job)
        .const_label("profile", &record.profile),
    )
    .expect("valid labels");
    info.set(1);
    add(Box::new(info));

    if let Some(d) = &record.deployed {
        if let Some(id) = d.build_id {
            add(gauge(
                "hail_deployed_build_id",
                "The Hydra build id the profile points at",
                id as i64,
            ));
        }
        if let Some(g) = d.generation {
            add(gauge(
                "hail_deployed_generation",
                "The profile generation deployed",
                g as i64,
            ));
        }
    }
    if let Some(l) = &record.latest {
        add(gauge(
            "hail_latest_build_id",
            "The build id Hydra offered at the last poll that got an answer",
            l.build_id as i64,
        ));
    }
    let c = &record.counters;
    for g in [
        seconds(
            "hail_last_poll_timestamp_seconds",
            "When hail last polled Hydra",
            record.last_poll.as_ref().map(|p| p.time),
        ),
        seconds(
            "hail_last_poll_success_timestamp_seconds",
            "When a poll last got a usable answer",
            c.last_poll_success,
        ),
        seconds(
            "hail_last_deployment_success_timestamp_seconds",
            "When a deployment last succeeded",
            c.last_deployment_success,
        ),
    ]
    .into_iter()
    .flatten()
    {
        add(g);
    }

    let polls = IntCounterVec::new(
        Opts::new("hail_polls_total", "Polls of Hydra, by result"),
        &["result"],
    )
    .expect("valid labels");
    polls.with_label_values(&["ok"]).inc_by(c.polls_ok);
    polls.with_label_values(&["failed"]).inc_by(c.polls_failed);
    add(Box::new(polls));
    let deployments = IntCounterVec::new(
        Opts::new("hail_deployments_total", "Deployments, by result"),
        &["result"],
    )
    .expect("valid labels");
    for (label, n) in [
        ("deployed", c.deployments_deployed),
        ("activation-failed", c.deployments_activation_failed),
        ("health-check-failed", c.deployments_health_check_failed),
        ("contact-lost", c.deployments_contact_lost),
        ("failed", c.deployments_failed),
    ] {
        deployments.with_label_values(&[label]).inc_by(n);
    }
    add(Box::new(deployments));

    add(gauge(
        "hail_consecutive_failures",
        "Failed polls and deployments in a row",
        record.consecutive_failures.into(),
    ));
    add(gauge(
        "hail_paused",
        "1 while hail is paused",
        record.paused.into(),
    ));
    add(gauge(
        "hail_reboot_required",
        "1 when the deployed system's kernel, initrd or modules differ from the booted system's",
        (!record.reboot_needed.is_empty()).into(),
    ));
    add(gauge(
        "hail_known_bad_builds",
        "Builds hail will not deploy again",
        record.known_bad.len() as i64,
    ));
    // A failed deployment with no good build to return to leaves the profile at the failed one.
    let deployed_bad = record.deployed.as_ref().is_some_and(|d| {
        record
            .known_bad
            .iter()
            .any(|k| k.store_path == d.store_path)
    });
    add(gauge(
        "hail_deployed_known_bad",
        "1 when the profile points at a known-bad build (nothing good to return to)",
        i64::from(deployed_bad),
    ));

    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encoding into memory");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// Writes the metrics to `path` atomically (node_exporter never reads half a file), creating its
/// directory when it is missing: node_exporter's textfile directory is often not made by anyone
/// else before hail's first poll.
pub fn write(path: &Path, record: &Record, instance: Option<&str>) -> Result<(), StateError> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        tracing::info!(
            hail.event = "metrics",
            "created {}, the directory of the metrics file",
            dir.display()
        );
    }
    state_file::write_atomically(
        path,
        render(record, instance).as_bytes(),
        state_file::Durable::No,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_absent_values_are_left_out() {
        let record = Record {
            job: "http://h/job/a\"b\\c\nd".into(),
            profile: "/p".into(),
            ..Record::default()
        };
        let text = render(&record, None);
        assert!(text.contains(r#"job="http://h/job/a\"b\\c\nd""#), "{text}");
        assert!(!text.contains("hail_deployed_build_id"), "{text}");
        assert!(text.contains("hail_polls_total{result=\"ok\"} 0"), "{text}");
        assert!(text.contains("# TYPE hail_polls_total counter"), "{text}");
        assert!(text.contains("\nhail_deployed_known_bad 0\n"), "{text}");
    }

    #[test]
    fn a_profile_left_at_a_known_bad_build_is_flagged() {
        let path = "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile";
        let record = Record {
            deployed: Some(crate::record::Deployed {
                build_id: Some(8),
                store_path: path.into(),
                generation: Some(2),
                since: jiff::Timestamp::UNIX_EPOCH,
            }),
            known_bad: vec![crate::record::KnownBad {
                build_id: Some(8),
                store_path: path.into(),
                reason: "activation failed".into(),
                time: jiff::Timestamp::UNIX_EPOCH,
            }],
            ..Record::default()
        };
        assert!(render(&record, None).contains("\nhail_deployed_known_bad 1\n"));
    }

    #[test]
    fn every_series_names_its_instance() {
        let record = Record {
            job: "http://h/job/p/j/web".into(),
            profile: "/nix/var/nix/profiles/hail/web".into(),
            ..Record::default()
        };
        let text = render(&record, Some("web"));
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.len() > 10, "{text}");
        for line in samples {
            assert!(line.contains("name=\"web\""), "{line}\n{text}");
        }
    }
}
