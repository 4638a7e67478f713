//! The state directory on disk: `state.json` (the [`Record`], written atomically), the operators'
//! requests waiting for the agent (`requests/`), and `agent.pid`, locked while an agent runs so
//! that control commands know whom to wake.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::record::{self, Record};
use crate::state::Request;

/// Where `hail@NAME` keeps its state (`StateDirectory=hail/%i`); `hail status` lists this
/// directory's instances.
pub const STATE_ROOT: &str = "/var/lib/hail";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the directory {dir}: {source}")]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a state file hail can read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    /// Another hail holds the directory.
    #[error("cannot lock {path}: another hail uses this state directory")]
    Held { path: PathBuf },
}

/// One instance's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
}

/// How [`StateDir::save`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Written,
    /// The directory was gone: it was made again, then written.
    DirectoryMadeAgain,
}

/// Held by the running agent: `agent.pid` with its pid, locked.
#[derive(Debug)]
pub struct AgentMark {
    _file: File,
}

/// Whether an agent runs on a state directory, and its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Running(u32),
    NotRunning,
}

impl StateDir {
    pub fn new(dir: PathBuf) -> Self {
        StateDir { dir }
    }

    /// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; its first entry), else `PROFILE.hail-state`
    /// beside the profile.
    pub fn default_for(profile: &Path, state_directory: Option<&str>) -> Self {
        match state_directory
            .and_then(|s| s.split(':').next())
            .filter(|s| !s.is_empty())
        {
            Some(dir) => StateDir::new(PathBuf::from(dir)),
            None => {
                let mut s = profile.as_os_str().to_owned();
                s.push(".hail-state");
                StateDir::new(PathBuf::from(s))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn requests_dir(&self) -> PathBuf {
        self.dir.join("requests")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("agent.pid")
    }

    pub fn create(&self) -> Result<(), StateError> {
        fs::create_dir_all(self.requests_dir()).map_err(|source| StateError::CreateDir {
            dir: self.dir.clone(),
            source,
        })
    }

    /// Reads `state.json` without changing anything (for `hail status`); `None` when there is none.
    pub fn read(&self) -> Result<Option<Record>, StateError> {
        let path = self.state_file();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        parse(&text)
            .map(Some)
            .map_err(|reason| StateError::Unreadable { path, reason })
    }

    /// The agent's view at start-up: the saved record, or a fresh one. A file that cannot be used
    /// (unreadable, corrupt, from a newer hail) is moved aside as `state.json.corrupt-<time>` and
    /// said why in the returned message: it never stops hail from deploying.
    pub fn load(&self, now: Timestamp) -> (Record, Option<String>) {
        match self.read() {
            Ok(record) => (record.unwrap_or_default(), None),
            Err(e) => {
                let aside = self
                    .dir
                    .join(format!("state.json.corrupt-{}", now.as_second()));
                let moved = match fs::rename(self.state_file(), &aside) {
                    Ok(()) => format!("moved aside to {}", aside.display()),
                    Err(m) => format!("could not be moved aside ({m})"),
                };
                (
                    Record::default(),
                    Some(format!("{e}; {moved}; starting afresh")),
                )
            }
        }
    }

    /// Writes `record` atomically: a temporary file, fsync, rename, fsync of the directory. A
    /// directory that is gone (removed while the agent ran) is made again.
    pub fn save(&self, record: &Record) -> Result<Saved, StateError> {
        let mut text = serde_json::to_vec_pretty(record).expect("a record serialises");
        text.push(b'\n');
        match write_atomically(&self.state_file(), &text, Durable::Yes) {
            Ok(()) => Ok(Saved::Written),
            Err(StateError::Write { source, .. })
                if source.kind() == io::ErrorKind::NotFound && !self.dir.exists() =>
            {
                self.create()?;
                write_atomically(&self.state_file(), &text, Durable::Yes)?;
                Ok(Saved::DirectoryMadeAgain)
            }
            Err(e) => Err(e),
        }
    }

    /// Marks this directory as the running agent's: writes and locks `agent.pid`.
    pub fn mark_agent(&self) -> Result<AgentMark, StateError> {
        let path = self.pid_file();
        let lock_err = |source| StateError::Lock {
            path: path.clone(),
            source,
        };
        // A file that cannot be made or written (a read-only or full state directory) is not
        // another hail's.
        let write_err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(write_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StateError::Held { path: path.clone() });
            }
            Err(fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        // Written over the old pid, then cut to length: no new block is needed on a full disk.
        let pid = format!("{}\n", std::process::id());
        std::os::unix::fs::FileExt::write_all_at(&file, pid.as_bytes(), 0)
            .and_then(|()| file.set_len(pid.len() as u64))
            .map_err(write_err)?;
        Ok(AgentMark { _file: file })
    }

    /// Whether an agent holds this directory now.
    pub fn agent(&self) -> Agent {
        let Ok(file) = File::open(self.pid_file()) else {
            return Agent::NotRunning;
        };
        match file.try_lock_shared() {
            Err(fs::TryLockError::WouldBlock) => fs::read_to_string(self.pid_file())
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map_or(Agent::NotRunning, Agent::Running),
            _ => Agent::NotRunning,
        }
    }

    /// Leaves a request for the agent (each in a file of its own, so none is lost when several
    /// are made at once).
    pub fn put_request(&self, request: &Request) -> Result<(), StateError> {
        let now = Timestamp::now();
        let name = format!(
            "{:020}-{:09}-{}.json",
            now.as_second(),
            now.subsec_nanosecond(),
            std::process::id()
        );
        let text = serde_json::to_vec(request).expect("a request serialises");
        write_atomically(&self.requests_dir().join(name), &text, Durable::Yes)
    }

    /// Whether requests wait for the agent.
    pub fn requests_waiting(&self) -> bool {
        !self.request_files().is_empty()
    }

    /// The requests' files, oldest first (a request being written is a dot file until renamed).
    fn request_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.requests_dir()) else {
            return Vec::new();
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
            })
            .collect();
        names.sort();
        names
    }

