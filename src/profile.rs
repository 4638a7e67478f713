//! A Nix profile on disk: what it points at, its generations, and the lock that makes one hail
//! its only deployer.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::store_path::StorePath;
use crate::types::ProfileState;

#[derive(Debug, Clone)]
pub struct Profile {
    path: PathBuf,
    /// Where what is deployed is read instead of the profile (`/run/current-system` for
    /// `--switch-action test`, which leaves the profile alone).
    current_link: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot create the profile directory {dir}: {source}")]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("cannot open the lock file {path}: {source}")]
    LockFile { path: PathBuf, source: io::Error },
    #[error("another hail is already deploying profile {profile} (it holds {lock})")]
    Locked { profile: PathBuf, lock: PathBuf },
    #[error("cannot read profile {profile}: {source}")]
    Read { profile: PathBuf, source: io::Error },
    #[error("cannot delete the generation link {link}: {source}")]
    Delete { link: PathBuf, source: io::Error },
    #[error("profile {profile} points at {target}, which is not a store path")]
    NotAStorePath { profile: PathBuf, target: String },
}

/// Held for the life of the agent; the OS releases it when the process ends, however it ends.
#[derive(Debug)]
pub struct ProfileLock {
    _file: File,
}

impl Profile {
    pub fn new(path: PathBuf) -> Self {
        Profile {
            path,
            current_link: None,
        }
    }

