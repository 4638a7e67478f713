//! The claims table (`tests/CLAIMS.md`) held to the documentation and to the tests: every claim
//! the README and the book make, found by the rule below, has a row; every row's phrase is still
//! in its chapter; every row names tests, and every test it names exists.
//!
//! The rule, in the chapters of `docs/src/{concepts,nixos-systems,operations,security}/` (see
//! [`CHAPTER_DIRS`]):
//! - a paragraph or a bullet that starts with bold text (`**…**` or `- **…**`) is a claim, named
//!   by that bold text;
//! - a row of a table in a section whose heading starts with "After a crash" is a claim, named by
//!   its first cell;
//!
//! and in `README.md`, a row of the table under "Why hail" is a claim, named by its first cell
//! (what the row says of hail is the claim).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hail_testkit::docs::{self, root};

/// The parts of the book whose chapters make behavioural promises (the reference, getting-started
/// and contributing parts describe formats and steps).
const CHAPTER_DIRS: [&str; 4] = [
    "docs/src/concepts",
    "docs/src/nixos-systems",
    "docs/src/operations",
    "docs/src/security",
];

const TABLE: &str = "tests/CLAIMS.md";

/// One claim: the file it is made in (from the repository's root) and the phrase naming it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    chapter: String,
    phrase: String,
}

/// A row of the claims table.
#[derive(Debug)]
struct Row {
    line: usize,
    claim: Claim,
    tests: Vec<String>,
}

/// The lines of a Markdown text outside fenced code, with their headings' levels known.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                return false;
            }
            !in_fence
        })
        .collect()
}

/// The text of a table row's cells, without the outer pipes; `None` for a line that is no row.
fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

/// Whether a row is a table's header separator (`| --- | --- |`).
fn is_separator(cells: &[String]) -> bool {
    cells
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
}

/// The body rows' first cells of every table in the sections whose heading starts with
/// `heading` (any level).
fn table_claims(text: &str, heading: &str) -> Vec<String> {
    let mut phrases = Vec::new();
    let mut in_section = false;
    let mut header_seen = false;
    for line in prose_lines(text) {
        if let Some(h) = line.strip_prefix('#') {
            in_section = h.trim_start_matches('#').trim().starts_with(heading);
            continue;
        }
        match cells(line) {
            None => header_seen = false,
            Some(row) if !header_seen => header_seen = is_separator(&row),
            Some(row) if in_section => phrases.push(row[0].clone()),
            Some(_) => {}
        }
    }
    phrases
}

/// The bold lead-ins of a chapter: a paragraph or bullet starting with `**…**`.
fn bold_lead_ins(text: &str) -> Vec<String> {
    let mut phrases = Vec::new();
    let mut previous_blank = true;
    // The bold text of a lead-in so far, while it goes on over the next lines.
    let mut open: Option<String> = None;
    for line in prose_lines(text) {
        if let Some(mut bold) = open.take() {
            if line.trim().is_empty() {
                previous_blank = true;
                continue; // no closing `**` in the paragraph: not bold
            }
            bold.push(' ');
            match line.trim().find("**") {
                Some(end) => phrases.push(bold + &line.trim()[..end]),
                None => open = Some(bold + line.trim()),
            }
            continue;
        }
        let bullet = line.strip_prefix("- ");
        let starts_paragraph = previous_blank && !line.starts_with(' ');
        let lead = bullet.or(starts_paragraph.then_some(line));
        previous_blank = line.trim().is_empty();
        let Some(rest) = lead.and_then(|l| l.strip_prefix("**")) else {
            continue;
        };
        match rest.find("**") {
            Some(end) => phrases.push(rest[..end].to_string()),
            None => open = Some(rest.trim_end().to_string()),
        }
    }
    phrases
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap().display().to_string()
}

/// Every claim the README and the book make, by the rule at the top of this file.
fn claims_in_the_docs() -> BTreeSet<Claim> {
    let mut claims = BTreeSet::new();
    let readme = docs::read("README.md");
    for phrase in table_claims(&readme, "Why hail") {
        claims.insert(Claim {
            chapter: "README.md".into(),
            phrase,
        });
    }
    let chapters = docs::markdown_files()
        .into_iter()
        .filter(|f| CHAPTER_DIRS.iter().any(|d| f.starts_with(root().join(d))));
    for file in chapters {
        let text = std::fs::read_to_string(&file).unwrap();
        let chapter = relative(&file);
        let found = bold_lead_ins(&text)
            .into_iter()
            .chain(table_claims(&text, "After a crash"));
        for phrase in found {
            claims.insert(Claim {
                chapter: chapter.clone(),
                phrase,
            });
        }
    }
    claims
}

/// The text between backticks, each span once: `` `a`, `b` `` gives `a` and `b`.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// The rows of `tests/CLAIMS.md`'s table: `| chapter | claim | tests |`, the chapter's path and
/// the claim's phrase as they are written (the phrase verbatim, backticks and all), each test in
/// backticks.
fn rows(text: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut header_seen = false;
    for (at, line) in text.lines().enumerate() {
        let Some(row) = cells(line) else {
            header_seen = false;
            continue;
        };
        if !header_seen {
            header_seen = is_separator(&row);
            continue;
        }
        assert_eq!(
            row.len(),
            3,
            "{TABLE}:{}: a row has three cells: chapter, claim, tests",
            at + 1
        );
        rows.push(Row {
            line: at + 1,
            claim: Claim {
                chapter: row[0].clone(),
                phrase: row[1].clone(),
            },
            tests: code_spans(&row[2]),
        });
    }
    rows
}

