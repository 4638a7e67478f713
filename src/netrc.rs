//! netrc files, read as curl (and so Nix) reads them: `#` comments, quoted tokens with backslash
//! escapes, `default`, `macdef` bodies skipped. A file that cannot be parsed is an error, never
//! silently "no credentials".

use std::fmt;
use std::path::{Path, PathBuf};

/// A login and password for one host. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub login: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Entry {
    /// `None` for `default`.
    machine: Option<String>,
    login: Option<String>,
    password: Option<String>,
}

/// A parsed netrc file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netrc {
    entries: Vec<Entry>,
    /// Lines holding words that are no keyword (curl skips them too).
    skipped_lines: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetrcError {
    #[error("cannot read netrc file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("netrc file {path}, line {line}: {problem}")]
    Syntax {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

#[derive(Debug, PartialEq, Eq)]
struct SyntaxError {
    line: usize,
    problem: String,
}

impl Netrc {
    /// Reads and parses `path`. The second value holds warnings to report: the file is readable
    /// by group or others (curl and Nix accept such a file, but it leaks the secrets), or words
    /// that are no keyword were skipped (as curl does; often an unquoted password with spaces).
    pub fn load(path: &Path) -> Result<(Netrc, Vec<String>), NetrcError> {
        let read_err = |source| NetrcError::Read {
            path: path.to_owned(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let netrc = Netrc::parse(&text).map_err(|e| NetrcError::Syntax {
            path: path.to_owned(),
            line: e.line,
            problem: e.problem,
        })?;
        let mut warnings: Vec<String> = permissions_warning(path).into_iter().collect();
        if !netrc.skipped_lines.is_empty() {
            let lines: Vec<String> = netrc.skipped_lines.iter().map(|l| l.to_string()).collect();
            warnings.push(format!(
                "netrc file {}: skipped words that are no keyword on line(s) {}; quote values \
                 that contain spaces",
                path.display(),
                lines.join(", ")
            ));
        }
        Ok((netrc, warnings))
    }

    fn parse(text: &str) -> Result<Netrc, SyntaxError> {
        let mut tokens = Tokens::new(text);
        let mut entries: Vec<Entry> = Vec::new();
        let mut skipped_lines: Vec<usize> = Vec::new();
        while let Some((line, word)) = tokens.next_token()? {
            // Keywords are case-insensitive for curl.
            let word = word.to_ascii_lowercase();
            match word.as_str() {
                "machine" => {
                    let (_, host) = tokens.value(line, "machine")?;
                    entries.push(Entry {
                        machine: Some(host),
                        ..Entry::default()
                    });
                }
                "default" => entries.push(Entry::default()),
                "login" | "password" | "account" | "port" => {
                    let (_, value) = tokens.value(line, &word)?;
                    let entry = entries.last_mut().ok_or_else(|| SyntaxError {
                        line,
                        problem: format!("{word:?} before any \"machine\" or \"default\""),
                    })?;
                    match word.as_str() {
                        "login" => entry.login = Some(value),
                        "password" => entry.password = Some(value),
                        _ => {} // account and port: accepted, not used (as curl)
                    }
                }
                "macdef" => {
                    tokens.value(line, "macdef")?;
                    tokens.skip_macro_body();
                }
                // As curl: skipped. The word itself is never repeated (it may be a secret).
                _ => {
                    if skipped_lines.last() != Some(&line) {
                        skipped_lines.push(line);
                    }
                }
            }
        }
        Ok(Netrc {
            entries,
            skipped_lines,
        })
    }

    /// Whether an entry (a `machine` for `host`, or `default`) applies to `host`.
    pub fn has_entry_for(&self, host: &str) -> bool {
        self.entries.iter().any(|e| {
            e.machine
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(host))
        })
    }

    /// The credentials for `host`: the first `machine` entry naming it, else the `default` entry.
    /// An entry without a password gives none (Basic auth needs both).
    pub fn credentials_for(&self, host: &str) -> Option<Credentials> {
        let machine = self.entries.iter().find(|e| {
            e.machine
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(host))
        });
        let entry = machine.or_else(|| self.entries.iter().find(|e| e.machine.is_none()))?;
        Some(Credentials {
            login: entry.login.clone().unwrap_or_default(),
            password: entry.password.clone()?,
        })
    }
}

fn permissions_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "netrc file {} is readable by group or others (mode {:o}); restrict it with chmod 600",
            path.display(),
            mode & 0o777
        )
    })
}

