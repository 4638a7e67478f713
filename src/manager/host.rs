//! The host an apply changes: the manager's drop-in files, the instances' profiles, the apply
//! lock, and which instances run with which configuration.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::set::valid_name;
use super::units::{self, Shown, config_id_in_environ, instance_of_unit, parse_show, unit};
use crate::process::{ProcessError, run_captured};

/// File name of the manager's drop-in in `hail@NAME.service.d/`.
pub const DROPIN_NAME: &str = "hail-manager.conf";

/// Where things are on this host (tests point these at temporary directories).
#[derive(Debug, Clone)]
pub struct Host {
    /// Runtime unit directory: the manager's drop-ins live here, so a NixOS switch (which owns
    /// /etc) never removes them and a reboot starts from the boot configuration.
    pub run_units: PathBuf,
    /// The system configuration's unit directory (NixOS, the operator).
    pub etc_units: PathBuf,
    /// Directory of the instances' profiles.
    pub profiles: PathBuf,
    /// Serializes applies on this host.
    pub lock_file: PathBuf,
}

impl Host {
    pub fn system() -> Host {
        Host {
            run_units: PathBuf::from("/run/systemd/system"),
            etc_units: PathBuf::from("/etc/systemd/system"),
            profiles: PathBuf::from(super::set::PROFILES_DIR),
            lock_file: PathBuf::from("/run/hail/apply-instances.lock"),
        }
    }

    fn dropin_dir(&self, name: &str) -> PathBuf {
        self.run_units.join(format!("{}.d", unit(name)))
    }

    /// Instances carrying the manager's drop-in, with its content.
    pub fn owned_dropins(&self) -> Result<BTreeMap<String, String>, HostError> {
        let mut owned = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.run_units) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(owned),
            Err(e) => return Err(HostError::io(&self.run_units, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| HostError::io(&self.run_units, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(".d"))
                .and_then(instance_of_unit)
            else {
                continue;
            };
            if !valid_name(name) {
                continue;
            }
            let path = entry.path().join(DROPIN_NAME);
            match std::fs::read_to_string(&path) {
                Ok(content) => {
                    owned.insert(name.to_string(), content);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(HostError::io(&path, e)),
            }
        }
        Ok(owned)
    }

    /// Whether the system configuration defines `hail@NAME`: its own unit file, or a drop-in,
    /// under /etc (NixOS's `services.hail.NAME` is a drop-in there).
    pub fn is_foreign(&self, name: &str) -> bool {
        let unit_file = self.etc_units.join(unit(name));
        if unit_file.symlink_metadata().is_ok() {
            return true;
        }
        let dir = self.etc_units.join(format!("{}.d", unit(name)));
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with(".conf"))
            })
            .unwrap_or(false)
    }

    /// Writes an instance's drop-in atomically (a reader sees the old or the new file).
    pub fn write_dropin(&self, name: &str, content: &str) -> Result<(), HostError> {
        let dir = self.dropin_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io(&dir, e))?;
        let tmp = dir.join(format!(".{DROPIN_NAME}.tmp"));
        std::fs::write(&tmp, content).map_err(|e| HostError::io(&tmp, e))?;
        let path = dir.join(DROPIN_NAME);
        std::fs::rename(&tmp, &path).map_err(|e| HostError::io(&path, e))
    }

    /// Deletes an instance's drop-in, and its directory when nothing else is in it.
    pub fn remove_dropin(&self, name: &str) -> Result<(), HostError> {
        let dir = self.dropin_dir(name);
        let path = dir.join(DROPIN_NAME);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HostError::io(&path, e)),
        }
        // Not empty (someone else's drop-in): keep it.
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    pub fn profile(&self, name: &str) -> PathBuf {
        self.profiles.join(name)
    }

    /// Deletes an instance's profile: its link, its generation links and hail's lock file, so
    /// what it deployed becomes garbage for `nix-collect-garbage`.
    pub fn remove_profile(&self, name: &str) -> Result<Vec<PathBuf>, HostError> {
        let mut removed = Vec::new();
        let entries = match std::fs::read_dir(&self.profiles) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(HostError::io(&self.profiles, e)),
        };
        for entry in entries.filter_map(Result::ok) {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !is_profile_file(name, &file_name) {
                continue;
            }
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| HostError::io(&path, e))?;
            removed.push(path);
        }
        removed.sort();
        Ok(removed)
    }

    /// Takes the apply lock, waiting up to `timeout` for another apply to finish.
    pub fn lock(&self, timeout: Duration) -> Result<File, HostError> {
        if let Some(dir) = self.lock_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HostError::io(dir, e))?;
        }
        let file = File::create(&self.lock_file).map_err(|e| HostError::io(&self.lock_file, e))?;
        let deadline = Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(HostError::LockTimeout {
                        path: self.lock_file.clone(),
                        timeout,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(HostError::io(&self.lock_file, e));
                }
            }
        }
    }
}

