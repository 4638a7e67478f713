//! The documentation held to the code and to itself: the book builds with the real mdbook and
//! every link in it (and in the README) leads to a page and anchor that exist; the generated
//! pages are what the binary and the sources say now; every journal event, `MESSAGE_ID` and
//! metric hail writes is in the reference.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use hail_testkit::docs::{self, root};
use hail_testkit::prereq;

const HAIL: &str = env!("CARGO_BIN_EXE_hail");

/// Builds the book into a temporary directory with the real mdbook (so a chapter listed in
/// SUMMARY.md but missing fails, `create-missing = false`), and returns it.
fn build_book() -> tempfile::TempDir {
    prereq::require(&prereq::MDBOOK);
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("mdbook")
        .arg("build")
        .arg(root().join("docs"))
        .arg("--dest-dir")
        .arg(out.path())
        .output()
        .expect("run mdbook");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "mdbook build failed:\n{log}");
    // mdbook only warns about these; they are mistakes all the same (an unclosed `<name>` in
    // prose swallows the text after it).
    assert!(!log.contains("WARN"), "mdbook warned:\n{log}");
    out
}

/// Every value of `attr="…"` in an HTML text.
fn attributes<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let pattern = format!(" {attr}=\"");
    html.match_indices(&pattern)
        .filter_map(|(at, _)| {
            let rest = &html[at + pattern.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// `dir/../x` as `x`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn is_external(link: &str) -> bool {
    link.contains("://") || link.starts_with("mailto:") || link.starts_with("data:")
}

fn html_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "html") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
#[cfg_attr(hail_skip_mdbook, ignore = "needs mdbook (HAIL_TEST_SKIP_MISSING=1)")]
fn every_link_in_the_built_book_leads_to_a_page_and_anchor_that_exist() {
    let book = build_book();
    let book = book.path();
    let pages = html_files(book);
    assert!(pages.len() > 40, "too few pages: {pages:?}");
    let ids: HashMap<PathBuf, BTreeSet<String>> = pages
        .iter()
        .map(|p| {
            let html = std::fs::read_to_string(p).unwrap();
            let ids = attributes(&html, "id").into_iter().map(String::from);
            (p.clone(), ids.collect())
        })
        .collect();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let html = std::fs::read_to_string(page).unwrap();
        let links = attributes(&html, "href")
            .into_iter()
            .chain(attributes(&html, "src"));
        for link in links.filter(|l| !is_external(l) && !l.is_empty()) {
            checked += 1;
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                normalize(&page.parent().unwrap().join(file))
            };
            let name = page.strip_prefix(book).unwrap().display().to_string();
            if !target.exists() {
                broken.push(format!("{name}: {link}: no such file"));
            } else if !anchor.is_empty()
                && !ids.get(&target).is_some_and(|ids| ids.contains(anchor))
            {
                broken.push(format!("{name}: {link}: no such anchor"));
            }
        }
    }
    assert!(
        checked > 500,
        "only {checked} links found: is the HTML read right?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// mdBook's id for a heading: lowercase; letters, digits, `-` and `_` kept; spaces become `-`;
/// everything else (punctuation, backticks) dropped. The same rule the link test above finds in
/// the HTML; here it checks the links that the book does not render (the README's, read on a
/// forge).
fn heading_id(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The relative links `[text](target)` of a Markdown text, outside code.
fn markdown_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Drop code spans, whose brackets are not links.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for (at, _) in prose.match_indices("](") {
            let rest = &prose[at + 2..];
            if let Some(end) = rest.find(')') {
                let link = &rest[..end];
                if !is_external(link) {
                    links.push(link.to_string());
                }
            }
        }
    }
    links
}

