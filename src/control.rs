//! The operator's commands: `hail status` reads state directories and profiles; `pause`,
//! `resume` and `retry` leave a request in the agent's state directory and wake the agent
//! (SIGUSR1), which alone writes its state.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::cli::{InstanceArgs, StatusArgs, profile_path};
use crate::profile::Profile;
use crate::state::Request;
use crate::state_file::{Agent, STATE_ROOT, StateDir, StateError};
use crate::status::{self, Found};

/// How long a control command waits to see its request applied by a running agent.
const APPLIED_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0:?} is not an instance name (hail@NAME: no '/', not '.' or '..')")]
    BadName(String),
    #[error("--profile {0:?}: a profile is a name or an absolute path")]
    BadProfile(String),
    #[error("no state of an agent deploying {profile}: looked in {beside} and {STATE_ROOT}/*")]
    NoStateForProfile { profile: String, beside: String },
    #[error("name the instance (hail@NAME), or give --state-dir or --profile")]
    NoInstance,
    #[error(
        "no instance hail@{name} on this host (no state in {STATE_ROOT}/{name}, no unit or \
         settings of its own); instances here: {known}"
    )]
    NoSuchInstance { name: String, known: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot wake hail (pid {pid}): {source}")]
    Wake { pid: u32, source: std::io::Error },
}

impl ControlError {
    /// The documented exit codes (docs/src/reference/exit-codes.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            ControlError::BadName(_) | ControlError::BadProfile(_) | ControlError::NoInstance => 2,
            ControlError::NoStateForProfile { .. }
            | ControlError::NoSuchInstance { .. }
            | ControlError::State(_) => 3,
            ControlError::Wake { .. } => 1,
        }
    }
}

/// An instance's state directory, and its name when it was named.
struct Target {
    name: Option<String>,
    dir: StateDir,
}

/// `hail status`: one instance, or a table of every `hail@` instance on this host.
pub fn status(args: &StatusArgs) -> Result<(), ControlError> {
    let now = Timestamp::now();
    let Some(target) = resolve(&args.instance)? else {
        let reports: Vec<_> = instances()
            .into_iter()
            .map(|t| status::report(find(t)))
            .collect();
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&reports).expect("serialisable")
            );
        } else if reports.is_empty() {
            println!("no hail instances have state in {STATE_ROOT}");
        } else {
            print!("{}", status::table(&reports, now));
        }
        return Ok(());
    };
    let report = status::report(find(target));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        print!("{}", status::text(&report, now));
    }
    Ok(())
}

/// `hail pause`, `resume`, `retry`: the request is left for the agent, which is woken.
pub fn request(instance: &InstanceArgs, request: Request) -> Result<(), ControlError> {
    let target = resolve(instance)?.ok_or(ControlError::NoInstance)?;
    if let Some(name) = &target.name
        && !exists(name, &target.dir)
    {
        let known: Vec<String> = instances().into_iter().filter_map(|t| t.name).collect();
        return Err(ControlError::NoSuchInstance {
            name: name.clone(),
            known: if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            },
        });
    }
    let dir = &target.dir;
    dir.create()?;
    dir.put_request(&request)?;
    let who = target.name.as_ref().map_or_else(
        || format!("the agent of {}", dir.path().display()),
        |n| format!("hail@{n}"),
    );
    let Agent::Running(pid) = dir.agent() else {
        println!("{who} is not running; the request applies when it starts");
        return Ok(());
    };
    // SAFETY: kill(2) only sends a signal. The pid is that of the agent holding the state
    // directory's lock right now, not a stale one.
    if unsafe { libc::kill(pid as i32, libc::SIGUSR1) } != 0 {
        return Err(ControlError::Wake {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    let deadline = Instant::now() + APPLIED_WITHIN;
    // Until it is taken, or the agent is gone (killed while it was waiting: the request stays
    // for its next start).
    while dir.requests_waiting() && Instant::now() < deadline && dir.agent() == Agent::Running(pid)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !dir.requests_waiting() {
        println!("{who} (pid {pid}) took the request");
    } else if dir.agent() != Agent::Running(pid) {
        println!("{who} (pid {pid}) stopped before taking the request; it applies when it starts");
    } else {
        println!("asked {who} (pid {pid}); it has not taken the request yet");
    }
    Ok(())
}

fn resolve(args: &InstanceArgs) -> Result<Option<Target>, ControlError> {
    if let Some(name) = &args.name {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(ControlError::BadName(name.clone()));
        }
        return Ok(Some(Target {
            name: Some(name.clone()),
            dir: StateDir::new(Path::new(STATE_ROOT).join(name)),
        }));
    }
    if let Some(dir) = &args.state_dir {
        return Ok(Some(Target {
            name: None,
            dir: StateDir::new(dir.clone()),
        }));
    }
    let Some(arg) = &args.profile else {
        return Ok(None);
    };
    let profile = profile_path(arg).ok_or_else(|| ControlError::BadProfile(arg.clone()))?;
    let beside = StateDir::default_for(&profile, None);
    if beside.state_file().exists() {
        return Ok(Some(Target {
            name: None,
            dir: beside,
        }));
    }
    let wanted = profile.display().to_string();
    instances()
        .into_iter()
        .find(|t| matches!(t.dir.read(), Ok(Some(r)) if r.profile == wanted))
        .map(Some)
        .ok_or(ControlError::NoStateForProfile {
            profile: wanted,
            beside: beside.path().display().to_string(),
        })
}

/// Whether `hail@NAME` is an instance of this host: it has run (its state directory), or it is
/// configured (a unit or drop-in of its own, from NixOS, the manager or by hand, or
/// `/etc/hail/NAME.env`), so that a request may wait for its start.
fn exists(name: &str, dir: &StateDir) -> bool {
    let unit = format!("hail@{name}.service");
    dir.path().exists()
        || Path::new("/etc/hail").join(format!("{name}.env")).exists()
        || ["/etc/systemd/system", "/run/systemd/system"]
            .iter()
            .any(|d| {
                let d = Path::new(d);
                d.join(&unit).exists() || d.join(format!("{unit}.d")).exists()
            })
}

/// Every `hail@NAME` with a state directory on this host.
fn instances() -> Vec<Target> {
    let Ok(entries) = std::fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| Target {
            dir: StateDir::new(PathBuf::from(STATE_ROOT).join(&name)),
            name: Some(name),
        })
        .collect()
}

fn find(target: Target) -> Found {
    let record = target.dir.read().ok().flatten();
    let profile = record
        .as_ref()
        .filter(|r| !r.profile.is_empty())
        .and_then(|r| Profile::new(PathBuf::from(&r.profile)).state().ok());
    Found {
        instance: target.name,
        state_dir: target.dir.path().display().to_string(),
        pid: match target.dir.agent() {
            Agent::Running(pid) => Some(pid),
            Agent::NotRunning => None,
        },
        record,
        profile,
    }
}
