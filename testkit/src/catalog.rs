//! hail's journal message catalog (`systemd/hail.catalog`) and what hail logs, both read from the
//! workspace's files: the catalog as systemd's `journalctl --update-catalog` parses it, and the
//! `MESSAGE_ID`s and journal fields of hail's sources.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace's root directory.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped catalog, `systemd/hail.catalog` of this workspace.
pub fn catalog_file() -> PathBuf {
    workspace().join("systemd/hail.catalog")
}

/// One catalog entry: `-- ID`, its `Key: value` header lines, a blank line, the text.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    /// The line the `-- ID` line is on (1-based), for messages.
    pub line: usize,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Entry {
    /// The `@FIELD@` names the entry's header and text substitute.
    pub fn fields(&self) -> BTreeSet<String> {
        let mut text = self.body.clone();
        for v in self.headers.values() {
            text.push('\n');
            text.push_str(v);
        }
        substitutions(&text)
    }
}

/// `@NAME@` where NAME is what systemd substitutes: `[A-Z0-9_]+` between two `@`.
fn substitutions(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let after = &rest[at + 1..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        if name_len > 0 && after.as_bytes().get(name_len) == Some(&b'@') {
            out.insert(after[..name_len].to_string());
            rest = &after[name_len + 1..];
        } else {
            rest = after;
        }
    }
    out
}

/// A 128-bit id in the catalog's (and `MESSAGE_ID`'s) form: 32 lower-case hex digits.
pub fn is_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses a catalog as systemd's `catalog_import_file` does: `#` lines are comments, `-- ID`
/// (optionally `-- ID LANG`) starts an entry, header lines follow up to the first empty line, and
/// the text runs to the next entry. `Err` says what systemd would refuse.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut in_headers = false;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if let Some(rest) = line.strip_prefix("-- ") {
            let id = rest.split_whitespace().next().unwrap_or("");
            if !is_id(id) {
                return Err(format!("line {n}: {line:?} is not `-- <32 hex digits>`"));
            }
            entries.push(Entry {
                id: id.to_string(),
                line: n,
                headers: BTreeMap::new(),
                body: String::new(),
            });
            in_headers = true;
            continue;
        }
        if line.starts_with('#') && (in_headers || entries.is_empty()) {
            continue;
        }
        let Some(entry) = entries.last_mut() else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("line {n}: text before the first entry"));
        };
        if in_headers {
            if line.is_empty() {
                in_headers = false;
                continue;
            }
            let Some((key, value)) = line.split_once(": ") else {
                return Err(format!("line {n}: {line:?} is no `Key: value` header"));
            };
            if entry
                .headers
                .insert(key.to_string(), value.to_string())
                .is_some()
            {
                return Err(format!("line {n}: a second {key} header"));
            }
            continue;
        }
        entry.body.push_str(line);
        entry.body.push('\n');
    }
    if in_headers {
        return Err("the last entry has no text".into());
    }
    for e in &mut entries {
        e.body = e.body.trim_end().to_string();
    }
    Ok(entries)
}

/// The shipped catalog, parsed; panics naming the problem.
pub fn entries() -> Vec<Entry> {
    let file = catalog_file();
    let text =
        fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The `MESSAGE_ID` constants hail logs with (`pub const MSG_…: &str = "…";` in
/// `src/agent/report.rs`): name → id.
pub fn message_ids() -> BTreeMap<String, String> {
    let file = workspace().join("src/agent/report.rs");
    let text =
        fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(": &str = ") else {
            continue;
        };
        if !name.starts_with("MSG_") {
            continue;
        }
        let id = value.trim_end_matches(';').trim_matches('"');
        assert!(is_id(id), "{}: {name} = {value} is no id", file.display());
        out.insert(name.to_string(), id.to_string());
    }
    assert!(!out.is_empty(), "no MSG_ constants in {}", file.display());
    out
}

/// Every `.rs` file under `src/`.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut list: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        list.sort();
        for path in list {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&workspace().join("src"), &mut out);
    out
}