#[test]
fn every_link_in_the_readme_and_the_chapters_sources_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in docs::markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for link in markdown_links(&text) {
            checked += 1;
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                normalize(&file.parent().unwrap().join(path))
            };
            let name = file.strip_prefix(root()).unwrap().display().to_string();
            if !target.starts_with(root().join("docs/src")) && file != root().join("README.md") {
                broken.push(format!(
                    "{name}: {link}: outside docs/src, not part of the book"
                ));
            } else if !target.exists() {
                broken.push(format!("{name}: {link}: no such file"));
            } else if !anchor.is_empty() {
                let target_text = std::fs::read_to_string(&target).unwrap_or_default();
                let found = target_text
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .map(|h| heading_id(h.trim_start_matches('#').trim()))
                    .any(|id| id == anchor);
                if !found {
                    broken.push(format!("{name}: {link}: no such heading"));
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_chapter_is_in_the_summary() {
    let summary = docs::read("docs/src/SUMMARY.md");
    let listed: BTreeSet<String> = markdown_links(&summary).into_iter().collect();
    let src = root().join("docs/src");
    let unlisted: Vec<String> = docs::markdown_files()
        .iter()
        .filter(|f| f.starts_with(&src))
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .filter(|f| f != "SUMMARY.md" && !listed.contains(f))
        .collect();
    assert!(
        unlisted.is_empty(),
        "chapters mdbook would leave out: {unlisted:?}"
    );
}

#[test]
fn the_readme_stays_short() {
    let size = docs::read("README.md").len();
    assert!(
        size <= 15 * 1024,
        "README.md is {size} bytes; the rest belongs in the book"
    );
}

fn script_check(script: &str, args: &[&str]) {
    let out = Command::new(root().join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[cfg_attr(hail_skip_python3, ignore = "needs python3 (HAIL_TEST_SKIP_MISSING=1)")]
fn the_command_line_reference_is_the_binarys_help() {
    prereq::require(&prereq::PYTHON);
    script_check("scripts/gen-cli-doc", &["--check", "--hail", HAIL]);
}

#[test]
#[cfg_attr(
    hail_skip_dot,
    ignore = "needs python3 and Graphviz' dot (HAIL_TEST_SKIP_MISSING=1)"
)]
fn the_diagrams_are_rendered_from_their_sources() {
    prereq::require(&prereq::DOT);
    script_check("scripts/gen-diagrams", &["--check"]);
}

/// Every `"…"` following `marker` in the Rust sources under `src/`.
fn quoted_after(marker: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                if let Some(value) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    found.insert(value.to_string());
                }
            }
        }
    }
    found
}

