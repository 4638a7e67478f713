//! Checks of the Nix files that need only `nix-instantiate` (no nixpkgs): every `.nix` file
//! parses, and `flake.lock` pins every input and matches `flake.nix`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn nix_instantiate() -> Command {
    let mut cmd = Command::new("nix-instantiate");
    cmd.current_dir(root());
    cmd
}

fn run(mut cmd: Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is Nix installed?): {e}"))
}

/// The repository's `.nix` files: tracked ones and new ones not ignored by git.
fn nix_files() -> Vec<PathBuf> {
    let out = Command::new("git")
        .current_dir(root())
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            "*.nix",
        ])
        .output()
        .expect("git ls-files");
    assert!(
        out.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<PathBuf> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| root().join(String::from_utf8_lossy(name).as_ref()))
        // Listed but deleted in the work tree.
        .filter(|path| path.exists())
        .collect();
    files.sort();
    files.dedup();
    files
}

#[test]
fn every_nix_file_parses() {
    let files = nix_files();
    for expected in [
        "flake.nix",
        "nixos/module.nix",
        "nix/package.nix",
        "nix/tests/basic.nix",
    ] {
        assert!(
            files.contains(&root().join(expected)),
            "{expected} not among {files:?}"
        );
    }
    let mut failures = Vec::new();
    for file in &files {
        let mut cmd = nix_instantiate();
        cmd.arg("--parse").arg(file);
        let out = run(cmd);
        if !out.status.success() {
            failures.push(format!(
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "files that do not parse:\n{}",
        failures.join("\n")
    );
}

/// Everything wrong with a flake.lock, as messages (empty: fine).
fn lock_problems(lock: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if lock["version"] != 7 {
        problems.push(format!("version is {}, expected 7", lock["version"]));
    }
    let Some(root_name) = lock["root"].as_str() else {
        problems.push("no \"root\" node name".into());
        return problems;
    };
    let Some(nodes) = lock["nodes"].as_object() else {
        problems.push("no \"nodes\"".into());
        return problems;
    };
    let Some(root_inputs) = nodes.get(root_name).and_then(|n| n["inputs"].as_object()) else {
        problems.push(format!("root node {root_name:?} has no inputs"));
        return problems;
    };
    if root_inputs.is_empty() {
        problems.push("the root node has no inputs".into());
    }
    for (name, node) in nodes.iter().filter(|(name, _)| name.as_str() != root_name) {
        let locked = &node["locked"];
        let nar_hash = locked["narHash"].as_str().unwrap_or("");
        if !nar_hash.starts_with("sha256-") || nar_hash.len() != "sha256-".len() + 44 {
            problems.push(format!(
                "{name}: locked.narHash {nar_hash:?} is not a sha256 SRI hash"
            ));
        }
        if locked["type"] == "github" {
            let rev = locked["rev"].as_str().unwrap_or("");
            if rev.len() != 40 || !rev.chars().all(|c| c.is_ascii_hexdigit()) {
                problems.push(format!("{name}: locked.rev {rev:?} is not a commit id"));
            }
            for field in ["owner", "repo"] {
                if locked[field] != node["original"][field] {
                    problems.push(format!(
                        "{name}: locked.{field} differs from original.{field}"
                    ));
                }
            }
        }
        if !node["original"].is_object() {
            problems.push(format!("{name}: no \"original\""));
        }
    }
    for (input, target) in root_inputs {
        if !target.as_str().is_some_and(|t| nodes.contains_key(t)) {
            problems.push(format!(
                "root input {input} points at {target}, which is not a node"
            ));
        }
    }
    problems
}

fn read_lock() -> Value {
    let text = std::fs::read_to_string(root().join("flake.lock")).expect("read flake.lock");
    serde_json::from_str(&text).expect("flake.lock is not JSON")
}

#[test]
fn flake_lock_pins_every_input() {
    let problems = lock_problems(&read_lock());
    assert!(problems.is_empty(), "flake.lock: {problems:#?}");
}

#[test]
fn lock_check_reports_an_unpinned_input() {
    let mut lock = read_lock();
    lock["nodes"]["nixpkgs"]["locked"]
        .as_object_mut()
        .expect("a nixpkgs node")
        .remove("narHash");
    lock["version"] = 6.into();
    let problems = lock_problems(&lock);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("version"), "{problems:#?}");
    assert!(
        problems[1].contains("nixpkgs: locked.narHash"),
        "{problems:#?}"
    );
}

/// flake.nix's inputs as `name -> url`, read by Nix itself.
fn flake_inputs() -> serde_json::Map<String, Value> {
    let mut cmd = nix_instantiate();
    cmd.args([
        "--eval",
        "--strict",
        "--json",
        "-E",
        "builtins.mapAttrs (_: input: input.url) (import ./flake.nix).inputs",
    ]);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

#[test]
fn flake_lock_matches_flake_inputs() {
    let lock = read_lock();
    let root_inputs = lock["nodes"]["root"]["inputs"].as_object().unwrap().clone();
    let inputs = flake_inputs();
    let mut names: Vec<_> = inputs.keys().collect();
    let mut locked: Vec<_> = root_inputs.keys().collect();
    names.sort();
    locked.sort();
    assert_eq!(names, locked, "flake.nix inputs vs flake.lock root inputs");
    for (name, url) in &inputs {
        let node = &lock["nodes"][root_inputs[name].as_str().unwrap()];
        let original = &node["original"];
        assert_eq!(
            original["type"], "github",
            "{name}: only github inputs are expected"
        );
        let mut expected = format!(
            "github:{}/{}",
            original["owner"].as_str().unwrap(),
            original["repo"].as_str().unwrap()
        );
        if let Some(reference) = original["ref"].as_str() {
            expected = format!("{expected}/{reference}");
        }
        assert_eq!(
            url.as_str(),
            Some(expected.as_str()),
            "{name}: flake.nix url vs flake.lock original"
        );
    }
}

/// nix/package.nix replaces this path in the template; the NixOS module's default profile is the
/// template's (tests/nix_module.rs checks the module side).
#[test]
fn template_names_the_paths_the_package_and_module_rely_on() {
    let unit = std::fs::read_to_string(root().join("systemd/hail@.service"))
        .expect("systemd/hail@.service");
    let exec: Vec<_> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(exec, ["ExecStart=/usr/local/bin/hail"]);
    assert!(
        unit.lines()
            .any(|l| l == "Environment=HAIL_PROFILE=/nix/var/nix/profiles/hail/%i"),
        "the template's default profile changed: change nixos/module.nix's `profile` default with it"
    );
}

#[test]
fn the_vm_test_keeps_its_netrc_out_of_the_store_and_switches() {
    let test = std::fs::read_to_string(root().join("nix/tests/basic.nix")).unwrap();
    // environment.etc puts a file's text in the store, which every user can read.
    assert!(!test.contains("environment.etc"), "nix/tests/basic.nix");
    assert!(
        test.contains("umask 077"),
        "the test script writes the netrc"
    );
    assert!(
        test.contains("specialisation/removed/bin/switch-to-configuration test"),
        "the VM test switches to a specialisation that removes an instance"
    );
}

/// What `hail generate` offers (the possible values its `--help` lists), every one installed by
/// nix/package.nix: the man page with `installManPage`, each completion with
/// `installShellCompletion`, all printed by the package's own binary.
#[test]
fn the_package_installs_the_man_page_and_every_completion() {
    let out = run({
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hail"));
        cmd.args(["generate", "--help"]);
        cmd
    });
    assert!(out.status.success(), "hail generate --help: {}", out.status);
    let help = String::from_utf8(out.stdout).unwrap();
    let offered: Vec<&str> = help
        .split_once("Possible values:")
        .expect("possible values in hail generate --help")
        .1
        .lines()
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- "))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert!(offered.contains(&"man"), "{offered:?}");

    let package = std::fs::read_to_string(root().join("nix/package.nix")).unwrap();
    assert!(
        package.contains("nativeBuildInputs = [ installShellFiles ];"),
        "nix/package.nix does not use installShellFiles"
    );
    for what in offered {
        let installs: &[&str] = if what == "man" {
            &[
                "$out/bin/hail generate man > hail.1\n",
                "installManPage hail.1\n",
            ]
        } else {
            &["installShellCompletion --cmd hail"]
        };
        let generated = format!("--{what} <($out/bin/hail generate {what})");
        for expected in installs
            .iter()
            .copied()
            .chain((what != "man").then_some(generated.as_str()))
        {
            assert!(
                package.contains(expected),
                "nix/package.nix does not install `hail generate {what}`: no {expected:?}"
            );
        }
    }
}

/// The package ships the journal catalog where the module's `hail-catalog.service` copies it
/// from (`lib/systemd/catalog/hail.catalog`), from the repository's `systemd/hail.catalog`, which
/// the package's source must therefore include. (Building the package needs nixpkgs: `nix flake
/// check`.)
#[test]
fn the_package_installs_the_journal_catalog() {
    let package = std::fs::read_to_string(root().join("nix/package.nix")).unwrap();
    let module = std::fs::read_to_string(root().join("nixos/module.nix")).unwrap();
    let installed = "lib/systemd/catalog/hail.catalog";
    assert!(
        package.contains("      ../systemd/hail.catalog\n"),
        "nix/package.nix leaves systemd/hail.catalog out of its source"
    );
    assert!(
        package.contains(&format!(
            "install -Dm644 systemd/hail.catalog $out/{installed}\n"
        )),
        "nix/package.nix does not install the catalog as $out/{installed}"
    );
    assert!(
        module.contains(&format!("}}/{installed}\"")),
        "nixos/module.nix does not read the package's {installed}"
    );
}
