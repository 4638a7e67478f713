//! The manager: converge this host's `hail@` instances to a set given as data.
//!
//! A manager profile (built by `nix/manager.nix`) holds `instances.json` and a `bin/activate`
//! running `hail apply-instances FILE`. That command starts the real work in a transient systemd
//! unit of its own (`systemd-run`) and waits for it: the manager may be one of the instances it
//! restarts, and an apply inside the manager's own unit would be killed with it.
//!
//! The apply: read the set ([`set`]), observe the host ([`host`], its units through [`units`]),
//! plan ([`plan`], pure), run the steps. Managed instances are configured by drop-ins under
//! `/run/systemd/system`, where a NixOS switch does not remove them; after a reboot the
//! manager's start-up activation writes them again. Instances configured under `/etc` (NixOS's
//! `services.hail.<name>`, an operator's unit) are never touched.

mod host;
mod plan;
mod set;
mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn};

use crate::cli::ApplyArgs;
use crate::process::{self, CommandLine, ProcessError};
use host::{Host, HostError};
use plan::{Observed, Step};
pub use set::{InstanceSet, SetError};

// Bounds of each step (an apply always ends; the caller's activation timeout bounds the wait).
/// Waiting for another apply to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Commands that return at once: `systemctl show`, `reset-failed`, a queued restart, the journal.
const QUICK_TIMEOUT: Duration = Duration::from_secs(30);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// hail lets a running activation finish (60 s) and the template allows 90 s to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(3 * 60);
const DEACTIVATE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Starting an instance includes its start-up activation.
const RESTART_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long the transient unit may take, as seen by the caller.
const APPLY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Set(#[from] SetError),
    #[error(
        "systemd is not running on this host (no /run/systemd/system); the manager needs it to \
         run hail instances"
    )]
    NoSystemd,
    #[error("--caller {0:?} is not an instance name")]
    BadCaller(String),
    #[error("cannot find the running hail executable: {0}")]
    Exe(std::io::Error),
    #[error(
        "instance {instance}: its credential file {path} does not exist; create it (mode 0600) \
         or remove it from the instance's settings. Nothing was changed."
    )]
    MissingCredential { instance: String, path: PathBuf },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("the apply in {unit} failed ({detail}); its log: journalctl -u {unit}")]
    TransientUnit { unit: String, detail: String },
    #[error("the instance set was applied in part: {}", .0.join("; "))]
    Incomplete(Vec<String>),
}

impl ManagerError {
    /// The process exit code, as in hail's table: 3 when the set or the host's configuration is
    /// wrong (fix it and retry), 1 when applying it failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            ManagerError::Set(_)
            | ManagerError::NoSystemd
            | ManagerError::BadCaller(_)
            | ManagerError::MissingCredential { .. } => 3,
            _ => 1,
        }
    }
}

/// Converges systemd to the set in `args.instances`.
pub fn apply(args: &ApplyArgs) -> Result<(), ManagerError> {
    // Check the set before anything else: a bad one fails here, in the caller's own output.
    let set = InstanceSet::load(&args.instances)?;
    if args.check {
        for instance in set.instances.values() {
            println!("# {}.d/{}", units::unit(&instance.name), host::DROPIN_NAME);
            println!("{}", instance.dropin);
        }
        return Ok(());
    }
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(ManagerError::NoSystemd);
    }
    let caller = match &args.caller {
        Some(name) if set::valid_name(name) => Some(name.clone()),
        Some(name) => return Err(ManagerError::BadCaller(name.clone())),
        None => std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|cgroup| units::instance_of_cgroup(&cgroup)),
    };
    if args.direct {
        apply_here(&set, caller, &Host::system())
    } else {
        apply_in_transient_unit(&args.instances, caller.as_deref())
    }
}