/// Whether `file` defines `fn name` marked `#[test]` or `#[tokio::test…]` (other attributes and
/// doc comments may sit between them).
fn defines_test(file: &Path, name: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    let mut marked = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("#[test]") || line.starts_with("#[tokio::test") {
            marked = true;
        } else if let Some(at) = line.find("fn ") {
            let rest = &line[at + 3..];
            let defined = rest.split(['(', '<']).next() == Some(name);
            if defined && marked && (at == 0 || line[..at].ends_with(' ')) {
                return true;
            }
            marked = false;
        }
    }
    false
}

/// Where a test named `binary::module::name` is defined: `hail::PATH::name` is a unit test of
/// `src/`, in the file of the longest prefix of PATH that is a module file
/// (`src/a/b.rs`, `src/a/b/mod.rs`), the rest of PATH being modules inline in it; `BINARY::name` is in `tests/BINARY.rs`, and
/// `BINARY::MODULE::name` in `tests/BINARY/MODULE.rs`.
fn test_file(test: &str) -> Result<PathBuf, String> {
    let parts: Vec<&str> = test.split("::").collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err("not of the form binary::module::name".into());
    }
    let modules = &parts[1..parts.len() - 1];
    if parts[0] == "hail" {
        for len in (1..=modules.len()).rev() {
            let path = modules[..len].join("/");
            for candidate in [format!("src/{path}.rs"), format!("src/{path}/mod.rs")] {
                let file = root().join(&candidate);
                if !file.is_file() {
                    continue;
                }
                // The rest of the path are modules written inline (`mod tests {`).
                let text = std::fs::read_to_string(&file).unwrap();
                return match modules[len..]
                    .iter()
                    .find(|m| !text.contains(&format!("mod {m} {{")))
                {
                    Some(m) => Err(format!("{candidate} has no inline mod {m}")),
                    None => Ok(file),
                };
            }
        }
        return Err("no module file in src/ for its path".into());
    }
    let file = match modules {
        [] => format!("tests/{}.rs", parts[0]),
        [module] => format!("tests/{}/{module}.rs", parts[0]),
        _ => return Err("an integration test is binary::name or binary::module::name".into()),
    };
    let path = root().join(&file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("no {file}"))
    }
}

#[test]
fn every_claim_has_a_row_and_every_row_a_claim_and_existing_tests() {
    let text = docs::read(TABLE);
    let rows = rows(&text);
    let claims = claims_in_the_docs();
    let mut problems = Vec::new();

    let tabled: BTreeSet<&Claim> = rows.iter().map(|r| &r.claim).collect();
    for claim in &claims {
        if !tabled.contains(claim) {
            problems.push(format!(
                "{}: the claim `{}` has no row in {TABLE}",
                claim.chapter, claim.phrase
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for row in &rows {
        let at = format!("{TABLE}:{}", row.line);
        let Claim { chapter, phrase } = &row.claim;
        if !seen.insert(&row.claim) {
            problems.push(format!("{at}: `{phrase}` has a row already"));
        }
        match std::fs::read_to_string(root().join(chapter)) {
            Err(e) => problems.push(format!("{at}: {chapter}: {e}")),
            Ok(chapter_text) => {
                // A phrase may be wrapped across lines in the chapter.
                let flat = chapter_text
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                if !flat.contains(phrase.as_str()) {
                    problems.push(format!("{at}: `{phrase}` is no longer in {chapter}"));
                }
            }
        }
        if row.tests.is_empty() {
            problems.push(format!("{at}: `{phrase}` names no test"));
        }
        for test in &row.tests {
            let name = test.rsplit("::").next().unwrap();
            match test_file(test) {
                Err(why) => problems.push(format!("{at}: `{test}`: {why}")),
                Ok(file) if !defines_test(&file, name) => problems.push(format!(
                    "{at}: `{test}`: {} has no #[test] fn {name}",
                    relative(&file)
                )),
                Ok(_) => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the claims table and the documentation or the tests disagree:\n{}",
        problems.join("\n")
    );
    // A rule that stopped finding claims (or a table no longer read) would pass the above.
    assert!(claims.len() > 20, "only {} claims found", claims.len());
    assert!(rows.len() >= claims.len(), "only {} rows", rows.len());
}

#[test]
fn the_rule_finds_bold_lead_ins_and_the_rows_of_the_crash_table() {
    let text = "# T\n\n**Lead.** text\nmore **not a lead**\n\n- **Bullet:** x\n  - not **this**\n\
                \n**Over two\nlines** x\n\
                \n```\n**in code**\n```\n\n## After a crash\n\n| a | b |\n| --- | --- |\n\
                | row one | x |\n| row two | y |\n\n## Other\n\n| c |\n| --- |\n| not a claim |\n";
    assert_eq!(bold_lead_ins(text), ["Lead.", "Bullet:", "Over two lines"]);
    assert_eq!(table_claims(text, "After a crash"), ["row one", "row two"]);
    let claims = claims_in_the_docs();
    let in_state: Vec<_> = claims
        .iter()
        .filter(|c| c.chapter == "docs/src/concepts/state.md")
        .collect();
    assert!(
        in_state.len() >= 8,
        "the crash table's rows are claims: {in_state:?}"
    );
}
