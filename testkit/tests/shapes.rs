//! The test Hydra's JSON answers held against Hydra's own (`tests/hydra-examples/`): the same
//! keys and the same JSON type at every path, for every route the examples cover. Values are not
//! compared. Objects keyed by data (a build's outputs, products and metrics, an evaluation's
//! inputs) are compared entry by entry: each entry must have the shape of one of Hydra's.

use std::path::Path;

use hail_testkit::http::get;
use hail_testkit::hydra::{BuildSpec, HydraServer};
use serde_json::Value;

const JSON: (&str, &str) = ("Accept", "application/json");
const P1: &str = "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile";
const P2: &str = "/nix/store/8w1kfj0bqdwy3a0ysqr03yx58hjx8r6q-foo-profile";

/// Objects whose keys are data (output names, product numbers, metric and input names).
const KEYED_BY_DATA: [&str; 4] = [
    "buildoutputs",
    "buildproducts",
    "buildmetrics",
    "jobsetevalinputs",
];

/// Hydra's answer in `tests/hydra-examples/<name>`.
fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/hydra-examples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where the shape of `ours` differs from that of Hydra's `theirs`, one line per difference.
fn differences(ours: &Value, theirs: &Value) -> Vec<String> {
    let mut found = Vec::new();
    compare("$", ours, theirs, &mut found);
    found
}

fn compare(path: &str, ours: &Value, theirs: &Value, found: &mut Vec<String>) {
    if kind(ours) != kind(theirs) {
        found.push(format!(
            "{path}: {} where Hydra has {}",
            kind(ours),
            kind(theirs)
        ));
        return;
    }
    let name = path.rsplit('.').next().unwrap_or(path);
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) if KEYED_BY_DATA.contains(&name) => {
            entries(&format!("{path}.*"), o.values(), t.values(), found)
        }
        (Value::Object(o), Value::Object(t)) => {
            for k in t.keys().filter(|k| !o.contains_key(*k)) {
                found.push(format!("{path}.{k}: missing"));
            }
            for k in o.keys().filter(|k| !t.contains_key(*k)) {
                found.push(format!("{path}.{k}: not in Hydra's answer"));
            }
            for (k, tv) in t {
                if let Some(ov) = o.get(k) {
                    compare(&format!("{path}.{k}"), ov, tv, found);
                }
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            entries(&format!("{path}[]"), o.iter(), t.iter(), found)
        }
        _ => {}
    }
}

/// Each of our entries has the shape of one of Hydra's; an empty list or map where Hydra's has
/// entries (or the other way round) counts, so that no comparison is empty by accident.
fn entries<'a>(
    path: &str,
    ours: impl Iterator<Item = &'a Value>,
    theirs: impl Iterator<Item = &'a Value>,
    found: &mut Vec<String>,
) {
    let (ours, theirs): (Vec<&Value>, Vec<&Value>) = (ours.collect(), theirs.collect());
    if ours.is_empty() != theirs.is_empty() {
        found.push(format!(
            "{path}: {} entries where Hydra has {}",
            ours.len(),
            theirs.len()
        ));
        return;
    }
    for o in ours {
        let tries: Vec<Vec<String>> = theirs
            .iter()
            .map(|t| {
                let mut d = Vec::new();
                compare(path, o, t, &mut d);
                d
            })
            .collect();
        if !tries.iter().any(Vec::is_empty) {
            found.extend(tries.into_iter().min_by_key(Vec::len).unwrap_or_default());
        }
    }
}

/// GETs `url` as JSON without following redirects: (status, Location, body).
fn fetch(url: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, Value) {
    let r = get(url, headers).unwrap_or_else(|e| panic!("{url}: {e}"));
    let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, r.header("Location").map(str::to_string), body)
}

#[track_caller]
fn assert_shaped(route: &str, ours: &Value, example_name: &str) {
    let theirs = example(example_name);
    let d = differences(ours, &theirs);
    assert!(
        d.is_empty(),
        "{route} is not shaped as Hydra's {example_name}:\n  {}\nours: {ours:#}",
        d.join("\n  ")
    );
}

