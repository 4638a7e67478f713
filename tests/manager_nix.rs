//! The manager's Nix side without nixpkgs: `nix/manager.nix` evaluates and builds with the host's
//! `/bin/sh` as its builder and the freshly built hail added with `builtins.path`; its output is
//! a profile whose `bin/activate` is two lines and whose `instances.json` this hail accepts;
//! `nix/instance.nix` maps one instance's settings; bad settings fail the evaluation with a
//! message naming the setting. Needs root and Nix (see `hail_testkit::prereq`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hail_testkit::cache::nix;
use serde_json::{Value, json};
use tempfile::TempDir;

const HAIL: &str = env!("CARGO_BIN_EXE_hail");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output(mut c: Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A package directory `<tmp>/pkg/bin/hail` holding this build's hail.
fn hail_package(tmp: &Path) -> PathBuf {
    let pkg = tmp.join("pkg");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    std::fs::copy(HAIL, pkg.join("bin/hail")).unwrap();
    pkg
}

/// `nix-build testkit/nix/manager-profile.nix` with these instances; the output path or the
/// evaluation's error.
fn build(tmp: &Path, instances: &Value) -> Result<PathBuf, String> {
    let pkg = hail_package(tmp);
    let nonce = format!("nixtest-{}", std::process::id());
    let mut c = nix(tmp, "nix-build");
    c.arg(root().join("testkit/nix/manager-profile.nix"))
        .args(["--argstr", "hailPackage"])
        .arg(&pkg)
        .args(["--argstr", "nonce", &nonce])
        .args(["--argstr", "instancesJson", &instances.to_string()])
        .arg("--out-link")
        .arg(tmp.join("result"));
    let out = output(c);
    if out.status.success() {
        Ok(PathBuf::from(text(&out.stdout).trim()))
    } else {
        Err(text(&out.stderr))
    }
}

fn tmp() -> TempDir {
    hail_testkit::prereq::require_nix();
    tempfile::Builder::new()
        .prefix("hail-manager-nix-")
        .tempdir()
        .unwrap()
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn builds_a_manager_profile_without_nixpkgs() {
    let tmp = tmp();
    let instances = json!({
        "manager": {"jobUri": "https://hydra.example.org/job/infra/hosts/manager", "pollPeriod": "1m"},
        "web": {
            "jobUri": "https://hydra.example.org/job/infra/production/web",
            "pollPeriod": 10,
            "netrcFile": "/etc/hail/web.netrc",
            "activationTimeout": "2m",
            "environment": {"RUST_LOG": "debug"},
            "extraArgs": ["--http-timeout", "30s"],
        },
        "worker": "https://hydra.example.org/job/infra/production/worker",
        "old": {"jobUri": "https://hydra.example.org/job/infra/production/old", "enable": false},
    });
    let out = build(tmp.path(), &instances).unwrap_or_else(|e| panic!("nix-build failed:\n{e}"));

    // bin/activate: the interpreter, then hail applying this profile's own set.
    let activate = std::fs::read_to_string(out.join("bin/activate")).unwrap();
    let lines: Vec<&str> = activate.lines().collect();
    assert_eq!(lines.len(), 2, "{activate}");
    assert_eq!(lines[0], "#!/bin/sh");
    let words: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(words[0], "exec");
    assert!(
        words[1].starts_with("/nix/store/") && words[1].ends_with("/bin/hail"),
        "{activate}"
    );
    assert_eq!(
        &words[2..],
        [
            "apply-instances",
            &format!("{}/instances.json", out.display())
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("bin/activate"))
        .unwrap()
        .permissions()
        .mode();
    assert!(
        mode & 0o111 != 0,
        "bin/activate is not executable: {mode:o}"
    );

    // The store copy of hail is the one the instances run, and it is in the profile's closure.
    let hail = words[1].to_string();
    let closure = output({
        let mut c = nix(tmp.path(), "nix-store");
        c.arg("-qR").arg(&out);
        c
    });
    assert!(
        text(&closure.stdout).lines().any(|p| hail.starts_with(p)),
        "{hail} not in the closure"
    );

    // The data: what instance.nix made of each entry; disabled instances are left out.
    let set: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("instances.json")).unwrap())
            .unwrap();
    assert_eq!(set["version"], 1);
    let names: Vec<&String> = set["instances"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["manager", "web", "worker"]);
    let web = &set["instances"]["web"];
    assert_eq!(
        web["environment"],
        json!({
            "HAIL_JOB_URI": "https://hydra.example.org/job/infra/production/web",
            "HAIL_PROFILE": "/nix/var/nix/profiles/hail/web",
            "HAIL_POLL_PERIOD": "10",
            "HAIL_ACTIVATION_TIMEOUT": "2m",
            "RUST_LOG": "debug",
            "NIX_REMOTE": "local",
            "PATH": "/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        })
    );
    assert_eq!(web["credentials"], json!({"netrc": "/etc/hail/web.netrc"}));
    assert_eq!(web["execStart"], json!([hail, "--http-timeout", "30s"]));
    assert_eq!(web["timeoutStartSec"], 180);
    assert_eq!(
        set["instances"]["worker"]["environment"]["HAIL_JOB_URI"],
        "https://hydra.example.org/job/infra/production/worker"
    );

    // This hail accepts the set and shows what it would write.
    let dropins = apply_check(&out);
    for expected in [
        "# hail@web.service.d/hail-manager.conf",
        "LoadCredential=netrc:/etc/hail/web.netrc",
        "TimeoutStartSec=180s",
        "Environment=\"HAIL_POLL_PERIOD=10\"",
        "# hail@worker.service.d/hail-manager.conf",
        "# hail@manager.service.d/hail-manager.conf",
    ] {
        assert!(
            dropins.contains(expected),
            "{expected:?} not in:\n{dropins}"
        );
    }
    assert!(
        dropins.contains(&format!("ExecStart=\"{hail}\" \"--http-timeout\" \"30s\"")),
        "{dropins}"
    );
}

/// What this hail's `apply-instances --check` prints for the profile's set (it must accept it).
fn apply_check(profile: &Path) -> String {
    let check = output({
        let mut c = Command::new(HAIL);
        c.args(["apply-instances", "--check"])
            .arg(profile.join("instances.json"));
        c
    });
    assert!(check.status.success(), "{}", text(&check.stderr));
    text(&check.stdout)
}

/// `nix-instantiate --eval --strict --json -E expr`, which must succeed.
fn eval_json(tmp: &Path, expr: &str) -> Output {
    let out = output({
        let mut c = nix(tmp, "nix-instantiate");
        c.args(["--eval", "--strict", "--json", "-E", expr]);
        c
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

/// The instance set a manager profile expression's `instancesJson` holds.
fn instance_set(tmp: &Path, expr: &str) -> Value {
    let out = eval_json(tmp, expr);
    let json: String = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_str(&json).unwrap()
}

/// The evaluation error of the manager function applied to `instances` (it must fail).
fn eval_error(instances: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let expr = format!(
        "(import {}/nix/manager.nix {{ hail = \"/nix/store/00000000000000000000000000000000-hail\"; \
         shell = \"/bin/sh\"; system = \"x86_64-linux\"; instances = {instances}; }}).type",
        root().display()
    );
    let out = output({
        let mut c = nix(tmp.path(), "nix-instantiate");
        c.args(["--eval", "--strict", "-E", &expr]);
        c
    });
    assert!(
        !out.status.success(),
        "{instances} evaluated: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn bad_settings_fail_the_evaluation_naming_the_setting() {
    let _tmp = tmp();
    let cases = [
        (r#"{ web.jobUri = "ftp://x"; }"#, "instances.web.jobUri"),
        (
            r#"{ web = { jobUri = "http://h/j"; netrcFile = "/nix/store/x-netrc"; }; }"#,
            "is in the Nix store",
        ),
        (
            r#"{ web = { jobUri = "http://h/j"; netrcFile = "etc/netrc"; }; }"#,
            "instances.web.netrcFile",
        ),
        (
            r#"{ web = { jobUri = "http://h/j"; pollPeriod = "5x"; }; }"#,
            "instances.web.pollPeriod",
        ),
        (
            r#"{ web = { jobUri = "http://h/j"; httpTimeout = "5"; }; }"#,
            "instances.web.httpTimeout",
        ),
        (
            r#"{ web = { jobUri = "http://h/j"; environment.HAIL_JOB_URI = "x"; }; }"#,
            "instances.web.environment",
        ),
        (
            r#"{ "-web".jobUri = "http://h/j"; }"#,
            "cannot name a hail instance",
        ),
        (
            r#"{ a = { jobUri = "http://h/j"; profile = "p"; }; b = { jobUri = "http://h/j"; profile = "/nix/var/nix/profiles/p"; }; }"#,
            "is also another instance's profile",
        ),
        (
            r#"{ web.jobURI = "http://h/j"; }"#,
            "unknown setting jobURI (known: activationTimeout",
        ),
        (
            r#"{ web.pollPeriod = 5; }"#,
            "instances.web.jobUri is missing",
        ),
        (r#"{ web = 5; }"#, "must be a job URI or a set"),
        (
            r#"{ web = { jobUri = "http://h/j"; extraArgs = [ "--x" 5 ]; package = "/nix/store/x"; }; }"#,
            "instances.web.extraArgs: expected a list of strings",
        ),
        (
            r#"{ a = { jobUri = "http://h/j"; profile = "/srv/p"; }; b = { jobUri = "http://h/j"; profile = "/srv/./p/"; }; }"#,
            "/srv/p is also another instance's profile",
        ),
        (
            r#"{ web = { jobUri = "http://h/j"; netrcFile = "/etc/./netrc"; }; }"#,
            "instances.web.netrcFile",
        ),
        (
            r#"{ web = { jobUri = "http://h/j"; restartIfChanged = "yes"; }; }"#,
            "restartIfChanged: expected true or false",
        ),
    ];
    for (instances, expected) in cases {
        let err = eval_error(instances);
        assert!(
            err.contains(expected),
            "{instances}: expected {expected:?} in:\n{err}"
        );
    }
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn path_puts_packages_first_on_every_instances_path() {
    let tmp = tmp();
    let expr = format!(
        "(import {}/nix/manager.nix {{ hail = \"/nix/store/00000000000000000000000000000000-hail\"; \
         shell = \"/bin/sh\"; system = \"x86_64-linux\"; path = [ \"/opt/nix\" ]; instances = {{ \
         a = \"http://h/job/p/j/a\"; b = {{ jobUri = \"http://h/job/p/j/b\"; environment.PATH = \"/own\"; }}; }}; }}).instancesJson",
        root().display()
    );
    let set = instance_set(tmp.path(), &expr);
    assert_eq!(
        set["instances"]["a"]["environment"]["PATH"],
        "/opt/nix/bin:/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    assert_eq!(set["instances"]["b"]["environment"]["PATH"], "/own");
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn instance_settings_map_to_unit_settings() {
    let tmp = tmp();
    let expr = format!(
        "import {}/nix/instance.nix {{ name = \"web\"; jobUri = \"https://h/job/p/j/web\"; \
         pollPeriod = 5; activationTimeout = \"90s\"; netrcFile = \"/etc/hail/netrc\"; \
         profile = \"web\"; package = \"/nix/store/00000000000000000000000000000000-hail\"; \
         extraArgs = [ \"--http-timeout\" \"1m\" ]; environment.NIX_CONFIG = \"x = 1\"; }}",
        root().display()
    );
    let out = eval_json(tmp.path(), &expr);
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        value,
        json!({
            "enable": true,
            "problems": [],
            "profile": "/nix/var/nix/profiles/web",
            "environment": {
                "HAIL_JOB_URI": "https://h/job/p/j/web",
                "HAIL_PROFILE": "web",
                "HAIL_POLL_PERIOD": "5",
                "HAIL_ACTIVATION_TIMEOUT": "90s",
                "NIX_CONFIG": "x = 1",
                "NIX_REMOTE": "local",
            },
            "credentials": {"netrc": "/etc/hail/netrc"},
            "execStart": ["/nix/store/00000000000000000000000000000000-hail/bin/hail", "--http-timeout", "1m"],
            "timeoutStartSec": 150,
        })
    );
}

/// A set that cannot be read or is not a set is a configuration error (exit 3), as for the agent.
#[test]
fn apply_instances_refuses_a_bad_set_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("instances.json");
    std::fs::write(&bad, r#"{"bogus": 1}"#).unwrap();
    for set in [bad, dir.path().join("missing.json")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hail"))
            .arg("apply-instances")
            .arg(&set)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("instance set"), "{stderr}");
    }
}

/// Every setting of `services.hail.<name>`, as a manager set gives it: each value the module
/// accepts (booleans, a multi-line environment value, a netrc path with a space, a quote and `%`).
fn every_setting() -> Value {
    json!({
        "sys": {
            "jobUri": "https://hydra.example.org/job/infra/hosts/web1",
            "system": true, "switchAction": "boot", "reboot": "when-needed", "rebootWindow": "02:00-04:30",
            "allowDowngrade": true, "restartIfChanged": true,
            "gate": "evaluation", "gateDepth": 20,
            "healthCheck": "/bin/true --quiet", "healthInterval": "10s", "healthTimeout": "5m",
            "minBuildAge": "1h", "rolloutSpread": "2h", "keepGenerations": 5,
            "metricsFile": "/var/lib/prometheus-node-exporter-text/hail-sys.prom",
            "pollPeriod": "30s", "activationTimeout": "30m", "realiseTimeout": "2h", "httpTimeout": "1m",
            "netrcFile": "/etc/hail/my \"net\" 100%.netrc",
            "environment": {"NIX_CONFIG": "narinfo-cache-positive-ttl = 0\nconnect-timeout = 5"},
            "extraArgs": ["--http-timeout", "2m"],
            "onSuccess": "/bin/sh -c 'echo deployed $HAIL_BUILD_ID'", "onFailure": "/usr/bin/logger hail failed",
            "hookTimeout": "30s", "confirmTimeout": "5m",
        },
        "web": {"jobUri": "https://hydra.example.org/job/infra/production/web", "profile": "web", "enable": true},
        "off": {"jobUri": "ftp://not-checked", "enable": false, "pollPeriod": "bogus"},
    })
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn a_set_with_every_setting_applies() {
    let tmp = tmp();
    let out =
        build(tmp.path(), &every_setting()).unwrap_or_else(|e| panic!("nix-build failed:\n{e}"));
    let dropins = apply_check(&out);
    for expected in [
        "Environment=\"HAIL_SYSTEM=true\"",
        "Environment=\"HAIL_ALLOW_DOWNGRADE=true\"",
        "Environment=\"NIX_CONFIG=narinfo-cache-positive-ttl = 0\\nconnect-timeout = 5\"",
        "LoadCredential=netrc:/etc/hail/my \"net\" 100%%.netrc",
        "Environment=\"HAIL_PROFILE=/nix/var/nix/profiles/system\"",
        "Environment=\"HAIL_ON_SUCCESS=/bin/sh -c 'echo deployed $HAIL_BUILD_ID'\"",
        "Environment=\"HAIL_HOOK_TIMEOUT=30s\"",
        "Environment=\"HAIL_CONFIRM_TIMEOUT=5m\"",
        "# hail@web.service.d/hail-manager.conf",
    ] {
        assert!(
            dropins.contains(expected),
            "{expected:?} not in:\n{dropins}"
        );
    }
    // The disabled entry is neither checked nor applied.
    assert!(!dropins.contains("hail@off"), "{dropins}");
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn every_instance_finds_nix_from_its_installer() {
    let tmp = tmp();
    let expr = format!(
        "(import {}/nix/manager.nix {{ hail = \"/nix/store/00000000000000000000000000000000-hail\"; \
         shell = \"/bin/sh\"; system = \"x86_64-linux\"; instances.a = \"http://h/job/p/j/a\"; }}).instancesJson",
        root().display()
    );
    let set = instance_set(tmp.path(), &expr);
    // Where Nix's own installer puts nix-env, before systemd's default PATH.
    assert_eq!(
        set["instances"]["a"]["environment"]["PATH"],
        "/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

#[test]
#[cfg_attr(
    hail_skip_nix,
    ignore = "needs root and Nix (HAIL_TEST_SKIP_MISSING=1)"
)]
fn pure_evaluation_needs_no_current_system() {
    let tmp = tmp();
    // As under flakes: no builtins.currentSystem. The system comes from the hail derivation, or
    // an error says to pass it.
    let call = |hail: &str| {
        format!(
            "(scopedImport {{ builtins = removeAttrs builtins [ \"currentSystem\" ]; }} {}/nix/manager.nix \
             {{ hail = {hail}; shell = \"/bin/sh\"; instances = {{ }}; }}).system",
            root().display()
        )
    };
    let derivation = r#"{ type = "derivation"; system = "aarch64-linux"; outPath = "/nix/store/00000000000000000000000000000000-hail"; }"#;
    let out = eval_json(tmp.path(), &call(derivation));
    assert_eq!(text(&out.stdout).trim(), "\"aarch64-linux\"");
    let out = output({
        let mut c = nix(tmp.path(), "nix-instantiate");
        c.args(["--eval", "--strict", "-E"])
            .arg(call("\"/nix/store/00000000000000000000000000000000-hail\""));
        c
    });
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pass `system`"),
        "{}",
        text(&out.stderr)
    );
}