#[test]
fn every_journal_event_and_message_id_is_in_the_reference() {
    let page = docs::read("docs/src/reference/journal-fields.md");
    let events = quoted_after("hail.event = ");
    assert!(events.len() > 30, "{events:?}");
    let missing: Vec<_> = events
        .iter()
        .filter(|e| !page.contains(&format!("`{e}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "HAIL_EVENTs not documented: {missing:?}"
    );

    let ids = quoted_after(": &str = ");
    let ids: Vec<_> = ids
        .iter()
        .filter(|v| v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    assert!(ids.len() >= 10, "{ids:?}");
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !page.contains(&format!("| `{id}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "MESSAGE_IDs not in the table: {missing:?}"
    );
}

#[test]
fn every_metric_is_in_the_reference() {
    let page = docs::read("docs/src/reference/metrics.md");
    let source = docs::read("src/metrics.rs");
    let names: BTreeSet<&str> = source
        .split('"')
        .filter(|s| s.starts_with("hail_") && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(names.len() >= 12, "{names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !page.contains(&format!("`{n}`")) && !page.contains(&format!("`{n}{{")))
        .collect();
    assert!(missing.is_empty(), "metrics not documented: {missing:?}");
}

/// A state with every optional part present, so that every key of the schema is written. Written
/// field by field: a new field does not compile until it is added here, and then documented.
fn full_record() -> hail::record::Record {
    use hail::record::*;
    let t = jiff::Timestamp::UNIX_EPOCH;
    let path = "/nix/store/00000000000000000000000000000000-x".to_string();
    let build = BuildRef {
        build_id: 1,
        store_path: path.clone(),
    };
    let deployed = Deployed {
        build_id: Some(1),
        store_path: path.clone(),
        generation: Some(1),
        since: t,
    };
    let deployment = DeploymentRecord {
        build_id: 1,
        store_path: path.clone(),
        generation: Some(1),
        time: t,
        result: DeploymentResult::Deployed,
        error: Some("e".into()),
    };
    Record {
        version: VERSION,
        job: "j".into(),
        profile: "p".into(),
        deployed: Some(deployed.clone()),
        good: Some(deployed.clone()),
        deploying: Some(build.clone()),
        rolling_back: Some(Verdict {
            result: DeploymentResult::ActivationFailed,
            reason: "r".into(),
        }),
        latest: Some(build.clone()),
        latest_since: Some(t),
        last_poll: Some(Poll {
            time: t,
            ok: false,
            error: Some("e".into()),
        }),
        last_deployment: Some(deployment.clone()),
        known_bad: vec![KnownBad {
            build_id: Some(1),
            store_path: path.clone(),
            reason: "r".into(),
            time: t,
        }],
        paused: true,
        pause_reason: Some("r".into()),
        history: vec![deployment],
        next_poll: Some(t),
        consecutive_failures: 1,
        counters: Counters {
            polls_ok: 1,
            polls_failed: 1,
            deployments_deployed: 1,
            deployments_activation_failed: 1,
            deployments_health_check_failed: 1,
            deployments_contact_lost: 1,
            deployments_failed: 1,
            last_poll_success: Some(t),
            last_deployment_success: Some(t),
        },
        gate: GateMemory {
            finished_upto: Some(1),
            evals: vec![1],
            depth: 1,
            verdicts: vec![GateVerdict {
                eval: 1,
                build: Some(GateBuild {
                    build_id: 1,
                    store_path: path,
                    finished_at: Some(t),
                }),
                refusal: Some("r".into()),
            }],
        },
        reboot_needed: vec!["kernel".into()],
        rebooting: Some(Rebooting {
            into: build,
            from: Some(deployed),
            back: false,
        }),
    }
}

/// Every object key in a JSON value, at any depth.
fn keys(value: &serde_json::Value, into: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                into.insert(k.clone());
                keys(v, into);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, into)),
        _ => {}
    }
}

fn undocumented(value: serde_json::Value, page: &str) -> Vec<String> {
    let mut found = BTreeSet::new();
    keys(&value, &mut found);
    assert!(found.len() > 20, "{found:?}");
    // The words of the page's code spans: `latest.build_id` names `latest` and `build_id`.
    let text = docs::read(page);
    let words: BTreeSet<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|code| code.split(|c: char| !(c.is_alphanumeric() || c == '_')))
        .collect();
    found
        .into_iter()
        .filter(|k| !words.contains(k.as_str()))
        .collect()
}

#[test]
fn every_key_of_the_state_file_is_in_the_reference() {
    let record = serde_json::to_value(full_record()).unwrap();
    let missing = undocumented(record, "docs/src/reference/state-json.md");
    assert!(
        missing.is_empty(),
        "state.json keys not documented: {missing:?}"
    );
}

#[test]
fn every_key_of_hail_status_json_is_in_the_reference() {
    let report = hail::status::report(hail::status::Found {
        instance: Some("web".into()),
        state_dir: "/var/lib/hail/web".into(),
        pid: Some(1),
        record: Some(full_record()),
        profile: None,
    });
    let report = serde_json::to_value(report).unwrap();
    let missing = undocumented(report, "docs/src/reference/status-json.md");
    assert!(
        missing.is_empty(),
        "hail status --json keys not documented: {missing:?}"
    );
}

#[test]
fn every_option_of_the_agent_is_explained_and_every_option_explained_exists() {
    let help = Command::new(HAIL)
        .arg("--help")
        .output()
        .expect("run hail --help");
    let help = String::from_utf8(help.stdout).unwrap();
    let real: BTreeSet<&str> = help
        .lines()
        // Option lines start with the option (`--profile <PROFILE>`, `-h, --help`).
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|o| !["--help", "--version"].contains(o))
        .collect();
    assert!(real.len() > 20, "{real:?}");
    let page = docs::read("docs/src/reference/agent-options.md");
    // The options the table explains: those in the first column of its rows.
    let explained: BTreeSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" | ").next())
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter_map(|code| code.split_whitespace().next())
        .filter(|o| o.starts_with("--"))
        .collect();
    let unexplained: Vec<_> = real.difference(&explained).collect();
    let unknown: Vec<_> = explained.difference(&real).collect();
    assert!(
        unexplained.is_empty() && unknown.is_empty(),
        "options of hail --help not explained in docs/src/reference/agent-options.md: \
         {unexplained:?}; explained there but not options of hail: {unknown:?}"
    );
}