    /// A profile whose deployed path is read from `link` (it has no generation then).
    pub fn reading_current_from(mut self, link: PathBuf) -> Self {
        self.current_link = Some(link);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PROFILE.hail.lock` beside the profile (`PROFILE.lock` is nix-env's own).
    pub fn lock_path(&self) -> PathBuf {
        self.sibling(".hail.lock")
    }

    /// The temporary GC root that keeps a fetched path alive until the profile points at it.
    pub fn pending_root(&self) -> PathBuf {
        self.sibling(".hail-pending")
    }

    /// `PROFILE-N-link`, generation N's link beside the profile.
    pub fn generation_link(&self, generation: u64) -> PathBuf {
        self.sibling(&format!("-{generation}-link"))
    }

    pub fn activate_script(&self) -> PathBuf {
        self.path.join("bin/activate")
    }

    pub fn health_check_script(&self) -> PathBuf {
        self.path.join("bin/health-check")
    }

    /// The profile's path with `suffix` appended: a file beside it.
    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    }

    /// Creates the profile's directory if needed and takes the exclusive lock.
    pub fn lock(&self) -> Result<ProfileLock, ProfileError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ProfileError::CreateDir {
                dir: dir.to_owned(),
                source,
            })?;
        }
        let lock = self.lock_path();
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|source| ProfileError::LockFile {
                path: lock.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(ProfileLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(ProfileError::Locked {
                profile: self.path.clone(),
                lock,
            }),
            Err(std::fs::TryLockError::Error(source)) => {
                Err(ProfileError::LockFile { path: lock, source })
            }
        }
    }

    /// Reads the profile: `PROFILE -> PROFILE-N-link -> /nix/store/…`.
    pub fn state(&self) -> Result<ProfileState, ProfileError> {
        let path = self.current_link.as_ref().unwrap_or(&self.path);
        let read_err = |source| ProfileError::Read {
            profile: path.clone(),
            source,
        };
        let link = match std::fs::read_link(path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ProfileState::default()),
            Err(e) => return Err(read_err(e)),
        };
        let generation = link
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| self.generation_of(n))
            .filter(|_| self.current_link.is_none());
        let target = std::fs::canonicalize(path).map_err(read_err)?;
        let target = target.to_string_lossy();
        let current = StorePath::parse(&target).map_err(|_| ProfileError::NotAStorePath {
            profile: path.clone(),
            target: target.to_string(),
        })?;
        Ok(ProfileState {
            current: Some(current),
            generation,
        })
    }

    /// The numbers of the profile's generation links (`NAME-N-link` beside it).
    pub fn generations(&self) -> Result<Vec<u64>, ProfileError> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let entries = std::fs::read_dir(dir).map_err(|source| ProfileError::Read {
            profile: self.path.clone(),
            source,
        })?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| self.generation_of(e.file_name().to_str()?))
            .collect())
    }

    /// The store path generation `generation` holds, if it exists.
    pub fn generation_target(&self, generation: u64) -> Option<StorePath> {
        let target = std::fs::canonicalize(self.generation_link(generation)).ok()?;
        StorePath::parse(&target.to_string_lossy()).ok()
    }

    /// The newest generation that holds `path`, if any does.
    pub fn generation_holding(&self, path: &StorePath) -> Option<u64> {
        self.generations()
            .ok()?
            .into_iter()
            .filter(|g| self.generation_target(*g).as_ref() == Some(path))
            .max()
    }

    /// Whether the profile has a generation other than `generation`.
    pub fn has_other_generations(&self, generation: Option<u64>) -> bool {
        self.generations()
            .is_ok_and(|all| all.iter().any(|g| Some(*g) != generation))
    }

    /// Deletes generation links, as `nix-env --delete-generations` does (their store paths
    /// become garbage for Nix's own collection).
    pub fn delete_generations(&self, generations: &[u64]) -> Result<(), ProfileError> {
        for g in generations {
            match std::fs::remove_file(self.generation_link(*g)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ProfileError::Delete {
                        link: self.generation_link(*g),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// `NAME-N-link` → N, for this profile's NAME.
    fn generation_of(&self, link_name: &str) -> Option<u64> {
        let name = self.path.file_name()?.to_str()?;
        link_name
            .strip_prefix(name)?
            .strip_prefix('-')?
            .strip_suffix("-link")?
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_beside_the_profile() {
        let p = Profile::new(PathBuf::from("/nix/var/nix/profiles/web"));
        assert_eq!(
            p.lock_path(),
            Path::new("/nix/var/nix/profiles/web.hail.lock")
        );
        assert_eq!(
            p.activate_script(),
            Path::new("/nix/var/nix/profiles/web/bin/activate")
        );
        assert_eq!(p.generation_of("web-12-link"), Some(12));
        assert_eq!(
            p.generation_link(12),
            Path::new("/nix/var/nix/profiles/web-12-link")
        );
        assert_eq!(p.generation_of("web-x-link"), None);
        assert_eq!(p.generation_of("webby-1-link"), None);
        assert_eq!(p.generation_of("web-1-link-2-link"), None);
    }

    #[test]
    fn generations_are_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let p = Profile::new(dir.path().join("web"));
        for name in [
            "web-1-link",
            "web-3-link",
            "web-12-link",
            "webby-2-link",
            "web.hail.lock",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let mut gens = p.generations().unwrap();
        gens.sort();
        assert_eq!(gens, [1, 3, 12]);
        p.delete_generations(&[1, 12, 40]).unwrap();
        assert_eq!(p.generations().unwrap(), [3]);
        assert!(dir.path().join("webby-2-link").exists());
    }

    #[test]
    fn missing_profile_is_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let p = Profile::new(dir.path().join("web"));
        assert_eq!(p.state().unwrap(), ProfileState::default());
    }

    #[test]
    fn profile_not_pointing_into_the_store_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = Profile::new(dir.path().join("web"));
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        symlink(dir.path().join("elsewhere"), dir.path().join("web-3-link")).unwrap();
        symlink("web-3-link", dir.path().join("web")).unwrap();
        assert!(matches!(p.state(), Err(ProfileError::NotAStorePath { .. })));
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = Profile::new(dir.path().join("sub/web"));
        let held = p.lock().unwrap();
        assert!(matches!(p.lock(), Err(ProfileError::Locked { .. })));
        drop(held);
        assert!(p.lock().is_ok());
    }
}