    /// Takes the waiting requests, oldest first. A request that cannot be read is dropped and
    /// said why.
    pub fn take_requests(&self) -> Vec<Result<Request, String>> {
        self.request_files()
            .into_iter()
            .map(|p| {
                let r = fs::read(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_slice(&t).map_err(|e| e.to_string()))
                    .map_err(|e| format!("request {} ignored: {e}", p.display()));
                let _ = fs::remove_file(&p);
                r
            })
            .collect()
    }
}

fn parse(text: &[u8]) -> Result<Record, String> {
    #[derive(serde::Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    if v.version > record::VERSION {
        return Err(format!(
            "written in format {} by a newer hail (this one reads up to {})",
            v.version,
            record::VERSION
        ));
    }
    serde_json::from_slice(text).map_err(|e| e.to_string())
}

/// Whether a file must survive a crash of the machine, or is rewritten soon anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// fsync the file before the rename and the directory after it.
    Yes,
    /// Only atomic for readers (metrics, rewritten at every poll).
    No,
}

/// Writes `path` so that a reader sees the old file or the new one, never a part.
pub fn write_atomically(path: &Path, content: &[u8], durable: Durable) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write_err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let sync = |f: &File| match durable {
        Durable::Yes => f.sync_all(),
        Durable::No => Ok(()),
    };
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(content).and_then(|()| sync(&f)))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    if durable == Durable::No {
        return Ok(());
    }
    // The rename itself is durable once the directory is synced.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn a_missing_file_is_a_fresh_start_and_a_saved_one_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().join("s"));
        sd.create().unwrap();
        assert_eq!(sd.load(now()), (Record::default(), None));
        let r = Record {
            paused: true,
            pause_reason: Some("x".into()),
            ..Record::default()
        };
        sd.save(&r).unwrap();
        assert_eq!(sd.load(now()), (r.clone(), None));
        assert_eq!(sd.read().unwrap(), Some(r));
    }

    #[test]
    fn corrupt_and_newer_files_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().to_owned());
        sd.create().unwrap();
        for (text, says) in [
            ("{not json", "key must be a string"),
            (r#"{"version": 99}"#, "newer hail"),
            (r#"{"version": 1, "paused": "yes"}"#, "invalid type"),
        ] {
            fs::write(sd.state_file(), text).unwrap();
            let (record, problem) = sd.load(now());
            assert_eq!(record, Record::default());
            let problem = problem.unwrap();
            assert!(
                problem.contains(says) && problem.contains("moved aside"),
                "{problem}"
            );
            assert!(!sd.state_file().exists());
            let aside = dir.path().join("state.json.corrupt-1800000000");
            assert_eq!(fs::read_to_string(&aside).unwrap(), text);
        }
    }

    #[test]
    fn requests_are_taken_in_order_once() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().to_owned());
        sd.create().unwrap();
        sd.put_request(&Request::Pause {
            reason: Some("a".into()),
        })
        .unwrap();
        sd.put_request(&Request::Resume).unwrap();
        fs::write(sd.requests_dir().join("0-bad.json"), "nonsense").unwrap();
        let taken = sd.take_requests();
        assert_eq!(taken.len(), 3);
        let bad = taken[0].as_ref().unwrap_err();
        assert!(bad.contains("0-bad.json"), "{bad}");
        assert_eq!(
            taken[1],
            Ok(Request::Pause {
                reason: Some("a".into())
            })
        );
        assert_eq!(taken[2], Ok(Request::Resume));
        assert!(sd.take_requests().is_empty());
        // A file that is no request (or one still being written) is not waited for.
        fs::write(sd.requests_dir().join("stray.txt"), "").unwrap();
        fs::write(sd.requests_dir().join(".1-2.json.tmp-3"), "").unwrap();
        assert!(!sd.requests_waiting());
    }

    #[test]
    fn the_agent_mark_says_who_runs() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().to_owned());
        sd.create().unwrap();
        assert_eq!(sd.agent(), Agent::NotRunning);
        let mark = sd.mark_agent().unwrap();
        assert_eq!(sd.agent(), Agent::Running(std::process::id()));
        assert!(
            matches!(sd.mark_agent(), Err(StateError::Held { .. })),
            "a second agent was let in"
        );
        drop(mark);
        assert_eq!(sd.agent(), Agent::NotRunning);
    }

    #[test]
    fn default_directories() {
        let p = Path::new("/nix/var/nix/profiles/hail/web");
        assert_eq!(
            StateDir::default_for(p, Some("/var/lib/hail/web")).path(),
            Path::new("/var/lib/hail/web")
        );
        assert_eq!(
            StateDir::default_for(p, Some("/var/lib/hail/web:/var/lib/other")).path(),
            Path::new("/var/lib/hail/web")
        );
        assert_eq!(
            StateDir::default_for(p, None).path(),
            Path::new("/nix/var/nix/profiles/hail/web.hail-state")
        );
    }
}