/// Runs `hail apply-instances --direct` in a transient unit and waits for its result.
fn apply_in_transient_unit(set_file: &Path, caller: Option<&str>) -> Result<(), ManagerError> {
    let exe = std::env::current_exe().map_err(ManagerError::Exe)?;
    // The exact set (a store path), even if the profile moves on meanwhile.
    let set_file = std::fs::canonicalize(set_file).map_err(|source| SetError::Read {
        path: set_file.to_path_buf(),
        source,
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let unit_name = format!(
        "hail-apply-{}-{}-{}",
        caller.unwrap_or("manual"),
        now.as_secs(),
        std::process::id()
    );
    let unit = format!("{unit_name}.service");
    let env: Vec<(String, String)> = units::PASSED_ENV
        .iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .collect();
    let cmd = units::systemd_run_apply(&unit_name, &exe, &set_file, caller, &env);
    info!(
        hail.event = "apply-started",
        hail.unit = %unit,
        "applying the instance set {} in the transient unit {unit} (journalctl -u {unit})",
        set_file.display()
    );
    match process::run_inherited(&cmd, &[], APPLY_TIMEOUT) {
        Ok(()) => {
            info!(hail.event = "apply-finished", hail.unit = %unit, "{unit} finished: the instance set is applied");
            Ok(())
        }
        Err(ProcessError::Failed { status, .. }) => {
            // Repeat the apply's own account here, so the caller's log says why.
            if let Ok(log) = process::run_captured(&units::journal(&unit), QUICK_TIMEOUT) {
                for line in log.lines().filter(|l| !l.is_empty()) {
                    error!("{unit}: {line}");
                }
            }
            Err(ManagerError::TransientUnit {
                unit,
                detail: status.to_string(),
            })
        }
        Err(e) => Err(ManagerError::TransientUnit {
            unit,
            detail: e.to_string(),
        }),
    }
}

/// The apply itself: observe, plan, run the steps.
fn apply_here(set: &InstanceSet, caller: Option<String>, host: &Host) -> Result<(), ManagerError> {
    let _lock = host.lock(LOCK_TIMEOUT)?;
    let owned = host.owned_dropins()?;
    let names: BTreeSet<String> = set.instances.keys().chain(owned.keys()).cloned().collect();
    let foreign: BTreeSet<String> = names
        .iter()
        .filter(|n| host.is_foreign(n))
        .cloned()
        .collect();

    // Preconditions, before any change: every credential an instance will load exists.
    for instance in set
        .instances
        .values()
        .filter(|i| !foreign.contains(&i.name))
    {
        if let Some(path) = instance.credential_files.iter().find(|p| !p.exists()) {
            return Err(ManagerError::MissingCredential {
                instance: instance.name.clone(),
                path: path.clone(),
            });
        }
    }

    let names: Vec<String> = names.into_iter().collect();
    let observed = Observed {
        owned,
        foreign,
        running: host::running(&names, QUICK_TIMEOUT)?,
        caller,
    };
    let steps = plan::plan(set, &observed);
    info!(
        hail.event = "apply-plan",
        "{} instances in the set; plan: {}",
        set.instances.len(),
        if steps.is_empty() {
            "nothing to do".to_string()
        } else {
            describe(&steps)
        }
    );
    run_steps(&steps, set, host)
}

fn describe(steps: &[Step]) -> String {
    let words: Vec<String> = steps
        .iter()
        .map(|s| match s {
            Step::SkipForeign(n) => format!("skip {n} (system-owned)"),
            Step::Disown(n) => format!("disown {n}"),
            Step::Remove { name, .. } => format!("remove {name}"),
            Step::KeepCaller(n) => format!("keep {n}"),
            Step::Write { name, .. } => format!("configure {name}"),
            Step::DaemonReload => "daemon-reload".to_string(),
            Step::Restart(names) => format!("(re)start {}", names.join(" ")),
            Step::RestartCallerNoBlock(n) => format!("restart {n} last"),
        })
        .collect();
    words.join(", ")
}

/// Runs the steps in order. A failure of one instance does not stop the others; writing
/// drop-ins or reloading systemd failing does (nothing after it could work).
fn run_steps(steps: &[Step], set: &InstanceSet, host: &Host) -> Result<(), ManagerError> {
    let mut failures = Vec::new();
    let mut summary: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for step in steps {
        match step {
            Step::SkipForeign(name) => {
                warn!(
                    hail.instance = %name,
                    "hail@{name} is configured by the system (a unit or drop-in under /etc, e.g. \
                     NixOS's services.hail.{name}); the set's entry for it is ignored"
                );
                summary.entry("skipped").or_default().push(name.clone());
            }
            Step::Disown(name) => {
                host.remove_dropin(name)?;
                info!(hail.instance = %name, "hail@{name} is now configured by the system: removed the manager's drop-in");
            }
            Step::KeepCaller(name) => {
                warn!(
                    hail.instance = %name,
                    "hail@{name} runs this apply and is no longer in the set; it keeps running \
                     with its configuration (remove it by hand: systemctl stop hail@{name})"
                );
            }
            Step::Remove { name, profile } => match remove_instance(host, name, profile) {
                Ok(()) => summary.entry("removed").or_default().push(name.clone()),
                Err(e) => {
                    error!(hail.instance = %name, hail.error = %e, "removing hail@{name} failed: {e}");
                    failures.push(format!("removing hail@{name}: {e}"));
                }
            },
            Step::Write { name, content } => {
                host.write_dropin(name, content)?;
                info!(hail.instance = %name, "configured hail@{name}");
            }
            Step::DaemonReload => {
                process::run_captured(&units::daemon_reload(), RELOAD_TIMEOUT)?;
            }
            Step::Restart(names) => {
                restart_and_check(set, names, &mut failures)?;
                summary
                    .entry("(re)started")
                    .or_default()
                    .extend(names.iter().cloned());
            }
            Step::RestartCallerNoBlock(name) => {
                if !failures.is_empty() {
                    warn!(
                        hail.instance = %name,
                        "not restarting hail@{name}, this apply failed: it keeps running as it is"
                    );
                    continue;
                }
                process::run_captured(&units::restart_no_block(name), QUICK_TIMEOUT)?;
                info!(hail.instance = %name, "restart of hail@{name} queued (it runs this apply)");
                summary
                    .entry("restart queued")
                    .or_default()
                    .push(name.clone());
            }
        }
    }
    let touched: BTreeSet<&String> = summary.values().flatten().collect();
    let unchanged: Vec<String> = set
        .instances
        .keys()
        .filter(|n| !touched.contains(n))
        .cloned()
        .collect();
    summary.insert("unchanged", unchanged);
    let text: Vec<String> = summary
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}: {}", v.join(" ")))
        .collect();
    if failures.is_empty() {
        info!(
            hail.event = "apply-done",
            "instance set applied; {}",
            text.join("; ")
        );
        Ok(())
    } else {
        Err(ManagerError::Incomplete(failures))
    }
}

/// Stop, `bin/deactivate`, profile, drop-in — in that order, so that a removal interrupted
/// anywhere is found (by its drop-in) and finished by the next apply.
fn remove_instance(host: &Host, name: &str, profile: &Path) -> Result<(), HostError> {
    process::run_captured(&units::stop(name), STOP_TIMEOUT)?;
    // A failed unit would stay listed until reset.
    let _ = process::run_captured(&units::reset_failed(&[name.to_string()]), QUICK_TIMEOUT);
    let deactivate = profile.join("bin/deactivate");
    if deactivate.is_file() {
        info!(hail.instance = %name, "running {}", deactivate.display());
        process::run_inherited(
            &CommandLine::new(&deactivate),
            &[("HAIL_PROFILE", profile.as_os_str())],
            DEACTIVATE_TIMEOUT,
        )?;
    }
    if profile == host.profile(name) {
        for path in host.remove_profile(name)? {
            info!(hail.instance = %name, "deleted {}", path.display());
        }
    } else {
        info!(hail.instance = %name, "left the profile {} (not under {})", profile.display(), host.profiles.display());
    }
    host.remove_dropin(name)?;
    info!(hail.instance = %name, "removed hail@{name}");
    Ok(())
}

/// (Re)starts the instances together and checks each runs its new configuration.
fn restart_and_check(
    set: &InstanceSet,
    names: &[String],
    failures: &mut Vec<String>,
) -> Result<(), HostError> {
    // A unit that hit its start limit refuses to start until reset.
    let _ = process::run_captured(&units::reset_failed(names), QUICK_TIMEOUT);
    let mut result = process::run_captured(&units::restart(names), RESTART_TIMEOUT);
    // systemd failing to set a process up (a cgroup still being torn down, say) is not the
    // instance's doing: those are started once more.
    let mut shown = host::show(names, QUICK_TIMEOUT)?;
    let again: Vec<String> = shown
        .setup_failures()
        .into_iter()
        .map(|(name, status)| {
            warn!(hail.instance = %name, "systemd could not start hail@{name} (exit status {status}); trying once more");
            name
        })
        .collect();
    if !again.is_empty() {
        // A moment for what systemd was tearing down.
        std::thread::sleep(Duration::from_secs(1));
        let _ = process::run_captured(&units::reset_failed(&again), QUICK_TIMEOUT);
        result = process::run_captured(&units::restart(&again), RESTART_TIMEOUT);
        shown = host::show(names, QUICK_TIMEOUT)?;
    }
    let running = shown.running();
    for name in names {
        let expected = set.instances.get(name).map(|i| i.config_id.clone());
        if running.get(name) == Some(&expected) {
            info!(hail.instance = %name, "hail@{name} is running with its configuration");
        } else {
            let why = match &result {
                Err(e) => e.to_string(),
                Ok(_) => "it is not running".to_string(),
            };
            error!(hail.instance = %name, "hail@{name} did not start: {why}");
            failures.push(format!(
                "hail@{name} did not start (systemctl status hail@{name})"
            ));
        }
    }
    Ok(())
}