/// `NAME`, `NAME-<N>-link` and `NAME.hail.lock`; never another instance's `NAME-x…`.
fn is_profile_file(name: &str, file_name: &str) -> bool {
    if file_name == name || file_name == format!("{name}.hail.lock") {
        return true;
    }
    file_name
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix("-link"))
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// The running instances among `names`, with the configuration id of each main process.
pub fn running(
    names: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, Option<String>>, HostError> {
    Ok(show(names, timeout)?.running())
}

/// The units of `names` as `systemctl show` tells them, read once.
pub fn show(names: &[String], timeout: Duration) -> Result<Units, HostError> {
    if names.is_empty() {
        return Ok(Units::default());
    }
    let out = run_captured(&units::show(names), timeout)?;
    Ok(Units(parse_show(&out)))
}

/// Instances' units as [`show`] read them.
#[derive(Debug, Default)]
pub struct Units(BTreeMap<String, Shown>);

impl Units {
    /// The running ones, with the configuration id of each main process.
    pub fn running(&self) -> BTreeMap<String, Option<String>> {
        let mut running = BTreeMap::new();
        for (name, shown) in &self.0 {
            // auto-restart counts as "activating" but has no process: not running.
            let up = matches!(shown.state.as_str(), "active" | "activating" | "reloading");
            if up && shown.pid > 0 {
                let id = std::fs::read(format!("/proc/{}/environ", shown.pid))
                    .ok()
                    .and_then(|env| config_id_in_environ(&env));
                running.insert(name.clone(), id);
            }
        }
        running
    }

    /// Those whose last start failed in systemd's own setup of the process (see
    /// [`crate::systemd::setup_failed`]), with that exit status.
    pub fn setup_failures(&self) -> BTreeMap<String, i32> {
        self.0
            .iter()
            .filter(|(_, s)| s.pid == 0 && crate::systemd::setup_failed(s.exit_status))
            .map(|(name, s)| (name.clone(), s.exit_status))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(
        "another apply holds {path} for more than {}; is one stuck? (systemctl list-units 'hail-apply-*')", crate::format::duration(*.timeout)
    )]
    LockTimeout { path: PathBuf, timeout: Duration },
}

impl HostError {
    fn io(path: &Path, source: std::io::Error) -> HostError {
        HostError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(root: &Path) -> Host {
        Host {
            run_units: root.join("run"),
            etc_units: root.join("etc"),
            profiles: root.join("profiles"),
            lock_file: root.join("lock/apply.lock"),
        }
    }

    #[test]
    fn dropins_round_trip_and_only_ours_count() {
        let tmp = tempfile::tempdir().unwrap();
        let h = host(tmp.path());
        assert!(h.owned_dropins().unwrap().is_empty());
        h.write_dropin("a", "one").unwrap();
        h.write_dropin("a", "two").unwrap();
        h.write_dropin("b", "x").unwrap();
        // Somebody else's drop-in and unit in the runtime directory.
        std::fs::create_dir_all(tmp.path().join("run/hail@c.service.d")).unwrap();
        std::fs::write(tmp.path().join("run/hail@c.service.d/other.conf"), "").unwrap();
        std::fs::create_dir_all(tmp.path().join("run/foo.service.d")).unwrap();
        let owned = h.owned_dropins().unwrap();
        assert_eq!(
            owned.into_iter().collect::<Vec<_>>(),
            [("a".into(), "two".into()), ("b".into(), "x".into())]
        );

        h.remove_dropin("a").unwrap();
        h.remove_dropin("a").unwrap();
        assert!(!tmp.path().join("run/hail@a.service.d").exists());
        std::fs::write(tmp.path().join("run/hail@b.service.d/other.conf"), "").unwrap();
        h.remove_dropin("b").unwrap();
        assert!(tmp.path().join("run/hail@b.service.d/other.conf").exists());
        assert_eq!(h.owned_dropins().unwrap().len(), 0);
    }

    #[test]
    fn foreign_means_configured_under_etc() {
        let tmp = tempfile::tempdir().unwrap();
        let h = host(tmp.path());
        let etc = tmp.path().join("etc");
        std::fs::create_dir_all(etc.join("hail@nixos.service.d")).unwrap();
        std::fs::write(etc.join("hail@nixos.service.d/overrides.conf"), "").unwrap();
        std::fs::write(etc.join("hail@full.service"), "").unwrap();
        std::fs::create_dir_all(etc.join("hail@empty.service.d")).unwrap();
        std::fs::write(etc.join("hail@.service"), "").unwrap();
        assert!(h.is_foreign("nixos"));
        assert!(h.is_foreign("full"));
        assert!(!h.is_foreign("empty"));
        assert!(!h.is_foreign("other"));
    }

    #[test]
    fn profile_removal_takes_only_that_instances_files() {
        let tmp = tempfile::tempdir().unwrap();
        let h = host(tmp.path());
        let p = tmp.path().join("profiles");
        std::fs::create_dir_all(&p).unwrap();
        for f in [
            "web",
            "web-1-link",
            "web-12-link",
            "web.hail.lock",
            "web-2",
            "web-2-1-link",
            "web-x-link",
            "webb",
        ] {
            std::os::unix::fs::symlink("/nowhere", p.join(f)).unwrap();
        }
        let removed = h.remove_profile("web").unwrap();
        let names: Vec<_> = removed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["web", "web-1-link", "web-12-link", "web.hail.lock"]);
        let mut left: Vec<_> = std::fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["web-2", "web-2-1-link", "web-x-link", "webb"]);
        assert!(h.remove_profile("gone").unwrap().is_empty());
    }

    #[test]
    fn lock_excludes_a_second_apply() {
        let tmp = tempfile::tempdir().unwrap();
        let h = host(tmp.path());
        let held = h.lock(Duration::from_secs(1)).unwrap();
        assert!(matches!(
            h.lock(Duration::from_millis(300)),
            Err(HostError::LockTimeout { .. })
        ));
        drop(held);
        h.lock(Duration::from_secs(1)).unwrap();
    }
}
