//! `monitoring/`: the alert rules pass Prometheus' own checks and their unit tests (promtool),
//! every alert is tested firing and not firing, the dashboard is a Grafana dashboard for a
//! fleet, and the rules, their tests and the dashboard name only metrics, labels and label values
//! that the real hail writes to its metrics file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::{self, Expr, LabelModifier};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

use crate::fixture::{Fixture, RUN};
use hail_testkit::{prereq, prometheus};

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring")
}

fn read(file: &str) -> String {
    let path = monitoring().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(file: &str) -> Value {
    serde_yaml_ng::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("dashboard.json")).unwrap_or_else(|e| panic!("dashboard.json: {e}"))
}

/// Runs promtool in `monitoring/`; panics with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The rules of alerts.yml: (alert name, rule).
fn alert_rules() -> Vec<(String, Value)> {
    let rules = yaml("alerts.yml");
    let groups = rules["groups"].as_array().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| {
            (
                r["alert"].as_str().expect("an alert").to_string(),
                r.clone(),
            )
        })
        .collect()
}

/// Every PromQL query of the dashboard, with Grafana's variables made PromQL: the interval
/// variables become durations, and a `label_values(QUERY, LABEL)` variable query becomes
/// `QUERY` (LABEL is returned with the label names used).
fn dashboard_queries(d: &Value) -> Vec<(String, Option<String>)> {
    let grafana = |q: &str| {
        q.replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$__range", "1d")
    };
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a target's expr");
            out.push((grafana(expr), None));
        }
    }
    for var in d["templating"]["list"].as_array().expect("templating") {
        if var["type"] == "query" {
            let q = var["definition"].as_str().expect("a variable's definition");
            // The query as a string, the form every Grafana version reads (a newer one turns it
            // into its editor's object when the dashboard is saved).
            assert_eq!(
                var["query"].as_str(),
                Some(q),
                "{var:#}: its query and its definition differ"
            );
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{q}: expected label_values(QUERY, LABEL)"));
            let (query, label) = inner.rsplit_once(',').expect("label_values(QUERY, LABEL)");
            out.push((grafana(query.trim()), Some(label.trim().to_string())));
        }
    }
    out
}

#[test]
#[cfg_attr(
    hail_skip_promtool,
    ignore = "needs promtool (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_alert_rules_pass_promtools_checks_and_their_unit_tests() {
    prereq::require(&prereq::PROMTOOL);
    let checked = promtool(&["check", "rules", "alerts.yml"]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alert_rules().len())),
        "{checked}"
    );
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // The dashboard's queries, through Prometheus' own parser: as recording rules.
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = dashboard_queries(&dashboard())
        .into_iter()
        .enumerate()
        .map(|(i, (expr, _))| serde_json::json!({ "record": format!("dashboard:query{i}"), "expr": expr }))
        .collect();
    let file = dir.path().join("dashboard-queries.yml");
    let groups = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(&file, groups.to_string()).unwrap();
    promtool(&["check", "rules", file.to_str().unwrap()]);
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let tests = yaml("alerts.test.yml");
    assert_eq!(tests["rule_files"], serde_json::json!(["alerts.yml"]));
    // alert name → (tested firing, tested not firing)
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for test in tests["tests"].as_array().expect("tests") {
        for case in test["alert_rule_test"].as_array().expect("alert_rule_test") {
            let name = case["alertname"].as_str().expect("alertname").to_string();
            let firing = !case["exp_alerts"]
                .as_array()
                .expect("exp_alerts")
                .is_empty();
            let entry = seen.entry(name).or_default();
            if firing {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    let alerts = alert_rules();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for (name, rule) in &alerts {
        assert_eq!(
            seen.get(name),
            Some(&(true, true)),
            "{name}: (tested firing, tested not firing)"
        );
        // Each tells the operator what to look at on the host.
        let description = rule["annotations"]["description"].as_str().unwrap_or("");
        assert!(
            description.contains("hail status") && rule["annotations"]["summary"].is_string(),
            "{name}: {rule:#}"
        );
        assert!(rule["labels"]["severity"].is_string(), "{name}: {rule:#}");
    }
    let unknown: Vec<_> = seen
        .keys()
        .filter(|n| !alerts.iter().any(|(a, _)| a == *n))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_for_a_fleet() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64() >= Some(39), "schemaVersion");
    assert!(d["uid"].is_string() && d["title"].is_string());
    let vars = d["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("instance")["type"], "query");
    let from_variable = serde_json::json!({ "type": "prometheus", "uid": "${datasource}" });
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"], from_variable, "{v:#}");
    }
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("a title");
        assert!(ids.insert(p["id"].as_u64().expect("an id")), "{title}: id");
        assert_eq!(p["datasource"], from_variable, "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"], from_variable, "{title}");
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                expr.contains("$instance"),
                "{title}: {expr} ignores $instance"
            );
        }
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(x + w <= 24 && g["h"].as_u64() > Some(0), "{title}: {g}");
    }
    for title in [
        "Deployed build per instance",
        "Behind Hydra's latest",
        "Failed deployments",
        "Paused",
        "Reboot required",
        "Last successful poll, age",
    ] {
        assert!(
            panels.iter().any(|p| p["title"] == title),
            "no panel {title}"
        );
    }
}

/// The metric names, label names and values in a set of PromQL queries.
#[derive(Default, Debug)]
struct Used {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
    /// (metric, label) → the values matched with `=` or `!=` (regular expressions are not read).
    values: BTreeMap<(String, String), BTreeSet<String>>,
    /// A selector that names no metric.
    unnamed: Vec<String>,
}