/// curl's tokenizer: whitespace-separated words, `"…"` with `\"`, `\\`, `\n`, `\r`, `\t`
/// escapes, and `#` at the start of a word commenting out the rest of the line.
struct Tokens<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Tokens {
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    fn next_token(&mut self) -> Result<Option<(usize, String)>, SyntaxError> {
        loop {
            match self.chars.peek() {
                None => return Ok(None),
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while self.chars.peek().is_some_and(|&c| c != '\n') {
                        self.bump();
                    }
                }
                Some('"') => {
                    let line = self.line;
                    self.bump();
                    return self.quoted(line).map(|w| Some((line, w)));
                }
                Some(_) => {
                    let line = self.line;
                    let mut word = String::new();
                    while let Some(&c) = self.chars.peek() {
                        if c.is_whitespace() {
                            break;
                        }
                        word.push(c);
                        self.bump();
                    }
                    return Ok(Some((line, word)));
                }
            }
        }
    }

    fn quoted(&mut self, line: usize) -> Result<String, SyntaxError> {
        let mut word = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(SyntaxError {
                        line,
                        problem: "unterminated quoted word".into(),
                    });
                }
                Some('"') => return Ok(word),
                Some('\\') => match self.bump() {
                    Some('n') => word.push('\n'),
                    Some('r') => word.push('\r'),
                    Some('t') => word.push('\t'),
                    Some(c) => word.push(c),
                    None => {
                        return Err(SyntaxError {
                            line,
                            problem: "unterminated quoted word".into(),
                        });
                    }
                },
                Some(c) => word.push(c),
            }
        }
    }

    /// The value after keyword `key`; a missing one is an error.
    fn value(&mut self, line: usize, key: &str) -> Result<(usize, String), SyntaxError> {
        self.next_token()?.ok_or_else(|| SyntaxError {
            line,
            problem: format!("{key:?} without a value"),
        })
    }

    /// A macro body runs to the next empty line.
    fn skip_macro_body(&mut self) {
        // The rest of the macdef line first.
        while let Some(c) = self.bump() {
            if c == '\n' {
                break;
            }
        }
        let mut line_empty = true;
        while let Some(c) = self.bump() {
            match c {
                '\n' if line_empty => return,
                '\n' => line_empty = true,
                _ => line_empty = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(text: &str, host: &str) -> Option<(String, String)> {
        Netrc::parse(text)
            .unwrap()
            .credentials_for(host)
            .map(|c| (c.login, c.password))
    }

    fn pair(l: &str, p: &str) -> Option<(String, String)> {
        Some((l.into(), p.into()))
    }

    #[test]
    fn machine_then_default() {
        let text = "machine a.example login la password pa\ndefault login ld password pd\n";
        assert_eq!(creds(text, "a.example"), pair("la", "pa"));
        assert_eq!(creds(text, "A.EXAMPLE"), pair("la", "pa"));
        assert_eq!(creds(text, "b.example"), pair("ld", "pd"));
    }

    #[test]
    fn default_before_machine_does_not_shadow_it() {
        let text = "default login ld password pd\nmachine a login la password pa\n";
        assert_eq!(creds(text, "a"), pair("la", "pa"));
    }

    #[test]
    fn first_matching_machine_wins() {
        let text = "machine a login one password 1\nmachine a login two password 2\n";
        assert_eq!(creds(text, "a"), pair("one", "1"));
    }

    #[test]
    fn no_match_no_default() {
        assert_eq!(creds("machine a login l password p", "b"), None);
        assert_eq!(creds("", "b"), None);
    }

    #[test]
    fn comments_are_skipped() {
        let text = "# hydra credentials\nmachine a # the cache\n  login l\n  #password nope\n  password p\n";
        assert_eq!(creds(text, "a"), pair("l", "p"));
    }

    #[test]
    fn quoted_tokens_with_spaces_and_escapes() {
        let text = r#"machine a login "my user" password "p a\"ss\\w#rd""#;
        assert_eq!(creds(text, "a"), pair("my user", "p a\"ss\\w#rd"));
    }

    #[test]
    fn hash_inside_a_word_is_part_of_it() {
        assert_eq!(
            creds("machine a login l password p#q", "a"),
            pair("l", "p#q")
        );
    }

    #[test]
    fn single_line_and_tabs() {
        assert_eq!(
            creds("machine\ta\tlogin\tl\tpassword\tp", "a"),
            pair("l", "p")
        );
    }

    #[test]
    fn account_and_port_are_accepted() {
        let text = "machine a login l password p account acct port 8080\n";
        assert_eq!(creds(text, "a"), pair("l", "p"));
    }

    #[test]
    fn macdef_body_is_skipped() {
        let text = "macdef init\ncd /pub\nmachine fake login x password y\n\nmachine a login l password p\n";
        assert_eq!(creds(text, "a"), pair("l", "p"));
        assert_eq!(creds(text, "fake"), None);
    }

    #[test]
    fn entry_without_password_gives_nothing() {
        assert_eq!(creds("machine a login l", "a"), None);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (text, line, want) in [
            ("machine a login l password \"open", 1, "unterminated"),
            ("machine a\nlogin", 2, "without a value"),
            ("login l password p", 1, "before any"),
            ("machine", 1, "without a value"),
        ] {
            let err = Netrc::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}");
            assert!(err.problem.contains(want), "{text:?}: {}", err.problem);
        }
    }

    #[test]
    fn keywords_are_case_insensitive_and_unknown_words_skipped() {
        let text = "Machine a Login l PASSWORD p protocol https\n";
        assert_eq!(creds(text, "a"), pair("l", "p"));
        let n = Netrc::parse("machine a login l password my s3cret words\nmachine b").unwrap();
        assert_eq!(n.skipped_lines, [1]);
        assert_eq!(n.credentials_for("a").unwrap().password, "my");
    }

    #[test]
    fn skipped_words_are_warned_about_without_repeating_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netrc");
        std::fs::write(&path, "machine a login l password my s3cret words\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (_, warnings) = Netrc::load(&path).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("line(s) 1"), "{warnings:?}");
        assert!(!warnings[0].contains("s3cret"), "{warnings:?}");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials {
            login: "l".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn load_warns_about_readable_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netrc");
        std::fs::write(&path, "machine a login l password p\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Netrc::load(&path).unwrap().1.is_empty());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Netrc::load(&path).unwrap().1[0].contains("chmod 600"));
        let missing = Netrc::load(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read netrc file"), "{missing}");
    }
}
