//! Store paths: validated before any nix command sees them.

use std::fmt;

/// The only store directory hail deploys from.
pub const STORE_DIR: &str = "/nix/store";

/// Nix's base-32 alphabet (no e, o, u, t).
const NIX_BASE32: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const HASH_LEN: usize = 32;
const MAX_NAME_LEN: usize = 211;

/// A well-formed top-level path in `/nix/store`: `/nix/store/<32-char hash>-<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StorePath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    #[error("{0:?} is not in {STORE_DIR}")]
    NotInStore(String),
    #[error("{0:?} is not a top-level store path")]
    NotTopLevel(String),
    #[error("{0:?} has a malformed hash (expected {HASH_LEN} base-32 characters)")]
    BadHash(String),
    #[error("{0:?} has a malformed name")]
    BadName(String),
}

impl StorePath {
    pub fn parse(s: &str) -> Result<Self, StorePathError> {
        let shown = || s.chars().take(300).collect::<String>();
        let rest = s
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(shown()))?;
        if rest.contains('/') || rest.is_empty() {
            return Err(StorePathError::NotTopLevel(shown()));
        }
        let (hash, name) = match (rest.get(..HASH_LEN), rest.get(HASH_LEN..)) {
            (Some(h), Some(n)) => (h, n),
            _ => return Err(StorePathError::BadHash(shown())),
        };
        if !hash.chars().all(|c| NIX_BASE32.contains(c)) {
            return Err(StorePathError::BadHash(shown()));
        }
        let name = name
            .strip_prefix('-')
            .ok_or_else(|| StorePathError::BadHash(shown()))?;
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-._?=".contains(c));
        if !name_ok {
            return Err(StorePathError::BadName(shown()));
        }
        Ok(StorePath(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `hash-name`, the last component.
    pub fn base_name(&self) -> &str {
        &self.0[STORE_DIR.len() + 1..]
    }

    /// A short form for status lines: the first 8 hash characters and the name.
    pub fn short(&self) -> String {
        let base = self.base_name();
        format!("{}…{}", &base[..8], &base[HASH_LEN..])
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile";

    #[test]
    fn accepts_well_formed_paths() {
        let p = StorePath::parse(GOOD).unwrap();
        assert_eq!(
            p.base_name(),
            "l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile"
        );
        assert_eq!(p.short(), "l9r346p3…-foo-profile");
        assert!(StorePath::parse("/nix/store/00000000000000000000000000000000-a+b_c.d?=e").is_ok());
    }

    #[test]
    fn refuses_hostile_paths() {
        for (bad, want) in [
            ("/etc/passwd", "not in"),
            ("nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-x", "not in"),
            ("/nix/storex/l9r346p3d25vs4g5v37f3r3f28js97kb-x", "not in"),
            ("/nix/store/../x", "top-level"),
            ("/nix/store/..", "hash"),
            ("/nix/store/", "top-level"),
            (
                "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-x/bin",
                "top-level",
            ),
            ("/nix/store/e9r346p3d25vs4g5v37f3r3f28js97kb-x", "hash"),
            ("/nix/store/L9R346P3D25VS4G5V37F3R3F28JS97KB-x", "hash"),
            ("/nix/store/l9r346p3d25vs4g5v37f3r3f28js97k-x", "hash"),
            ("/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kbx", "hash"),
            ("/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-", "name"),
            (
                "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-.hidden",
                "name",
            ),
            ("/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-a b", "name"),
            ("/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-a\nb", "name"),
            ("/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-é", "name"),
            ("/nix/store/l9r346p3d25vs4g5v37f3r3f28js97k\u{e9}-x", "hash"),
        ] {
            let err = StorePath::parse(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
        let long = format!(
            "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-{}",
            "a".repeat(212)
        );
        assert!(StorePath::parse(&long).is_err());
    }
}