impl Used {
    fn label(&mut self, name: &str) {
        self.labels.insert(name.to_string());
    }

    fn modifier(&mut self, m: &Option<LabelModifier>) {
        if let Some(m) = m {
            for l in &m.labels().labels {
                self.label(l);
            }
        }
    }

    fn selector(&mut self, name: &Option<String>, matchers: &Matchers) {
        let Some(name) = name else {
            self.unnamed.push(format!("{matchers:?}"));
            return;
        };
        self.metrics.insert(name.clone());
        for m in matchers
            .matchers
            .iter()
            .chain(matchers.or_matchers.iter().flatten())
        {
            self.label(&m.name);
            if matches!(m.op, MatchOp::Equal | MatchOp::NotEqual) {
                self.values
                    .entry((name.clone(), m.name.clone()))
                    .or_default()
                    .insert(m.value.clone());
            }
        }
    }

    fn query(&mut self, query: &str) {
        let expr = parser::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        walk_expr(self, &expr).expect("walking a query");
    }
}

impl ExprVisitor for Used {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(&vs.name, &vs.matchers),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs.name, &ms.vs.matchers),
            Expr::Aggregate(a) => self.modifier(&a.modifier),
            Expr::Binary(b) => {
                if let Some(m) = &b.modifier {
                    self.modifier(&m.matching);
                    for l in m
                        .card
                        .labels()
                        .map(|l| l.labels.clone())
                        .unwrap_or_default()
                    {
                        self.label(&l);
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// `{{ $labels.NAME }}` in alert annotations, `{{NAME}}` in a dashboard's legend.
fn template_labels(text: &str, prefix: &str, used: &mut Used) {
    for part in text.split("{{").skip(1) {
        let inner = part.split("}}").next().unwrap_or("").trim();
        if let Some(label) = inner.strip_prefix(prefix) {
            let label: String = label
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !label.is_empty() {
                used.label(&label);
            }
        }
    }
}

/// What the rules, their tests and the dashboard use.
fn used_by_monitoring() -> Used {
    let mut used = Used::default();
    for (name, rule) in alert_rules() {
        used.query(
            rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: expr")),
        );
        for text in rule["annotations"]
            .as_object()
            .expect("annotations")
            .values()
        {
            template_labels(text.as_str().expect("text"), "$labels.", &mut used);
        }
    }
    for test in yaml("alerts.test.yml")["tests"].as_array().expect("tests") {
        for series in test["input_series"].as_array().expect("input_series") {
            used.query(series["series"].as_str().expect("series"));
        }
    }
    let d = dashboard();
    for (query, label) in dashboard_queries(&d) {
        used.query(&query);
        if let Some(l) = label {
            used.label(&l);
        }
    }
    for panel in d["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            if let Some(legend) = target["legendFormat"].as_str() {
                template_labels(legend, "", &mut used);
            }
        }
    }
    used
}

/// The names are those of a real hail's metrics file, not a list of ours: renaming a metric,
/// a label or a value of `result` in src/metrics.rs fails this test until monitoring/ follows.
#[test]
#[cfg_attr(
    any(hail_skip_nix, hail_skip_prometheus_parser),
    ignore = "needs root, Nix and python3-prometheus-client (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_rules_and_the_dashboard_name_only_what_hail_writes() {
    let f = Fixture::new();
    prereq::require(&prereq::PROMETHEUS_PARSER);
    // After a deployment every metric is there (a few are left out while unknown).
    let file = f.tmp.path().join("hail.prom");
    f.release("1");
    let r = f
        .hail
        .oneshot(&["--metrics-file", file.to_str().unwrap()], RUN);
    assert_eq!(r.code(), Some(0), "{}", r.output);
    let samples = prometheus::parse(&std::fs::read_to_string(&file).expect("metrics file"));
    let written: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    let mut labels: BTreeSet<&str> = BTreeSet::new();
    let mut values: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for s in &samples {
        for (k, v) in &s.labels {
            labels.insert(k);
            let v = v.as_str().unwrap_or("");
            values.entry((&s.name, k)).or_default().insert(v);
        }
    }
    // Under systemd every series carries the instance's name too (not in this test's run), and
    // Prometheus adds the scrape's own labels.
    labels.extend([hail::metrics::INSTANCE_LABEL, "instance", "job"]);

    let used = used_by_monitoring();
    assert!(
        used.unnamed.is_empty(),
        "selectors without a metric name: {:?}",
        used.unnamed
    );
    assert!(used.metrics.len() >= 10, "{used:?}");
    let unknown: Vec<_> = used
        .metrics
        .iter()
        .filter(|m| !written.contains(m.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics hail does not write: {unknown:?}; it writes {written:?}"
    );
    let unknown: Vec<_> = used
        .labels
        .iter()
        .filter(|l| !labels.contains(l.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "labels hail's series do not carry: {unknown:?}; they carry {labels:?}"
    );
    // The values of `result`, a label of hail's with a fixed set of values, must be real ones;
    // the other labels' values (job, profile, instance names) differ from host to host.
    for ((metric, label), used) in &used.values {
        if label == "result" {
            let real = values.get(&(metric.as_str(), "result"));
            for v in used {
                assert!(
                    real.is_some_and(|r| r.contains(v.as_str())),
                    "{metric}{{result=\"{v}\"}}: hail writes {real:?}"
                );
            }
        }
    }
}
