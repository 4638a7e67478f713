//! Reads a Prometheus text exposition with the Prometheus project's own Python client parser
//! (Debian's python3-prometheus-client), so tests check what a scraper would see rather than
//! what a pattern of ours matches.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The interpreter the Debian package installs for.
const PYTHON: &str = "/usr/bin/python3";

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// One sample as the parser reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub family: String,
    pub kind: String,
    pub name: String,
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

/// Parses `text`; panics with the parser's complaint when it is not valid exposition format.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new(PYTHON)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3 ran");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    parsed
        .into_iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap_or_default().into(),
            kind: s["type"].as_str().unwrap_or_default().into(),
            name: s["name"].as_str().unwrap_or_default().into(),
            labels: s["labels"].as_object().cloned().unwrap_or_default(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map(|s| s.value)
}
