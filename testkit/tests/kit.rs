//! The test kit's own checks: the Hydra server answers as Hydra does, the cache really serves
//! signed closures that are gone from the local store.

use std::process::Command;
use std::time::{Duration, Instant};

use hail_testkit::cache::{Cache, ProfileSpec};
use hail_testkit::http::get;
use hail_testkit::hydra::{BuildSpec, HydraServer, Override};
use serde_json::Value;

const JSON: (&str, &str) = ("Accept", "application/json");
const P1: &str = "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile";
const P2: &str = "/nix/store/8w1kfj0bqdwy3a0ysqr03yx58hjx8r6q-foo-profile";

fn json(url: &str) -> (u16, Value) {
    let r = get(url, &[JSON]).unwrap();
    assert_eq!(r.header("Vary"), Some("Accept"), "{url}");
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn latest_redirects_to_the_newest_successful_build() {
    let h = HydraServer::start();
    let (status, body) = json(&format!("{}/latest", h.default_job_uri()));
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("There is no successful build to redirect to."))
    );

    let ok = h.add_build(BuildSpec::succeeded(P1));
    let _failed = h.add_build(BuildSpec::failed(P2, 1));
    let queued = h.add_build(BuildSpec::queued(P2));
    let r = get(&format!("{}/latest", h.default_job_uri()), &[JSON]).unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("Location"),
        Some(format!("{}/build/{ok}", h.url()).as_str())
    );

    let (status, b) = json(&format!("{}/build/{ok}", h.url()));
    assert_eq!(status, 200);
    assert_eq!(b["finished"], 1);
    assert_eq!(b["buildstatus"], 0);
    assert_eq!(b["buildoutputs"]["out"]["path"], P1);
    assert_eq!(b["buildproducts"]["1"]["type"], "nix-build");
    for field in [
        "timestamp",
        "starttime",
        "stoptime",
        "nixname",
        "system",
        "priority",
        "releasename",
        "drvpath",
        "jobsetevals",
        "buildmetrics",
    ] {
        assert!(b.get(field).is_some(), "{field} missing from {b}");
    }
    let (_, q) = json(&format!("{}/build/{queued}", h.url()));
    assert_eq!(
        (q["finished"].clone(), q["buildstatus"].clone()),
        (Value::from(0), Value::Null)
    );

    h.mark_finished(queued);
    let r = get(&format!("{}/latest", h.default_job_uri()), &[JSON]).unwrap();
    assert_eq!(
        r.header("Location"),
        Some(format!("{}/build/{queued}", h.url()).as_str())
    );
}

#[test]
fn errors_html_private_and_evals() {
    let h = HydraServer::start();
    let (s, b) = json(&format!("{}/job/hail/nope/x/latest", h.url()));
    assert_eq!(
        (s, b["error"].as_str()),
        (404, Some("Jobset ‘nope’ doesn't exist."))
    );
    let id = h.add_build(BuildSpec::succeeded(P1));

    // Without Accept: application/json, Hydra answers HTML.
    let r = get(&format!("{}/build/{id}", h.url()), &[]).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/html"));

    let (_, evals) = json(&format!("{}/jobset/hail/test/evals", h.url()));
    assert_eq!(evals["evals"][0]["builds"][0], id);
    let r = get(
        &format!("{}/jobset/hail/test/latest-eval", h.url()),
        &[JSON],
    )
    .unwrap();
    assert_eq!(r.status, 302);

    h.set_private(true);
    let basic = ("Authorization", "Basic dXNlcjpwYXNz");
    let r = get(&format!("{}/build/{id}", h.url()), &[JSON, basic]).unwrap();
    assert_eq!(r.status, 403);
    assert!(r.text().contains("This page requires you to sign in."));
    let cookie = h.session_cookie();
    let r = get(
        &format!("{}/build/{id}", h.url()),
        &[JSON, ("Cookie", &cookie)],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        h.requests()
            .iter()
            .filter(|r| r.header("Authorization").is_some())
            .count(),
        1
    );
}

#[test]
fn overrides() {
    let h = HydraServer::start();
    let path = h.default_latest_path();
    h.override_path(&path, Override::respond(500, "text/plain", "boom").times(1));
    assert_eq!(
        get(&format!("{}{path}", h.url()), &[JSON]).unwrap().status,
        500
    );
    assert_eq!(
        get(&format!("{}{path}", h.url()), &[JSON]).unwrap().status,
        404
    );

    h.override_path(
        &path,
        Override::huge_json(&serde_json::json!({"a": 1}), 1 << 20),
    );
    let r = get(&format!("{}{path}", h.url()), &[JSON]).unwrap();
    assert_eq!(r.body.len(), 1 << 20);
    assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap()["a"], 1);

    h.override_path(&path, Override::delayed(Duration::from_millis(300)));
    let t = Instant::now();
    assert_eq!(
        get(&format!("{}{path}", h.url()), &[JSON]).unwrap().status,
        404
    );
    assert!(t.elapsed() >= Duration::from_millis(300));

    h.override_path(&path, Override::close());
    assert!(get(&format!("{}{path}", h.url()), &[JSON]).is_err());
    h.override_path(&path, Override::redirect("http://localhost:1/build/1"));
    let r = get(&format!("{}{path}", h.url()), &[JSON]).unwrap();
    assert_eq!(r.header("Location"), Some("http://localhost:1/build/1"));
}

#[test]
fn cache_publishes_signed_closures_absent_locally() {
    if !hail_testkit::prereq::require_nix() {
        return;
    }
    let cache = Cache::start();
    let dir = tempfile::tempdir().unwrap();
    let p = cache.publish(&ProfileSpec::new("1", &dir.path().join("marker")));
    assert!(p.closure.len() >= 2, "{:?}", p.closure);
    assert!(!std::path::Path::new(&p.out_path).exists());
    let hash = &p.out_path["/nix/store/".len()..][..32];
    let narinfo = get(&format!("{}/{hash}.narinfo", cache.url()), &[]).unwrap();
    assert_eq!(narinfo.status, 200);
    assert!(
        narinfo.text().contains("Sig: test-cache-1:"),
        "{}",
        narinfo.text()
    );

    // A Nix that trusts the key substitutes it; the activation then writes the marker.
    let home = dir.path().join("home");
    let out = Command::new("nix-store")
        .args(["--realise", &p.out_path])
        .env("NIX_CONFIG", cache.nix_config())
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let act = Command::new(format!("{}/bin/activate", p.out_path))
        .status()
        .unwrap();
    assert!(act.success());
    let marker = std::fs::read_to_string(dir.path().join("marker")).unwrap();
    assert_eq!(marker, format!("activated 1 {}\n", p.out_path));
    let _ = Command::new("nix-store")
        .arg("--delete")
        .args(&p.closure)
        .output();

    let u = cache.publish_unsigned(&ProfileSpec::new("2", &dir.path().join("marker")));
    let out = Command::new("nix-store")
        .args(["--realise", &u.out_path])
        .env("NIX_CONFIG", cache.nix_config())
        .env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unsigned path was substituted");
}
