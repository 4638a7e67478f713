//! The NixOS module, the flake and the package expression, evaluated by nixpkgs' real module
//! system (`lib.evalModules`) with small stand-ins for the NixOS options the module sets
//! (tests/nix/eval.nix). nixpkgs' `lib` is found through `NIXPKGS_LIB` (its lib directory, or a
//! checkout containing `lib/`). Every test here is ignored, so that it shows as skipped where
//! NIXPKGS_LIB is not set (CI has no nixpkgs); `scripts/test` runs them when it is set.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

use hail_testkit::nixos::nixpkgs_lib;

/// Runs `nix-instantiate --eval --strict --json` with `args`; the JSON value, or stderr.
fn nix_eval(args: &[&str]) -> Result<Value, String> {
    let out = Command::new("nix-instantiate")
        .current_dir(root())
        .args(["--eval", "--strict", "--json"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nix-instantiate: {e}"));
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate printed JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Evaluates tests/nix/eval.nix: `entry` is "module" (nixos/module.nix) or "default"
/// (nixos/default.nix, the flake's module); `config` is a NixOS module (Nix code). NixOS's own
/// systemd option code when `NIXOS_SYSTEMD_LIB` names it, else the stand-in.
fn eval_module(_lib: &Path, entry: &str, config: &str) -> Result<Value, String> {
    eval_with(hail_testkit::nixos::systemd_lib().as_deref(), entry, config)
}

/// As [`eval_module`], with NixOS's systemd code from `systemd` (`None`: the stand-in).
fn eval_with(systemd: Option<&Path>, entry: &str, config: &str) -> Result<Value, String> {
    let out = hail_testkit::nixos::eval_command(root(), systemd)
        .args(["--argstr", "entry", entry, "--arg", "config", config])
        .output()
        .unwrap_or_else(|e| panic!("cannot run nix-instantiate: {e}"));
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate printed JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn eval_ok(lib: &Path, config: &str) -> Value {
    eval_module(lib, "module", config).unwrap_or_else(|e| panic!("evaluation failed:\n{e}"))
}

/// The messages of the assertions that fail for `config`.
fn failed_assertions(lib: &Path, config: &str) -> Vec<String> {
    let result = eval_ok(lib, config);
    serde_json::from_value(result["failedAssertions"].clone()).unwrap()
}

const HAIL: &str = "/nix/store/00000000000000000000000000000000-hail-from-pkgs";

/// The unit file of `unit` as NixOS writes it (tests/nix/eval.nix), with its settings digest
/// replaced by `DIGEST` (checked to be 16 hex digits).
fn unit_text(result: &Value, unit: &str) -> String {
    let text = result["units"][unit]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no unit {unit}: {}", result["units"]));
    text.lines()
        .map(
            |l| match l.strip_prefix("Environment=\"HAIL_UNIT_CONFIG=") {
                Some(rest) => {
                    let digest = rest.strip_suffix('"').unwrap();
                    assert!(
                        digest.len() == 16 && digest.chars().all(|c| c.is_ascii_hexdigit()),
                        "{l}"
                    );
                    "Environment=\"HAIL_UNIT_CONFIG=DIGEST\"".to_string()
                }
                None => l.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// The PATH NixOS gives an instance: Nix, then its default path for every service.
const PATH: &str = concat!(
    "/nix/store/00000000000000000000000000000000-nix/bin:",
    "/nix/store/00000000000000000000000000000000-coreutils/bin:",
    "/nix/store/00000000000000000000000000000000-findutils/bin:",
    "/nix/store/00000000000000000000000000000000-gnugrep/bin:",
    "/nix/store/00000000000000000000000000000000-gnused/bin:",
    "/nix/store/00000000000000000000000000000000-systemd/bin:",
    "/nix/store/00000000000000000000000000000000-nix/sbin:",
    "/nix/store/00000000000000000000000000000000-coreutils/sbin:",
    "/nix/store/00000000000000000000000000000000-findutils/sbin:",
    "/nix/store/00000000000000000000000000000000-gnugrep/sbin:",
    "/nix/store/00000000000000000000000000000000-gnused/sbin:",
    "/nix/store/00000000000000000000000000000000-systemd/sbin"
);

/// A service's environment without what NixOS adds (PATH) and the settings digest (checked to
/// be there).
fn own_environment(service: &Value) -> Value {
    let mut env = service["environment"].clone();
    let vars = env.as_object_mut().unwrap();
    vars.remove("HAIL_UNIT_CONFIG").expect("a digest");
    assert_eq!(vars.remove("PATH"), Some(json!(PATH)));
    env
}

/// The `HAIL_UNIT_CONFIG` digest of `unit`.
fn digest(result: &Value, unit: &str) -> String {
    result["services"][unit]["environment"]["HAIL_UNIT_CONFIG"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn one_instance_is_a_complete_unit_made_from_the_template() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{ services.hail.web.jobUri = "https://hydra.example.org/job/p/j/web"; }"#,
    );
    assert_eq!(result["failedAssertions"], json!([]));
    // A unit of its own, not a drop-in on the template.
    assert_eq!(
        result["services"]["hail@web"]["overrideStrategy"],
        "asDropinIfExists"
    );
    assert_eq!(
        result["units"]["hail@web.service"]["wantedBy"],
        json!(["multi-user.target"])
    );
    // Every line of the template but those the instance replaces is in the unit, as written.
    let template = std::fs::read_to_string(root().join("systemd/hail@.service")).unwrap();
    let text = unit_text(&result, "hail@web.service");
    for line in template.lines() {
        let replaced = [
            "Environment=",
            "EnvironmentFile=",
            "ExecStart=",
            "WantedBy=",
        ]
        .iter()
        .any(|k| line.starts_with(k));
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') || replaced {
            continue;
        }
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    // The module's default profile is the template's, so both kinds of install agree.
    let template_profile = template
        .lines()
        .find_map(|l| l.strip_prefix("Environment=HAIL_PROFILE="))
        .expect("the template sets HAIL_PROFILE")
        .replace("%i", "web");
    assert!(text.contains(&format!(
        "Environment=\"HAIL_PROFILE={template_profile}\"\n"
    )));
    assert_eq!(
        text,
        format!(
            r#"[Unit]
After=network-online.target
Description=hail deployment of %i
StartLimitBurst=5
StartLimitIntervalSec=10min
Wants=network-online.target

[Service]
Environment="HAIL_JOB_URI=https://hydra.example.org/job/p/j/web"
Environment="HAIL_PROFILE=/nix/var/nix/profiles/hail/web"
Environment="HAIL_UNIT_CONFIG=DIGEST"
Environment="NIX_REMOTE=local"
Environment="PATH={PATH}"
X-ReloadIfChanged=true
X-StopIfChanged=false
ExecReload=/bin/sh -c 'kill -HUP $$MAINPID'
ExecStart="{HAIL}/bin/hail"
KillMode=mixed
LoadCredential=netrc:hail-%i.netrc
LockPersonality=yes
NotifyAccess=main
Restart=on-failure
RestartPreventExitStatus=2 3
RestartSec=5s
RestrictRealtime=yes
StateDirectory=hail/%i
SystemCallArchitectures=native
SystemCallErrorNumber=EPERM
SystemCallFilter=~@cpu-emulation @obsolete @raw-io
TimeoutStartSec=11min
TimeoutStopSec=90s
Type=notify
WatchdogSec=60s

[Install]
WantedBy=multi-user.target"#
        )
    );
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn no_environment_file_overrides_the_configuration() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{ services.hail.web.jobUri = "https://h/job/p/j/a"; }"#,
    );
    let text = unit_text(&result, "hail@web.service");
    assert!(!text.contains("EnvironmentFile"), "{text}");
    // The template, for installs by hand, still reads it.
    let template = std::fs::read_to_string(root().join("systemd/hail@.service")).unwrap();
    assert!(template.contains("\nEnvironmentFile=-/etc/hail/%i.env\n"));
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn the_description_names_the_instance_as_written() {
    // %I would unescape `web-prod` into `web/prod`.
    let template = std::fs::read_to_string(root().join("systemd/hail@.service")).unwrap();
    assert!(template.contains("\nDescription=hail deployment of %i\n"));
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{ services.hail.web-prod.jobUri = "https://h/job/p/j/a"; }"#,
    );
    let text = unit_text(&result, "hail@web-prod.service");
    assert!(
        text.contains("\nDescription=hail deployment of %i\n"),
        "{text}"
    );
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn hostile_values_are_escaped_for_the_unit_file() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{
          services.hail.web = {
            jobUri = "https://h/job/p/j/a%2Fb";
            netrcFile = "/etc/hail/100%.netrc";
            environment.DEMO = "50% \"q\" $HOME \\ x\nExecStartPre=/bin/false";
            extraArgs = [ "--x" "a\nExecStartPre=/bin/false" "%n" ];
          };
        }"#,
    );
    assert_eq!(result["failedAssertions"], json!([]));
    let text = unit_text(&result, "hail@web.service");
    assert!(
        text.contains("\nEnvironment=\"HAIL_JOB_URI=https://h/job/p/j/a%%2Fb\"\n"),
        "{text}"
    );
    assert!(
        text.contains("\nLoadCredential=netrc:/etc/hail/100%%.netrc\n"),
        "{text}"
    );
    assert!(
        text.contains(r#"Environment="DEMO=50%% \"q\" $HOME \\ x\nExecStartPre=/bin/false""#),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"ExecStart="{HAIL}/bin/hail" "--x" "a\nExecStartPre=/bin/false" "%%n""#
        )),
        "{text}"
    );
    // No value started a line of its own.
    assert!(
        !text.lines().any(|l| l.starts_with("ExecStartPre")),
        "{text}"
    );
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn what_cannot_be_escaped_is_refused_naming_the_option() {
    let lib = nixpkgs_lib();
    let cases = [
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; netrcFile = "/etc/netrc\nExecStartPre=/bin/false"; }; }"#,
            "services.hail.web.netrcFile",
        ),
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; profile = "/p\nExecStartPre=/bin/false"; }; }"#,
            "services.hail.web.profile",
        ),
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; environment."A\nB" = "x"; }; }"#,
            "services.hail.web.environment",
        ),
    ];
    for (config, option) in cases {
        // Refused by the option's type or by an assertion; either names the option.
        let refused = match eval_module(&lib, "module", config) {
            Ok(v) => v["failedAssertions"].to_string(),
            Err(stderr) => stderr,
        };
        assert!(refused.contains(option), "{config}: {refused}");
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn credentials_in_the_job_uri_are_refused() {
    let lib = nixpkgs_lib();
    let failed = failed_assertions(
        &lib,
        r#"{
          services.hail.secret.jobUri = "https://user:secret@h/job/p/j/a";
          services.hail.user.jobUri = "https://user@h/job/p/j/b";
          services.hail.fine.jobUri = "https://h/job/p/j/c@d";
        }"#,
    );
    assert_eq!(failed.len(), 2, "{failed:#?}");
    for name in ["secret", "user"] {
        assert!(
            failed
                .iter()
                .any(|m| m.starts_with(&format!("services.hail.{name}.jobUri"))
                    && m.contains("netrcFile")),
            "{name}: {failed:#?}"
        );
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn a_changed_instance_is_reloaded_and_its_digest_changes() {
    let lib = nixpkgs_lib();
    let config = |uri: &str, restart: bool| {
        format!(
            r#"{{
              services.hail.a = {{ jobUri = "{uri}"; restartIfChanged = {restart}; }};
              services.hail.b.jobUri = "https://h/job/p/j/b";
            }}"#
        )
    };
    let one = eval_ok(&lib, &config("https://h/job/p/j/a", false));
    let two = eval_ok(&lib, &config("https://h/job/p/j/a2", false));
    assert_ne!(digest(&one, "hail@a"), digest(&two, "hail@a"));
    assert_eq!(digest(&one, "hail@b"), digest(&two, "hail@b"));
    assert_ne!(digest(&one, "hail@a"), digest(&one, "hail@b"));
    let a = &one["services"]["hail@a"];
    assert_eq!(
        (
            &a["reloadIfChanged"],
            &a["restartIfChanged"],
            &a["stopIfChanged"]
        ),
        (&json!(true), &json!(false), &json!(false))
    );
    // Chosen restarts: the switch restarts it after the activation, no reload.
    let restarting = eval_ok(&lib, &config("https://h/job/p/j/a", true));
    let text = unit_text(&restarting, "hail@a.service");
    assert!(!text.contains("X-ReloadIfChanged"), "{text}");
    assert!(!text.contains("X-RestartIfChanged"), "{text}");
    assert!(text.contains("\nX-StopIfChanged=false\n"), "{text}");
    // A new package is a new digest too.
    let package = eval_ok(
        &lib,
        r#"{ services.hail.a.jobUri = "https://h/job/p/j/a";
             services.hail.a.package = { type = "derivation"; name = "other"; outPath = "/nix/store/11111111111111111111111111111111-other"; };
             services.hail.b.jobUri = "https://h/job/p/j/b"; }"#,
    );
    assert_ne!(digest(&one, "hail@a"), digest(&package, "hail@a"));
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn each_instance_runs_its_own_package() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"let other = { type = "derivation"; name = "hail-other"; outPath = "/nix/store/11111111111111111111111111111111-hail-other"; }; in {
          services.hail.a = { jobUri = "https://h/job/p/j/a"; package = other; };
          services.hail.b.jobUri = "https://h/job/p/j/b";
          services.hail.c.jobUri = "https://h/job/p/j/c";
        }"#,
    );
    let exec = |unit: &str| result["services"][unit]["serviceConfig"]["ExecStart"].clone();
    assert_eq!(
        exec("hail@a"),
        json!("\"/nix/store/11111111111111111111111111111111-hail-other/bin/hail\"")
    );
    assert_eq!(exec("hail@b"), json!(format!("\"{HAIL}/bin/hail\"")));
    // The template (for a manager's instances only) comes from the package most instances run,
    // not from the first instance's; so does the journal catalog.
    assert_eq!(result["packages"], json!(["hail-from-pkgs"]));
    let catalog = &result["services"]["hail-catalog"]["serviceConfig"]["ExecStart"];
    assert!(catalog[0].as_str().unwrap().contains(HAIL), "{catalog}");
}