#[test]
fn the_test_hydra_answers_in_hydras_shapes() {
    let h = HydraServer::start();
    let (project, jobset, job) = ("foo", "staging", "foo");
    let latest = format!("{}/latest", h.job_uri(project, jobset, job));
    h.add_jobset(project, jobset);

    // /job/…/latest with no successful build: 404.
    let (status, _, body) = fetch(&latest, &[JSON]);
    assert_eq!(status, 404, "{body}");
    assert_shaped("/job/…/latest", &body, "error-no-successful-build.json");

    // 41 evaluations, so that the list has three pages as in Hydra's example.
    for _ in 0..40 {
        h.add_build(BuildSpec::succeeded(P2).job(project, jobset, "other"));
    }
    let ok = h.add_build(BuildSpec::succeeded(P1).job(project, jobset, job));
    let eval = h.build_json(ok)["jobsetevals"][0].as_u64().unwrap();
    let queued = h.add_build(
        BuildSpec::queued(P2)
            .job(project, jobset, job)
            .in_evals(&[eval]),
    );

    // The build, reached from /latest by a 302.
    let (status, location, _) = fetch(&latest, &[JSON]);
    assert_eq!(status, 302);
    let location = location.expect("a Location");
    assert_eq!(location, format!("{}/build/{ok}", h.url()));
    let (status, _, body) = fetch(&location, &[JSON]);
    assert_eq!(status, 200);
    assert_shaped("/build/<id>", &body, "build.json");

    let (status, _, body) = fetch(&format!("{}/build/{queued}", h.url()), &[JSON]);
    assert_eq!(status, 200);
    assert_shaped("/build/<id> (queued)", &body, "build-queued.json");

    let (status, _, body) = fetch(&format!("{}/eval/{eval}", h.url()), &[JSON]);
    assert_eq!(status, 200);
    assert_shaped("/eval/<id>", &body, "eval.json");

    let (status, _, body) = fetch(
        &format!("{}/jobset/{project}/{jobset}/evals", h.url()),
        &[JSON],
    );
    assert_eq!(status, 200);
    assert_shaped("/jobset/…/evals", &body, "evals.json");

    // Any page of a private instance, anonymously: 403.
    h.set_private(true);
    for path in [format!("/build/{ok}"), format!("/eval/{eval}")] {
        let (status, _, body) = fetch(&format!("{}{path}", h.url()), &[JSON]);
        assert_eq!(status, 403, "{path}: {body}");
        assert_shaped(&path, &body, "error-private.json");
    }
}

/// A running build is a queued one that has started: Hydra's queued shape, `starttime` a time.
#[test]
fn a_running_build_is_shaped_as_hydras_with_a_starttime() {
    let h = HydraServer::start();
    let running = h.add_build(BuildSpec::running(P1).job("foo", "staging", "foo"));
    let (status, _, body) = fetch(&format!("{}/build/{running}", h.url()), &[JSON]);
    assert_eq!(status, 200);
    let mut theirs = example("build-queued.json");
    theirs["starttime"] = example("build.json")["starttime"].clone();
    let d = differences(&body, &theirs);
    assert!(d.is_empty(), "{}\nours: {body:#}", d.join("\n"));
    assert_eq!(
        (&body["finished"], &body["buildstatus"], &body["stoptime"]),
        (&Value::from(0), &Value::Null, &Value::Null)
    );
}

/// The comparison itself: a key dropped, renamed or added, a type changed, an entry of a keyed
/// map or a list reshaped, each is found.
#[test]
fn the_comparison_finds_every_kind_of_difference() {
    let hydra = example("build.json");
    assert_eq!(differences(&hydra, &hydra), Vec::<String>::new());
    let changed = |f: &dyn Fn(&mut Value)| {
        let mut v = hydra.clone();
        f(&mut v);
        differences(&v, &hydra)
    };
    let dropped = changed(&|v| {
        v.as_object_mut().unwrap().remove("stoptime");
    });
    assert_eq!(dropped, ["$.stoptime: missing"]);
    let renamed = changed(&|v| {
        let o = v.as_object_mut().unwrap();
        let x = o.remove("drvpath").unwrap();
        o.insert("drv_path".into(), x);
    });
    assert_eq!(
        renamed,
        ["$.drvpath: missing", "$.drv_path: not in Hydra's answer"]
    );
    assert_eq!(
        changed(&|v| v["finished"] = Value::Bool(true)),
        ["$.finished: boolean where Hydra has integer"]
    );
    assert_eq!(
        changed(&|v| v["buildoutputs"]["out"]["path"] = Value::from(1)),
        ["$.buildoutputs.*.path: integer where Hydra has string"]
    );
    assert_eq!(
        changed(&|v| v["jobsetevals"] = serde_json::json!(["3122"])),
        ["$.jobsetevals[]: string where Hydra has integer"]
    );
    assert_eq!(
        changed(&|v| v["buildoutputs"] = serde_json::json!({})),
        ["$.buildoutputs.*: 0 entries where Hydra has 1"]
    );
}
