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
fn evaluations_list_and_latest_finished() {
    let h = HydraServer::start();
    let evals_url = format!("{}/jobset/hail/test/evals", h.url());
    let latest_eval = format!("{}/jobset/hail/test/latest-eval", h.url());
    let (_, empty) = json(&evals_url);
    assert_eq!(empty["evals"], serde_json::json!([]));
    // Hydra's ceil(0/20).
    assert_eq!(
        (empty["last"].as_str(), empty.get("next")),
        (Some("?page=0"), None)
    );
    let (s, b) = json(&latest_eval);
    assert_eq!(
        (s, b["error"].as_str()),
        (404, Some("No evaluation found."))
    );
    let (s, b) = json(&format!("{}/jobset/nope/test/evals", h.url()));
    assert_eq!(
        (s, b["error"].as_str()),
        (404, Some("Project ‘nope’ doesn't exist."))
    );
    let (s, b) = json(&format!("{}/jobset/hail/nope/evals", h.url()));
    assert_eq!(
        (s, b["error"].as_str()),
        (404, Some("Jobset ‘nope’ doesn't exist."))
    );

    // 45 evaluations: three pages, newest first.
    let ids: Vec<u64> = (0..45)
        .map(|_| {
            let e = h.add_eval("hail", "test");
            h.add_build(BuildSpec::succeeded(P1).in_evals(&[e]));
            e
        })
        .collect();
    let (_, p1) = json(&evals_url);
    let page_ids = |p: &Value| -> Vec<u64> {
        p["evals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        page_ids(&p1),
        ids.iter().rev().take(20).copied().collect::<Vec<_>>()
    );
    assert_eq!(
        (
            p1["first"].as_str(),
            p1["next"].as_str(),
            p1["last"].as_str(),
            p1.get("previous")
        ),
        (Some("?page=1"), Some("?page=2"), Some("?page=3"), None)
    );
    let (_, p3) = json(&format!("{evals_url}?page=3"));
    assert_eq!(
        page_ids(&p3),
        ids.iter().rev().skip(40).copied().collect::<Vec<_>>()
    );
    assert_eq!(
        (p3.get("next"), p3["previous"].as_str()),
        (None, Some("?page=2"))
    );

    // An evaluation that only shares older builds (hasnewbuilds = 0) is not listed.
    let shared = h.add_eval("hail", "test");
    h.add_build(BuildSpec::succeeded(P2).in_evals(&[ids[44], shared]));
    let (_, e) = json(&format!("{}/eval/{shared}", h.url()));
    assert_eq!(e["hasnewbuilds"], 0);
    assert_eq!(page_ids(&json(&evals_url).1)[0], ids[44]);

    // latest-eval: the newest with no unfinished build, whatever their status.
    let newest = h.add_eval("hail", "test");
    let q = h.add_build(BuildSpec::queued(P2).in_evals(&[newest]));
    let r = get(&latest_eval, &[JSON]).unwrap();
    assert_eq!(r.status, 302);
    let at = format!("{}/eval/{}?name=test", h.url(), ids[44]);
    assert_eq!(r.header("Location"), Some(at.as_str()));
    h.finish(q, 1);
    let r = get(&format!("{latest_eval}/builds?x=1"), &[JSON]).unwrap();
    let at = format!("{}/eval/{newest}/builds?name=test&x=1", h.url());
    assert_eq!(r.header("Location"), Some(at.as_str()));

    let (s, b) = json(&format!("{}/eval/{newest}/job/nope", h.url()));
    assert_eq!(
        (s, b["error"].as_str()),
        (
            404,
            Some("This evaluation has no job with the specified name.")
        )
    );
}

#[test]
fn evaluations_of_many_builds_and_bytes_served() {
    let h = HydraServer::start();
    let e = h.add_eval("hail", "test");
    let job = h.add_build(BuildSpec::succeeded(P1).in_evals(&[e]));
    let others = h.add_other_builds(e, 30, &BuildSpec::succeeded(P2));
    h.finish(others[0], 3);
    h.add_other_builds(e, 2, &BuildSpec::queued(P2));
    let (_, builds) = json(&format!("{}/eval/{e}/builds", h.url()));
    let builds = builds.as_array().unwrap();
    assert_eq!(builds.len(), 33);
    assert_eq!(builds[0]["id"], job);
    assert_eq!(
        (builds[1]["job"].as_str(), builds[1]["buildstatus"].as_i64()),
        (Some("other-0"), Some(3))
    );
    assert_eq!(builds.iter().filter(|b| b["finished"] == 0).count(), 2);

    let r = get(&format!("{}/eval/{e}/builds", h.url()), &[JSON]).unwrap();
    let recorded = h.requests().last().unwrap().response_bytes.unwrap();
    let head = r
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum::<usize>();
    // Status line, headers and the blank line; the client asked for `Connection: close`.
    let wire =
        "HTTP/1.1 200 OK\r\n".len() + head + 2 + r.body.len() - "Connection: close\r\n".len();
    assert_eq!(recorded, wire as u64);
    assert_eq!(h.bytes_served(), 2 * recorded);

    let path = format!("/eval/{e}/builds");
    h.override_path(
        &path,
        Override::streamed_json("[", &serde_json::json!({"id": 1}), 50_000, "]", true),
    );
    let r = get(&format!("{}{path}", h.url()), &[JSON]).unwrap();
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    let body_len = 2 + 50_000 * 8 + 49_999;
    assert!(h.requests().last().unwrap().response_bytes.unwrap() > body_len);
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
    // Closed without a byte: no head to read.
    let err = get(&format!("{}{path}", h.url()), &[JSON]).unwrap_err();
    assert_eq!(err.to_string(), "no end of headers");
    h.override_path(&path, Override::redirect("http://localhost:1/build/1"));
    let r = get(&format!("{}{path}", h.url()), &[JSON]).unwrap();
    assert_eq!(r.header("Location"), Some("http://localhost:1/build/1"));
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn cache_publishes_signed_closures_absent_locally() {
    hail_testkit::prereq::require_nix();
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

#[test]
fn running_builds_are_not_latest_and_finish_with_both_times() {
    let h = HydraServer::start();
    let latest = format!("{}/latest", h.default_job_uri());
    let ok = h.add_build(BuildSpec::succeeded(P1));
    let running = h.add_build(BuildSpec::running(P2));
    let queued = h.add_build(BuildSpec::queued(P2));
    let (_, r) = json(&format!("{}/build/{running}", h.url()));
    assert_eq!(
        (&r["finished"], &r["buildstatus"], &r["stoptime"]),
        (&Value::from(0), &Value::Null, &Value::Null)
    );
    assert!(r["starttime"].as_u64().is_some(), "{r}");
    let (_, q) = json(&format!("{}/build/{queued}", h.url()));
    assert_eq!(
        (&q["starttime"], &q["stoptime"]),
        (&Value::Null, &Value::Null)
    );
    // Hydra's latest: finished and succeeded only.
    let at = |id: u64| Some(format!("{}/build/{id}", h.url()));
    let location = || {
        get(&latest, &[JSON])
            .unwrap()
            .header("Location")
            .map(str::to_string)
    };
    assert_eq!(location(), at(ok));
    h.mark_running(queued);
    let (_, q) = json(&format!("{}/build/{queued}", h.url()));
    assert!(q["starttime"].as_u64().is_some(), "{q}");
    assert_eq!(location(), at(ok));
    h.mark_finished(running);
    let (_, r) = json(&format!("{}/build/{running}", h.url()));
    let (start, stop) = (r["starttime"].as_u64(), r["stoptime"].as_u64());
    assert!(start.is_some() && start <= stop, "{r}");
    assert_eq!(location(), at(running));
}

#[test]
fn stoptime_and_clock_are_settable() {
    let h = HydraServer::start();
    let id = h.add_build(BuildSpec::succeeded(P1));
    h.set_stoptime(id, 1_717_430_587);
    let (_, b) = json(&format!("{}/build/{id}", h.url()));
    assert_eq!(b["stoptime"], 1_717_430_587);
    assert!(b["starttime"].as_u64() <= b["stoptime"].as_u64(), "{b}");

    // A day ahead: new builds and the `Date:` header follow Hydra's clock.
    h.set_clock_ahead(86_400);
    let id = h.add_build(BuildSpec::succeeded(P1));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = get(&format!("{}/build/{id}", h.url()), &[JSON]).unwrap();
    let b: Value = serde_json::from_slice(&r.body).unwrap();
    let stop = b["stoptime"].as_u64().unwrap();
    assert!(stop.abs_diff(now + 86_400) < 60, "{stop} vs {now}");
    let date = r.header("Date").unwrap();
    let date = jiff::fmt::rfc2822::parse(date)
        .unwrap()
        .timestamp()
        .as_second() as u64;
    assert!(date.abs_diff(now + 86_400) < 60, "{date} vs {now}");
}

#[test]
fn a_renamed_jobset_answers_301_to_its_new_name() {
    let h = HydraServer::start();
    let ok = h.add_build(BuildSpec::succeeded(P1));
    h.rename_jobset("hail", "test", "main");
    for (old, new) in [
        (
            "/job/hail/test/profile/latest",
            "/job/hail/main/profile/latest",
        ),
        (
            "/jobset/hail/test/evals?page=2",
            "/jobset/hail/main/evals?page=2",
        ),
        (
            "/jobset/hail/test/latest-eval",
            "/jobset/hail/main/latest-eval",
        ),
    ] {
        let r = get(&format!("{}{old}", h.url()), &[JSON]).unwrap();
        assert_eq!(r.status, 301, "{old}");
        assert_eq!(
            r.header("Location"),
            Some(format!("{}{new}", h.url()).as_str()),
            "{old}"
        );
    }
    let r = get(
        &format!("{}/job/hail/main/profile/latest", h.url()),
        &[JSON],
    )
    .unwrap();
    assert_eq!(
        r.header("Location"),
        Some(format!("{}/build/{ok}", h.url()).as_str())
    );
    let (_, b) = json(&format!("{}/build/{ok}", h.url()));
    assert_eq!(b["jobset"], "main");
    // Renamed again: the oldest name leads to the newest; an unknown one is still a 404.
    h.rename_jobset("hail", "main", "prod");
    let r = get(
        &format!("{}/job/hail/test/profile/latest", h.url()),
        &[JSON],
    )
    .unwrap();
    assert_eq!(
        r.header("Location"),
        Some(format!("{}/job/hail/prod/profile/latest", h.url()).as_str())
    );
    let (s, e) = json(&format!("{}/job/hail/nope/profile/latest", h.url()));
    assert_eq!(
        (s, e["error"].as_str()),
        (404, Some("Jobset ‘nope’ doesn't exist."))
    );
}