/// Every string literal of 32 hex digits in hail's sources (a `MESSAGE_ID` written anywhere),
/// with the file it is in.
pub fn ids_in_sources() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (path, text) in sources() {
        for piece in text.split('"').skip(1).step_by(2) {
            if is_id(piece) {
                out.push((piece.to_string(), path.clone()));
            }
        }
    }
    out
}

/// For each `MSG_` constant, the journal fields (`HAIL_…`) that every event logged with it
/// carries: the `hail.*` fields common to all the macro calls naming it as `message_id`.
/// (A field given an `Option` is absent when it is `None`; that this cannot see.)
pub fn fields_of_every_entry() -> BTreeMap<String, BTreeSet<String>> {
    let names = message_ids();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources() {
        let mut from = 0;
        while let Some(found) = text[from..].find("message_id = ") {
            let at = from + found;
            from = at + 1;
            let value = &text[at + "message_id = ".len()..];
            let name: String = value
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let name = name.rsplit("::").next().unwrap_or_default().to_string();
            assert!(
                names.contains_key(&name),
                "{}: message_id = {name} is no MSG_ constant of report.rs",
                path.display()
            );
            let call = macro_call(&text, at)
                .unwrap_or_else(|| panic!("{}: no macro call around {name}", path.display()));
            let fields = hail_fields(call);
            out.entry(name)
                .and_modify(|common| common.retain(|f| fields.contains(f)))
                .or_insert(fields);
        }
    }
    out
}

/// The text of the `name!( … )` call that contains byte `at`.
fn macro_call(text: &str, at: usize) -> Option<&str> {
    let start = text[..at].rfind("!(")? + 1;
    let bytes = text.as_bytes();
    let (mut depth, mut i, mut in_str) = (0usize, start, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_str {
            match b {
                b'\\' => i += 1,
                b'"' => in_str = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_str = true,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&text[start..=i]);
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// The code of a call without what its string literals say (blanked).
fn code_only(call: &str) -> String {
    let mut out = String::with_capacity(call.len());
    let (mut in_str, mut escaped) = (false, false);
    for c in call.chars() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            out.push(if in_str { ' ' } else { c });
        } else {
            in_str = c == '"';
            out.push(c);
        }
    }
    out
}

/// `hail.build_id = …` → `HAIL_BUILD_ID`, as tracing-journald names the field (outside string
/// literals).
fn hail_fields(call: &str) -> BTreeSet<String> {
    code_only(call)
        .split("hail.")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest[name.len()..]
                .trim_start()
                .starts_with('=')
                .then(|| format!("HAIL_{}", name.to_ascii_uppercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_systemds_form() {
        let text = "# comment\n\n-- 0123456789abcdef0123456789abcdef\nSubject: a @X_1@\n\
                    Defined-By: hail\n\nbody @Y@ and hail@NAME and @lower@\n\n\
                    -- fedcba9876543210fedcba9876543210 de\nSubject: b\n\nmore\n";
        let e = parse(text).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].headers["Subject"], "a @X_1@");
        assert_eq!(e[0].body, "body @Y@ and hail@NAME and @lower@");
        assert_eq!(e[0].fields().into_iter().collect::<Vec<_>>(), ["X_1", "Y"]);
        assert_eq!(e[1].id, "fedcba9876543210fedcba9876543210");
        assert!(parse("-- nothex\nSubject: x\n\ny\n").is_err());
        assert!(parse("-- 0123456789abcdef0123456789abcdef\nno header\n\ny\n").is_err());
        assert!(parse("-- 0123456789abcdef0123456789abcdef\nSubject: x\n").is_err());
    }

    #[test]
    fn finds_the_fields_of_a_call() {
        let call = "error!(hail.event = \"x\", message_id = M, hail.build_id = b.id, \
                    hail.error = %e, \"({}) hail.not = 1\", x)";
        assert_eq!(
            hail_fields(call).into_iter().collect::<Vec<_>>(),
            ["HAIL_BUILD_ID", "HAIL_ERROR", "HAIL_EVENT"]
        );
        let text = format!("fn f() {{ {call}; }}");
        let at = text.find("message_id").unwrap();
        assert_eq!(macro_call(&text, at), Some(&call[6..]));
    }
}