/// NixOS's journalctl reads catalogs only from systemd's own store path and from
/// /usr/local/lib/systemd/catalog/: the module copies the package's there and rebuilds the index,
/// at boot and when a switch brings a changed catalog.
#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn the_journal_catalog_is_installed_where_nixos_journalctl_reads_it() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{ services.hail.web.jobUri = "https://hydra.example.org/job/p/j/web"; }"#,
    );
    let catalog = format!("{HAIL}/lib/systemd/catalog/hail.catalog");
    let store = |name: &str| format!("/nix/store/00000000000000000000000000000000-{name}");
    let unit = unit_text(&result, "hail-catalog.service");
    for line in [
        "Type=oneshot".to_string(),
        "RemainAfterExit=true".to_string(),
        format!("ConditionPathExists={catalog}"),
        format!(
            "ExecStart={}/bin/install -D -m 644 {catalog} /usr/local/lib/systemd/catalog/hail.catalog",
            store("coreutils")
        ),
        format!(
            "ExecStart={}/bin/journalctl --update-catalog",
            store("systemd")
        ),
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in\n{unit}");
    }
    assert_eq!(
        result["units"]["hail-catalog.service"]["wantedBy"],
        json!(["multi-user.target"])
    );
    // A switch to a package with another catalog runs it again.
    assert_eq!(
        result["services"]["hail-catalog"]["restartTriggers"],
        json!([catalog])
    );
    assert!(unit.contains("\nX-Restart-Triggers="), "{unit}");
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn two_instances_with_overrides() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{
          services.hail.web = {
            jobUri = "https://hydra.example.org/job/p/j/web";
            profile = "web";
            netrcFile = "/etc/hail/netrc";
            pollPeriod = "30s";
            activationTimeout = "30m";
            realiseTimeout = "2h";
            httpTimeout = "250ms";
            environment = { NIX_CONFIG = "narinfo-cache-positive-ttl = 0"; RUST_LOG = "debug"; };
            extraArgs = [ "--flag" "100%" "$HOME" "say \"hi\"" ];
            restartIfChanged = true;
          };
          services.hail.worker = {
            jobUri = "http://hydra.internal:3000/job/p/j/worker";
            pollPeriod = 10;
            environment.NIX_REMOTE = "daemon";
          };
        }"#,
    );
    assert_eq!(result["failedAssertions"], json!([]));
    assert_eq!(
        result["packages"],
        json!(["hail-from-pkgs"]),
        "one template for both instances"
    );
    let web = &result["services"]["hail@web"];
    assert_eq!(
        own_environment(web),
        json!({
            "HAIL_JOB_URI": "https://hydra.example.org/job/p/j/web",
            "HAIL_PROFILE": "web",
            "HAIL_POLL_PERIOD": "30s",
            "HAIL_ACTIVATION_TIMEOUT": "30m",
            "HAIL_REALISE_TIMEOUT": "2h",
            "HAIL_HTTP_TIMEOUT": "250ms",
            "NIX_CONFIG": "narinfo-cache-positive-ttl = 0",
            "RUST_LOG": "debug",
            "NIX_REMOTE": "local",
        })
    );
    let text = unit_text(&result, "hail@web.service");
    for line in [
        "LoadCredential=netrc:/etc/hail/netrc".to_string(),
        // Start-up activation (30m) plus a minute.
        "TimeoutStartSec=1860s".to_string(),
        // Quoted words; systemd's % specifiers and $ expansion escaped.
        format!(r#"ExecStart="{HAIL}/bin/hail" "--flag" "100%%" "$$HOME" "say \"hi\"""#),
    ] {
        assert_eq!(
            text.lines()
                .filter(|l| l.split('=').next() == line.split('=').next())
                .collect::<Vec<_>>(),
            [line.as_str()],
            "{text}"
        );
    }
    assert_eq!(web["restartIfChanged"], true);
    assert_eq!(web["stopIfChanged"], false);

    let worker = &result["services"]["hail@worker"];
    assert_eq!(
        own_environment(worker),
        json!({
            "HAIL_JOB_URI": "http://hydra.internal:3000/job/p/j/worker",
            "HAIL_PROFILE": "/nix/var/nix/profiles/hail/worker",
            "HAIL_POLL_PERIOD": "10",
            "NIX_REMOTE": "daemon",
        })
    );
    assert!(
        unit_text(&result, "hail@worker.service")
            .contains("\nLoadCredential=netrc:hail-%i.netrc\n"),
        "no netrc: the template's credential"
    );
    assert_eq!(worker["restartIfChanged"], false);
    assert!(
        unit_text(&result, "hail@worker.service").contains("\nTimeoutStartSec=11min\n"),
        "the template's default"
    );
    // The two instances, and the journal catalog.
    assert_eq!(result["services"].as_object().unwrap().len(), 3);
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn disabled_instances_have_no_unit() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{
          services.hail.web = { enable = false; jobUri = ""; };
          services.hail.worker.jobUri = "https://hydra.example.org/job/p/j/worker";
        }"#,
    );
    let units: Vec<_> = result["services"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(units, ["hail-catalog", "hail@worker"]);
    assert_eq!(
        result["failedAssertions"],
        json!([]),
        "a disabled instance is not checked"
    );

    let result = eval_ok(
        &lib,
        r#"{ services.hail.web = { enable = false; jobUri = "https://h/job/p/j/w"; }; }"#,
    );
    assert_eq!(result["services"], json!({}));
    assert_eq!(
        result["packages"],
        json!([]),
        "nothing enabled, no template installed"
    );

    let result = eval_ok(&lib, "{ }");
    assert_eq!(result["services"], json!({}));
    assert_eq!(result["packages"], json!([]));
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn empty_or_non_http_job_uri_is_refused() {
    let lib = nixpkgs_lib();
    let failed = failed_assertions(
        &lib,
        r#"{
          services.hail.empty.jobUri = "";
          services.hail.ftp.jobUri = "ftp://hydra.example.org/job/p/j/x";
          services.hail.spaced.jobUri = "https://hydra.example.org/job/p/j/x y";
          services.hail.good.jobUri = "https://hydra.example.org/job/p/j/good";
        }"#,
    );
    assert_eq!(failed.len(), 3, "{failed:#?}");
    assert!(
        failed.contains(&"services.hail.empty.jobUri must not be empty.".to_string()),
        "{failed:#?}"
    );
    for name in ["ftp", "spaced"] {
        assert!(
            failed.iter().any(
                |m| m.starts_with(&format!("services.hail.{name}.jobUri = "))
                    && m.contains("http://")
            ),
            "{name}: {failed:#?}"
        );
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn two_instances_on_one_profile_are_refused() {
    let lib = nixpkgs_lib();
    // A bare name and the absolute path it stands for are the same profile.
    let failed = failed_assertions(
        &lib,
        r#"{
          services.hail.a = { jobUri = "https://h/job/p/j/a"; profile = "shared"; };
          services.hail.b = { jobUri = "https://h/job/p/j/b"; profile = "/nix/var/nix/profiles/shared"; };
          services.hail.c.jobUri = "https://h/job/p/j/c";
          services.hail.off = { enable = false; jobUri = "https://h/job/p/j/off"; profile = "shared"; };
        }"#,
    );
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(failed[0].starts_with("services.hail.a.profile: /nix/var/nix/profiles/shared is also the profile of services.hail.b;"), "{failed:#?}");
    assert!(failed[1].starts_with("services.hail.b.profile: /nix/var/nix/profiles/shared is also the profile of services.hail.a;"), "{failed:#?}");
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn profile_sharing_is_found_through_slashes_and_dots() {
    let lib = nixpkgs_lib();
    let failed = failed_assertions(
        &lib,
        r#"{
          services.hail.a = { jobUri = "https://h/job/p/j/a"; profile = "/srv/p/"; };
          services.hail.b = { jobUri = "https://h/job/p/j/b"; profile = "/srv/./p"; };
          services.hail.c = { jobUri = "https://h/job/p/j/c"; profile = "/nix/var/nix/profiles//hail/./e/"; };
          services.hail.d = { jobUri = "https://h/job/p/j/d"; profile = "/srv/q"; };
          services.hail.e.jobUri = "https://h/job/p/j/e";
        }"#,
    );
    assert_eq!(failed.len(), 4, "{failed:#?}");
    assert!(
        failed[0]
            .starts_with("services.hail.a.profile: /srv/p is also the profile of services.hail.b;"),
        "{failed:#?}"
    );
    assert!(
        failed[1]
            .starts_with("services.hail.b.profile: /srv/p is also the profile of services.hail.a;"),
        "{failed:#?}"
    );
    // e's default profile is /nix/var/nix/profiles/hail/e.
    assert!(failed[2].starts_with("services.hail.c.profile: /nix/var/nix/profiles/hail/e is also the profile of services.hail.e;"), "{failed:#?}");
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn netrc_in_the_store_is_refused() {
    let lib = nixpkgs_lib();
    let failed = failed_assertions(
        &lib,
        r#"{
          services.hail.path.jobUri = "https://h/job/p/j/a";
          services.hail.path.netrcFile = "/nix/store/00000000000000000000000000000000-netrc";
          services.hail.inside.jobUri = "https://h/job/p/j/b";
          services.hail.inside.netrcFile = "/nix/store/00000000000000000000000000000000-source/netrc";
          services.hail.fine.jobUri = "https://h/job/p/j/c";
          services.hail.fine.netrcFile = "/etc/hail/netrc";
        }"#,
    );
    assert_eq!(failed.len(), 2, "{failed:#?}");
    for name in ["inside", "path"] {
        assert!(
            failed.iter().any(
                |m| m.starts_with(&format!("services.hail.{name}.netrcFile = "))
                    && m.contains("every user")
            ),
            "{name}: {failed:#?}"
        );
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn profiles_must_be_names_or_absolute_paths() {
    let lib = nixpkgs_lib();
    let failed = failed_assertions(
        &lib,
        r#"{
          services.hail.up = { jobUri = "https://h/job/p/j/a"; profile = "../etc"; };
          services.hail.rel = { jobUri = "https://h/job/p/j/b"; profile = "a/b"; };
          services.hail.name = { jobUri = "https://h/job/p/j/c"; profile = "web.prod"; };
          services.hail.abs = { jobUri = "https://h/job/p/j/d"; profile = "/srv/profiles/d"; };
        }"#,
    );
    assert_eq!(failed.len(), 2, "{failed:#?}");
    for (name, profile) in [("rel", "a/b"), ("up", "../etc")] {
        assert!(
            failed.contains(&format!(
                "services.hail.{name}.profile = \"{profile}\": expected a profile name or an absolute path."
            )),
            "{name}: {failed:#?}"
        );
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn hail_variables_in_environment_are_refused() {
    let lib = nixpkgs_lib();
    let failed = failed_assertions(
        &lib,
        r#"{
          services.hail.web.jobUri = "https://h/job/p/j/a";
          services.hail.web.environment = { HAIL_ONESHOT = "1"; HAIL_JOB_URI = "x"; RUST_LOG = "debug"; };
        }"#,
    );
    assert_eq!(
        failed,
        [
            "services.hail.web.environment: HAIL_JOB_URI, HAIL_ONESHOT are set by the instance's own settings; use those instead."
        ]
    );
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn instance_names_needing_escaping_are_refused() {
    let lib = nixpkgs_lib();
    let too_long = "x".repeat(201);
    let longest = "y".repeat(200);
    let failed = failed_assertions(
        &lib,
        &format!(
            r#"{{
              services.hail."a b".jobUri = "https://h/job/p/j/a";
              services.hail."x/y".jobUri = "https://h/job/p/j/b";
              services.hail."-lead".jobUri = "https://h/job/p/j/c";
              services.hail."_lead".jobUri = "https://h/job/p/j/d";
              services.hail."{too_long}".jobUri = "https://h/job/p/j/e";
              services.hail."{longest}".jobUri = "https://h/job/p/j/f";
              services.hail."web-1.prod_a".jobUri = "https://h/job/p/j/g";
              services.hail."0web".jobUri = "https://h/job/p/j/h";
            }}"#
        ),
    );
    assert_eq!(failed.len(), 5, "{failed:#?}");
    for name in ["-lead", "_lead", "a b", "x/y", too_long.as_str()] {
        assert!(
            failed.iter().any(|m| m.starts_with(&format!(
                "services.hail.{name}: \"{name}\" cannot name a hail instance"
            ))),
            "{name}: {failed:#?}"
        );
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn wrong_types_fail_evaluation_naming_the_option() {
    let lib = nixpkgs_lib();
    let cases = [
        // A path literal would be copied into the world-readable store.
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; netrcFile = ./netrc; }; }"#,
            "services.hail.web.netrcFile",
        ),
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; netrcFile = "etc/netrc"; }; }"#,
            "services.hail.web.netrcFile",
        ),
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; pollPeriod = "5x"; }; }"#,
            "services.hail.web.pollPeriod",
        ),
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; pollPeriod = "0"; }; }"#,
            "services.hail.web.pollPeriod",
        ),
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; pollPeriod = 0; }; }"#,
            "services.hail.web.pollPeriod",
        ),
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; activationTimeout = "10"; }; }"#,
            "services.hail.web.activationTimeout",
        ),
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; activationTimeout = "0s"; }; }"#,
            "services.hail.web.activationTimeout",
        ),
        (
            r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; httpTimeout = "00ms"; }; }"#,
            "services.hail.web.httpTimeout",
        ),
        (
            r#"{ services.hail.web.pollPeriod = "5m"; }"#,
            "services.hail.web.jobUri",
        ),
    ];
    for (config, option) in cases {
        match eval_module(&lib, "module", config) {
            Ok(v) => panic!("{config} evaluated: {v}"),
            Err(stderr) => assert!(
                stderr.contains(option),
                "{config}: error does not name {option}:\n{stderr}"
            ),
        }
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn flake_module_defaults_package_to_this_repository() {
    let lib = nixpkgs_lib();
    let result = eval_module(
        &lib,
        "default",
        r#"{ pkgs, ... }: {
          services.hail.web.jobUri = "https://h/job/p/j/a";
          services.hail.pinned = { jobUri = "https://h/job/p/j/b"; package = pkgs.hail; };
        }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The stand-in callPackage names its result after the file it was given.
    assert_eq!(
        result["instancePackages"],
        json!({ "web": "hail-from-package.nix", "pinned": "hail-from-pkgs" })
    );
    // One template only, whatever the packages: NixOS links every package's unit files into one
    // directory, where a second hail@.service would collide.
    let packages: Vec<String> = serde_json::from_value(result["packages"].clone()).unwrap();
    assert_eq!(packages.len(), 1, "{packages:?}");
    // Each instance runs its own package, whichever template systemd picked.
    let exec = |unit: &str| result["services"][unit]["serviceConfig"]["ExecStart"].clone();
    assert_eq!(
        exec("hail@web"),
        json!("\"/nix/store/00000000000000000000000000000000-hail-from-package.nix/bin/hail\"")
    );
    assert_eq!(exec("hail@pinned"), json!(format!("\"{HAIL}/bin/hail\"")));
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn flake_outputs() {
    let lib = nixpkgs_lib();
    // nixpkgs stand-in: its real lib, and packages that must not be needed to list the outputs.
    let expr = format!(
        r#"
        let
          lib = import {lib};
          flake = import ./flake.nix;
          nixpkgs = {{
            inherit lib;
            legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: throw "no nixpkgs for ${{system}} here");
          }};
          self = flake.outputs {{ inherit self nixpkgs; }};
          final = {{ callPackage = file: _: "hail from ${{baseNameOf file}}"; }};
        in {{
          outputs = builtins.attrNames self;
          systems = lib.mapAttrs (_: builtins.attrNames) {{ inherit (self) packages checks devShells formatter; }};
          packages = builtins.attrNames self.packages.x86_64-linux;
          checks = builtins.attrNames self.checks.aarch64-linux;
          overlay = (self.overlays.default final {{ }}).hail;
          module = map baseNameOf self.nixosModules.default.imports;
          sameModule = self.nixosModules.hail == self.nixosModules.default;
          lib = builtins.attrNames self.lib;
          managerFile = builtins.pathExists ./nix/manager.nix;
          managerIsFunction = builtins.pathExists ./nix/manager.nix && builtins.isFunction self.lib.mkManagerProfile;
        }}"#,
        lib = lib.display()
    );
    let result = nix_eval(&["-E", &expr]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        result["outputs"],
        json!([
            "checks",
            "devShells",
            "formatter",
            "lib",
            "nixosModules",
            "overlays",
            "packages"
        ])
    );
    for output in ["packages", "checks", "devShells", "formatter"] {
        assert_eq!(
            result["systems"][output],
            json!(["aarch64-linux", "x86_64-linux"]),
            "{output}"
        );
    }
    assert_eq!(result["packages"], json!(["default", "hail"]));
    assert_eq!(
        result["checks"],
        json!([
            "clippy",
            "fmt",
            "monitoring",
            "package",
            "unit",
            "vm-basic",
            "vm-system"
        ])
    );
    assert_eq!(result["overlay"], "hail from package.nix");
    assert_eq!(result["module"], json!(["nixos"]));
    assert_eq!(result["sameModule"], true);
    assert_eq!(result["lib"], json!(["mkManagerProfile"]));
    assert_eq!(
        result["managerFile"], true,
        "flake.nix exposes lib.mkManagerProfile from nix/manager.nix, which is missing"
    );
    assert_eq!(
        result["managerIsFunction"], true,
        "lib.mkManagerProfile is not a function"
    );
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn package_builds_only_hail_with_its_unit() {
    let lib = nixpkgs_lib();
    // rustPlatform stand-in: returns its arguments (a native build: the man page is made). `src` is left out: lib.fileset needs a newer
    // Nix than some test machines have.
    let expr = format!(
        r#"
        let
          lib = import {lib};
          args = import ./nix/package.nix {{
            inherit lib;
            rustPlatform.buildRustPackage = a: a;
            installShellFiles = "installShellFiles";
            stdenv = {{ buildPlatform.canExecute = _: true; hostPlatform = {{ }}; }};
          }};
        in {{
          inherit (args) pname version cargoBuildFlags doCheck postInstall;
          lockFile = baseNameOf args.cargoLock.lockFile;
          mainProgram = args.meta.mainProgram;
        }}"#,
        lib = lib.display()
    );
    let result = nix_eval(&["-E", &expr]).unwrap_or_else(|e| panic!("{e}"));
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let version = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("Cargo.toml version");
    assert_eq!(result["pname"], "hail");
    assert_eq!(result["version"], version);
    assert_eq!(result["cargoBuildFlags"], json!(["-p", "hail"]));
    assert_eq!(result["lockFile"], "Cargo.lock");
    assert_eq!(result["mainProgram"], "hail");
    let post_install = result["postInstall"].as_str().unwrap();
    assert!(
        post_install.contains("$out/lib/systemd/system/hail@.service"),
        "{post_install}"
    );
    assert!(
        post_install.contains("--replace-fail /usr/local/bin/hail $out/bin/hail"),
        "{post_install}"
    );
    // Every file of monitoring/ is installed where the documentation says.
    assert!(
        post_install.contains("-t $out/share/hail/monitoring"),
        "{post_install}"
    );
    for file in std::fs::read_dir(root().join("monitoring")).unwrap() {
        let name = file.unwrap().file_name().into_string().unwrap();
        assert!(
            post_install.contains(&format!("monitoring/{name}")),
            "monitoring/{name} is not installed: {post_install}"
        );
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn the_option_reference_is_up_to_date() {
    let lib = nixpkgs_lib();
    let out = Command::new(root().join("scripts/gen-options-doc"))
        .arg("--check")
        .env("NIXPKGS_LIB", &lib)
        .output()
        .expect("run scripts/gen-options-doc");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn start_timeout_follows_the_activation_timeout() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{
          services.hail.a = { jobUri = "https://h/job/p/j/a"; activationTimeout = "1500ms"; };
          services.hail.b = { jobUri = "https://h/job/p/j/b"; activationTimeout = "2h"; };
          services.hail.c = { jobUri = "https://h/job/p/j/c"; activationTimeout = "090s"; };
        }"#,
    );
    let timeout = |unit: &str| result["services"][unit]["serviceConfig"]["TimeoutStartSec"].clone();
    assert_eq!(timeout("hail@a"), "62s");
    assert_eq!(timeout("hail@b"), "7260s");
    assert_eq!(timeout("hail@c"), "150s");
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn every_option_has_a_description_and_an_example() {
    let lib = nixpkgs_lib();
    let expr = format!(
        r#"
        let
          lib = import {lib};
          evaluated = lib.evalModules {{
            modules = [ ./nixos/module.nix {{ _module.args.pkgs = {{ }}; _module.check = false; }} ];
          }};
          docs = lib.filter (o: o.visible && !o.internal && lib.hasPrefix "services.hail" o.name) (lib.optionAttrSetToDocList evaluated.options);
        in {{
          names = map (o: o.name) docs;
          undocumented = map (o: o.name) (lib.filter (o: o.description or null == null || !(o ? example)) docs);
        }}"#,
        lib = lib.display()
    );
    let result = nix_eval(&["-E", &expr]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        result["names"].as_array().unwrap().len() > 10,
        "{}",
        result["names"]
    );
    assert_eq!(result["undocumented"], json!([]));
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn environment_path_is_refused_with_a_pointer_to_path() {
    let lib = nixpkgs_lib();
    let result = eval_module(
        &lib,
        "module",
        r#"{
          services.hail.web = {
            jobUri = "https://h/job/p/j/a";
            environment.PATH = "/opt/bin";
          };
        }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let failed = result["failedAssertions"].to_string();
    assert!(
        failed.contains("services.hail.web.environment.PATH"),
        "{failed}"
    );
    assert!(failed.contains(".path instead"), "{failed}");
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn state_health_and_rollout_options_reach_hail() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{
          services.hail.web = {
            jobUri = "https://hydra.example.org/job/p/j/web";
            metricsFile = "/var/lib/prometheus-node-exporter-text/hail-web.prom";
            keepGenerations = 0;
            healthCheck = "/run/current-system/sw/bin/curl -fsS 'http://127.0.0.1:8080/health?full=1'";
            healthInterval = "10s";
            healthTimeout = "5m";
            minBuildAge = "2h";
            rolloutSpread = "0s";
            allowDowngrade = true;
            gate = "evaluation";
            gateDepth = 20;
          };
          services.hail.plain.jobUri = "https://hydra.example.org/job/p/j/plain";
        }"#,
    );
    assert_eq!(result["failedAssertions"], json!([]));
    let env = &result["services"]["hail@web"]["environment"];
    for (var, value) in [
        (
            "HAIL_METRICS_FILE",
            "/var/lib/prometheus-node-exporter-text/hail-web.prom",
        ),
        ("HAIL_KEEP_GENERATIONS", "0"),
        (
            "HAIL_HEALTH_CHECK",
            "/run/current-system/sw/bin/curl -fsS 'http://127.0.0.1:8080/health?full=1'",
        ),
        ("HAIL_HEALTH_INTERVAL", "10s"),
        ("HAIL_HEALTH_TIMEOUT", "5m"),
        ("HAIL_MIN_BUILD_AGE", "2h"),
        ("HAIL_ROLLOUT_SPREAD", "0s"),
        ("HAIL_ALLOW_DOWNGRADE", "true"),
        ("HAIL_GATE", "evaluation"),
        ("HAIL_GATE_DEPTH", "20"),
    ] {
        assert_eq!(env[var], value, "{var}: {env:#}");
    }
    // Unset options leave hail's defaults alone.
    let plain = result["services"]["hail@plain"]["environment"]
        .as_object()
        .unwrap();
    for var in [
        "HAIL_METRICS_FILE",
        "HAIL_HEALTH_CHECK",
        "HAIL_ALLOW_DOWNGRADE",
        "HAIL_KEEP_GENERATIONS",
    ] {
        assert!(!plain.contains_key(var), "{var}: {plain:#?}");
    }
    let refused = failed_assertions(
        &lib,
        r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; metricsFile = "relative.prom"; minBuildAge = "soon"; }; }"#,
    );
    assert!(
        refused.iter().any(|m| m.contains("metricsFile"))
            && refused.iter().any(|m| m.contains("minBuildAge")),
        "{refused:#?}"
    );
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn system_instances_set_the_system_profile_and_their_options() {
    let lib = nixpkgs_lib();
    let result = eval_ok(
        &lib,
        r#"{
          services.hail.os = {
            jobUri = "https://hydra.example.org/job/p/j/os";
            system = true;
            switchAction = "boot";
            reboot = "when-needed";
            rebootWindow = "23:30-01:00";
          };
        }"#,
    );
    assert_eq!(result["failedAssertions"], json!([]));
    let env = &result["services"]["hail@os"]["environment"];
    for (var, value) in [
        ("HAIL_SYSTEM", "true"),
        ("HAIL_PROFILE", "/nix/var/nix/profiles/system"),
        ("HAIL_SWITCH_ACTION", "boot"),
        ("HAIL_REBOOT", "when-needed"),
        ("HAIL_REBOOT_WINDOW", "23:30-01:00"),
    ] {
        assert_eq!(env[var], value, "{var}: {env:#}");
    }
    let refused = failed_assertions(
        &lib,
        r#"{ services.hail.web = { jobUri = "https://h/job/p/j/a"; rebootWindow = "2am-4am"; reboot = "when-needed"; }; }"#,
    );
    assert!(
        refused.iter().any(|m| m.contains("rebootWindow: expected"))
            && refused.iter().any(|m| m.contains("need system = true")),
        "{refused:#?}"
    );
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn nixos_checks_every_services_type_and_restart() {
    // The checks NixOS applies to each service, which the template's values must pass: a list
    // (what the module once handed on) is refused like an unknown value.
    for (setting, value) in [
        ("Type", r#"[ "notify" ]"#),
        ("Type", r#""notified""#),
        ("Restart", r#"[ "on-failure" ]"#),
        ("Restart", r#""sometimes""#),
    ] {
        let config = format!("{{ systemd.services.other.serviceConfig.{setting} = {value}; }}");
        let error = eval_module(&nixpkgs_lib(), "module", &config)
            .map(|v| v.to_string())
            .expect_err(&config);
        assert!(
            error.contains(&format!(
                "Systemd Service field `{setting}' cannot have value"
            )) && error.contains("is not of type `attribute set of (systemd option)'"),
            "{config}: {error}"
        );
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn an_instances_own_after_wants_and_wanted_by_add_to_the_templates() {
    let result = eval_ok(
        &nixpkgs_lib(),
        r#"{
          services.hail.web.jobUri = "https://h/job/p/j/web";
          systemd.services."hail@web" = {
            after = [ "vpn.service" ];
            wants = [ "vpn.service" ];
            requires = [ "vpn.service" ];
            wantedBy = [ "vpn.service" ];
          };
        }"#,
    );
    let text = unit_text(&result, "hail@web.service");
    for line in [
        "After=network-online.target vpn.service",
        "Wants=network-online.target vpn.service",
        "Requires=vpn.service",
        "WantedBy=multi-user.target vpn.service",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn an_operators_unit_settings_win_over_the_templates() {
    let result = eval_ok(
        &nixpkgs_lib(),
        r#"{
          services.hail.web.jobUri = "https://h/job/p/j/web";
          systemd.services."hail@web" = {
            description = "deploys web";
            startLimitBurst = 10;
            serviceConfig = { Restart = "always"; WatchdogSec = "5min"; LoadCredential = [ "other:/etc/other" ]; };
          };
        }"#,
    );
    let text = unit_text(&result, "hail@web.service");
    for (key, value) in [
        ("Description", "deploys web"),
        ("StartLimitBurst", "10"),
        ("Restart", "always"),
        ("WatchdogSec", "5min"),
        ("LoadCredential", "other:/etc/other"),
    ] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{key}=")))
            .collect();
        assert_eq!(lines, [format!("{key}={value}")], "{text}");
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn the_digest_covers_what_nixos_writes_into_the_unit() {
    let lib = nixpkgs_lib();
    let with = |extra: &str| {
        let result = eval_ok(
            &lib,
            &format!(
                r#"{{ services.hail.web.jobUri = "https://h/job/p/j/web";
                     services.hail.other.jobUri = "https://h/job/p/j/other"; {extra} }}"#
            ),
        );
        (digest(&result, "hail@web"), digest(&result, "hail@other"))
    };
    let package = r#"{ type = "derivation"; name = "tool"; outPath = "/nix/store/11111111111111111111111111111111-tool"; }"#;
    let (web, other) = with("");
    assert_eq!(with(""), (web.clone(), other.clone()), "deterministic");
    for change in [
        format!(r#"systemd.services."hail@web".path = [ {package} ];"#),
        format!(r#"systemd.package = {package};"#),
        r#"systemd.globalEnvironment.TZ = "UTC";"#.to_string(),
        r#"systemd.services."hail@web".environment.RUST_LOG = "debug";"#.to_string(),
        r#"services.hail.web.environment.RUST_LOG = "debug";"#.to_string(),
        r#"systemd.services."hail@web".serviceConfig.WatchdogSec = "5min";"#.to_string(),
        r#"services.hail.web.netrcFile = "/etc/hail/netrc";"#.to_string(),
        r#"services.hail.web.extraArgs = [ "--http-timeout" "2m" ];"#.to_string(),
        r#"systemd.services."hail@web".restartTriggers = [ "config-v2" ];"#.to_string(),
    ] {
        let (changed, unchanged) = with(&change);
        assert_ne!(changed, web, "{change}");
        // What is not the instance's leaves the other instance's digest alone.
        if change.contains("\"hail@web\"") || change.contains("services.hail.web.") {
            assert_eq!(unchanged, other, "{change}");
        }
    }
    // [Unit] settings apply at the switch's daemon-reload: no restart for them.
    for change in [
        r#"systemd.services."hail@web".after = [ "vpn.service" ];"#,
        r#"systemd.services."hail@web".description = "deploys web";"#,
    ] {
        assert_eq!(with(change).0, web, "{change}");
    }
}

/// Configurations that exercise every part of the module, for comparing the stand-in with
/// NixOS's own code.
const CONFIGURATIONS: &[&str] = &[
    r#"{ services.hail.web.jobUri = "https://h/job/p/j/web"; }"#,
    r#"{
      services.hail.web = {
        jobUri = "https://hydra.example.org/job/p/j/web"; profile = "web"; netrcFile = "/etc/hail/100%.netrc";
        pollPeriod = "30s"; activationTimeout = "30m"; restartIfChanged = true;
        environment = { NIX_CONFIG = "a = 1\nb = 2"; DEMO = "50% \"q\" $HOME"; };
        extraArgs = [ "--flag" "100%" "$HOME" ];
      };
      services.hail.sys = { jobUri = "https://h/job/p/j/sys"; system = true; switchAction = "boot"; reboot = "when-needed"; };
      services.hail.off = { jobUri = "https://h/job/p/j/off"; enable = false; };
      systemd.globalEnvironment.TZ = "UTC";
      systemd.services."hail@web" = {
        after = [ "vpn.service" ]; wantedBy = [ "vpn.service" ]; description = "deploys web";
        serviceConfig = { Restart = "always"; WatchdogSec = "5min"; };
        environment.EXTRA = "x";
      };
    }"#,
];

#[test]
#[ignore = "needs NIXPKGS_LIB and NIXOS_SYSTEMD_LIB (nixpkgs' lib; NixOS's systemd option files)"]
fn the_stand_in_renders_what_nixos_own_systemd_code_renders() {
    nixpkgs_lib();
    let nixos = hail_testkit::nixos::systemd_lib().expect(
        "NIXOS_SYSTEMD_LIB is not set: a directory holding nixpkgs' nixos/lib/systemd-lib.nix, \
         systemd-unit-options.nix and systemd-types.nix",
    );
    let mut configurations: Vec<String> = CONFIGURATIONS.iter().map(|c| c.to_string()).collect();
    configurations.extend(doc_configurations());
    for config in &configurations {
        let real = eval_with(Some(&nixos), "module", config).unwrap_or_else(|e| panic!("{e}"));
        let stand_in = eval_with(None, "module", config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stand_in, real, "{config}");
    }
    // And they refuse the same.
    let bad = r#"{ systemd.services.other.serviceConfig.Type = [ "notify" ]; }"#;
    let real = eval_with(Some(&nixos), "module", bad).unwrap_err();
    let stand_in = eval_with(None, "module", bad).unwrap_err();
    let trace = |e: &str| {
        e.lines()
            .find(|l| l.starts_with("trace:"))
            .map(str::to_string)
    };
    assert_eq!(trace(&stand_in), trace(&real));
}

/// The NixOS snippets of the README and the book that configure hail instances, each as a
/// module: what a reader copies.
fn doc_configurations() -> Vec<String> {
    let docs: String = hail_testkit::docs::markdown_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let snippets: Vec<String> = docs
        .split("```nix\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|s| s.contains("services.hail.") && !s.contains("outputs ="))
        .map(|s| {
            if s.trim_start().starts_with('{') {
                s.to_string()
            } else {
                format!("{{ config, pkgs, ... }}: {{\n{s}}}")
            }
        })
        .collect();
    assert!(snippets.len() >= 3, "{snippets:#?}");
    snippets
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn the_documented_configurations_evaluate() {
    let lib = nixpkgs_lib();
    for config in doc_configurations() {
        let result = eval_ok(&lib, &config);
        assert_eq!(result["failedAssertions"], json!([]), "{config}");
        assert!(
            result["units"].as_object().is_some_and(|u| !u.is_empty()),
            "{config}: {result}"
        );
    }
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn the_managers_settings_are_the_modules_options() {
    let result = eval_ok(&nixpkgs_lib(), "{ }");
    let options: Vec<String> = serde_json::from_value(result["instanceOptions"].clone()).unwrap();
    let settings = nix_eval(&[
        "-E",
        &format!(
            "builtins.attrNames (removeAttrs (builtins.functionArgs (import {}/nix/instance.nix)) [ \"name\" ])",
            root().display()
        ),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let settings: Vec<String> = serde_json::from_value(settings).unwrap();
    assert_eq!(settings, options);
}

#[test]
#[ignore = "needs NIXPKGS_LIB (nixpkgs' lib directory)"]
fn the_book_shows_the_unit_nixos_writes() {
    let chapter = hail_testkit::docs::read("docs/src/getting-started/nixos.md");
    let section = &chapter[chapter.find("## configuration.nix").unwrap()..];
    let block = |fence: &str| {
        let start = section.find(fence).unwrap() + fence.len();
        section[start..][..section[start..].find("```").unwrap()].to_string()
    };
    let result = eval_ok(&nixpkgs_lib(), &block("```nix\n"));
    let written = result["units"]["hail@web.service"]["text"]
        .as_str()
        .unwrap()
        .replace(HAIL, "/nix/store/…-hail")
        .replace(
            "/nix/store/00000000000000000000000000000000-",
            "/nix/store/…-",
        );
    let written: String = written
        .lines()
        .map(
            |l| match l.strip_prefix("Environment=\"HAIL_UNIT_CONFIG=") {
                Some(_) => "Environment=\"HAIL_UNIT_CONFIG=…\"\n".to_string(),
                None => format!("{l}\n"),
            },
        )
        .collect();
    assert_eq!(
        block("```ini\n"),
        written.trim_end().to_string() + "\n",
        "the book's unit (docs/src/getting-started/nixos.md) is not the module's; put this in \
         its place:\n{written}"
    );
}
