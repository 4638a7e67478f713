//! A real booted systemd: a Debian 12 tree booted with `systemd-nspawn`, for tests that need
//! systemd's own behaviour (`Type=notify`, the watchdog, restarts, credentials, the journal).
//!
//! - The tree is made once by `debootstrap` (about a minute) and kept under the workspace's
//!   target directory (`target/hail-testkit/rootfs-bookworm-N`). It is built under a temporary name
//!   and renamed when complete, with a lock, so parallel tests never race and an interrupted run
//!   is never used.
//! - Every boot is pristine (`--volatile=overlay`: writes go to a tmpfs over the read-only tree),
//!   and the container has its own empty `/nix/store`, so Nix inside really substitutes.
//! - There is no host system bus (the host's PID 1 need not be systemd), so the container is not
//!   registered with machined; commands run through `nsenter` into its namespaces, and files are
//!   written through `/proc/<leader>/root`.
//! - Without `--private-network` the container shares the host's network namespace: servers the
//!   test starts on `127.0.0.1` are reachable from inside.
//!
//! ```no_run
//! use hail_testkit::container::{self, Container};
//! container::require();
//! let c = Container::boot("demo");
//! assert_eq!(c.sh("systemctl is-system-running").trim(), "running");
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The Debian release of the tree.
pub const RELEASE: &str = "bookworm";

/// Packages on top of debootstrap's `minbase`: systemd as PID 1, D-Bus for `systemctl`, Nix
/// (`libdbi-perl` is needed or `nix-bin`'s dependencies do not resolve), and the CA certificates
/// every real host has (hail's HTTP client wants a root store even for `http://`).
const PACKAGES: &str = "systemd,systemd-sysv,dbus,nix-bin,libdbi-perl,ca-certificates";

/// The tree's directory name under [`cache_dir`]; bump the number whenever [`PACKAGES`] or
/// [`prepare_tree`] change, so that kept trees are not reused.
const TREE: &str = "rootfs-bookworm-2";

/// `PATH` of commands run inside (systemd's default for services).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a boot may take to reach `running` (or `degraded`); under a second normally.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a halt may take before nspawn is killed; about two seconds normally.
const HALT_TIMEOUT: Duration = Duration::from_secs(15);

/// What these tests need on the host ([`crate::prereq::CONTAINER`]); panics naming what is
/// missing (see [`crate::prereq`]).
pub fn require() {
    crate::prereq::require(&crate::prereq::CONTAINER);
}

/// The directory the test kit keeps between runs: `<target dir>/hail-testkit`.
pub fn cache_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    };
    target.join("hail-testkit")
}

/// Where [`Container::install_hail`] puts hail's journal catalog.
pub const CATALOG_IN_CONTAINER: &str = "/usr/lib/systemd/catalog/hail.catalog";

/// The shipped template unit, `systemd/hail@.service` of this workspace.
pub fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/hail@.service")
}

/// The Debian tree, made by `debootstrap` on first use (under a lock; parallel callers wait).
pub fn rootfs() -> PathBuf {
    let dir = cache_dir();
    let tree = dir.join(TREE);
    // The tree only ever appears by a rename of a complete one.
    if tree.is_dir() {
        return tree;
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let _lock = lock(&dir.join(format!("{TREE}.lock")));
    if tree.is_dir() {
        return tree;
    }
    remove_stale_trees(&dir);
    let tmp = dir.join(format!("{TREE}.tmp-{}", std::process::id()));
    let log = dir.join(format!("{TREE}.log"));
    eprintln!(
        "making the container tree {} with debootstrap (about a minute, once)",
        tree.display()
    );
    let started = Instant::now();
    let log_file = File::create(&log).expect("create the debootstrap log");
    let status = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={PACKAGES}"),
            RELEASE,
        ])
        .arg(&tmp)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone the log file"))
        .stderr(log_file)
        .status()
        .unwrap_or_else(|e| panic!("cannot run debootstrap: {e}"));
    if !status.success() {
        panic!(
            "debootstrap failed ({status}); see {}:\n{}",
            log.display(),
            tail(&log, 30)
        );
    }
    prepare_tree(&tmp);
    fs::rename(&tmp, &tree)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", tmp.display(), tree.display()));
    eprintln!("container tree ready in {:.0?}", started.elapsed());
    tree
}

/// Adjusts a fresh tree: debootstrap copies the host's `/etc/hostname`; without it every
/// container is named after its machine name, which keeps journals of parallel tests apart.
fn prepare_tree(tree: &Path) {
    let hostname = tree.join("etc/hostname");
    if hostname.exists() {
        fs::remove_file(&hostname)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", hostname.display()));
    }
}

/// Trees of earlier [`TREE`] versions and leftovers of interrupted debootstrap runs
/// (`rootfs-*.tmp-*`). debootstrap mounts `/proc` and `/sys` inside its target, and an
/// interrupted run can leave them mounted: never recurse into a tree that still has mounts.
fn remove_stale_trees(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("rootfs-") || name == TREE || !path.is_dir() {
            continue;
        }
        for m in mounts_under(&path).iter().rev() {
            let _ = Command::new("umount").arg("--lazy").arg(m).status();
        }
        if mounts_under(&path).is_empty() {
            let _ = fs::remove_dir_all(&path);
        } else {
            eprintln!("leaving {}: it still has mounts", path.display());
        }
    }
}

/// Mount points at or below `path`, in mount order.
fn mounts_under(path: &Path) -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .map(|(point, _)| point)
        .filter(|p| p.starts_with(path))
        .collect()
}

/// `(mount point, file system type)` of every mount of this process, from `/proc/self/mountinfo`.
fn mounts() -> Vec<(PathBuf, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPEROPTIONS
            let (before, after) = line.split_once(" - ")?;
            let point = before.split(' ').nth(4)?;
            let fstype = after.split(' ').next()?;
            Some((
                PathBuf::from(unescape_mount_path(point)),
                fstype.to_string(),
            ))
        })
        .collect()
}

/// The file system type holding `path`: that of the last-mounted of the deepest mount points
/// above it.
fn fs_type(path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for (point, fstype) in mounts() {
        let depth = point.components().count();
        if path.starts_with(&point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, fstype));
        }
    }
    best.map(|(_, t)| t)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok());
        if let (b'\\', Some(Ok(v))) = (bytes[i], octal.map(|d| u8::from_str_radix(d, 8))) {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An exclusive lock on a file, released when dropped.
fn lock(path: &Path) -> File {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    f.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    f
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// nspawn only cleans up below `/run/systemd/nspawn` when that lies on a tmpfs. A host whose
/// PID 1 is systemd has `/run` on a tmpfs; elsewhere `/run` can be a plain directory, and then a
/// tmpfs is mounted there (once: the check and the mount happen under a lock).
fn ensure_nspawn_tmpfs() {
    let point = Path::new("/run/systemd/nspawn");
    let is_tmpfs = || fs_type(point).as_deref() == Some("tmpfs");
    if is_tmpfs() {
        return;
    }
    let dir = cache_dir();
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let _lock = lock(&dir.join("nspawn-tmpfs.lock"));
    if is_tmpfs() {
        return;
    }
    fs::create_dir_all(point).unwrap_or_else(|e| panic!("cannot create {}: {e}", point.display()));
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(point)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cannot mount a tmpfs on {}",
        point.display()
    );
}

/// A field of a journal entry (see [`Container::journal`]) as a string: journalctl prints
/// repeated fields as arrays and binary ones as byte arrays; hail's fields are neither.
pub fn field<'a>(entry: &'a Value, name: &str) -> Option<&'a str> {
    entry.get(name).and_then(Value::as_str)
}

/// What a command inside printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// A booted container; halted when dropped.
pub struct Container {
    name: String,
    nspawn: Child,
    leader: u32,
    dir: TempDir,
}

impl Container {
    /// What every hail system test starts from: a pristine container with `hail` and its
    /// template unit installed, whose Nix substitutes from the host's `cache` (trusting its key
    /// only). Call [`require`] first.
    pub fn boot_with_hail(label: &str, hail: &Path, cache: &crate::cache::Cache) -> Container {
        let c = Container::boot(label);
        c.install_hail(hail);
        c.configure_nix(&cache.nix_config());
        c
    }

    /// Boots a pristine container and waits until systemd reports `running` (or `degraded`).
    /// `label` names it; a suffix makes the machine name unique to this process and call.
    /// Panics with nspawn's output when it does not come up. Call [`require`] first.
    pub fn boot(label: &str) -> Container {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let tree = rootfs();
        ensure_nspawn_tmpfs();
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        // A machine name is a host name: letters, digits and `-`, at most 64 characters.
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!("hail-{label}-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("hail-container-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("nspawn.log");
        let log_file = File::create(&log).expect("create the nspawn log");
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(&tree)
            .args(["--boot", "--machine", &name])
            // No host bus to register with; keep nspawn in the caller's cgroup.
            .args(["--register=no", "--keep-unit", "--console=passive"])
            .arg("--volatile=overlay")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run systemd-nspawn: {e}"));
        let mut c = Container {
            name,
            nspawn,
            leader: 0,
            dir,
        };
        c.leader = c.find_leader();
        c.wait_running();
        c
    }

    /// nspawn first forks a short-lived helper; the leader is its child that is `systemd`.
    fn find_leader(&mut self) -> u32 {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let parent = self.nspawn.id();
        loop {
            if let Some(pid) = children(parent)
                .into_iter()
                .find(|(_, comm)| comm == "systemd")
                .map(|(p, _)| p)
            {
                return pid;
            }
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn for {} exited ({status}):\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no systemd below nspawn for {}:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_running(&mut self) {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut state = String::new();
        while Instant::now() < deadline {
            state = self
                .try_exec(&["systemctl", "is-system-running"])
                .stdout
                .trim()
                .to_string();
            if state == "running" || state == "degraded" {
                return;
            }
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn for {} exited ({status}):\n{}",
                    self.name,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not finish booting (state {state:?}):\n{}",
            self.name,
            self.log()
        );
    }

    /// The machine name (also the container's host name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// nspawn's output so far (the container's console).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("nspawn.log")).unwrap_or_default()
    }

    /// A path inside the container, as seen from the host.
    pub fn host_path(&self, path: &str) -> PathBuf {
        assert!(
            path.starts_with('/'),
            "container paths are absolute: {path}"
        );
        PathBuf::from(format!("/proc/{}/root{path}", self.leader))
    }

    /// Runs a command inside, in all the container's namespaces, with a clean environment (a
    /// host `NIX_CONFIG` would otherwise override the container's nix.conf).
    pub fn try_exec(&self, argv: &[&str]) -> Output {
        let out = Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a", "--", "env", "-i"])
            .args([
                format!("PATH={PATH}"),
                "HOME=/root".into(),
                "LANG=C.UTF-8".into(),
            ])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"));
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// As [`Container::try_exec`], panicking unless it succeeds; returns stdout.
    pub fn exec(&self, argv: &[&str]) -> String {
        let out = self.try_exec(argv);
        assert!(
            out.success(),
            "{argv:?} in {} failed ({}):\nstdout: {}\nstderr: {}",
            self.name,
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// A `/bin/sh -c` script inside.
    pub fn try_sh(&self, script: &str) -> Output {
        self.try_exec(&["/bin/sh", "-c", script])
    }

    /// As [`Container::try_sh`], panicking unless it succeeds; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// Writes a file inside (parents created), mode 0644.
    pub fn write_file(&self, path: &str, contents: impl AsRef<[u8]>) {
        self.write_file_mode(path, contents, 0o644);
    }

    /// Writes a file inside (parents created) with that mode.
    pub fn write_file_mode(&self, path: &str, contents: impl AsRef<[u8]>, mode: u32) {
        let host = self.host_path(path);
        if let Some(parent) = host.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        let mut f = File::create(&host)
            .unwrap_or_else(|e| panic!("cannot write {path} in {}: {e}", self.name));
        f.write_all(contents.as_ref())
            .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        fs::set_permissions(&host, fs::Permissions::from_mode(mode)).expect("set the file mode");
    }

    /// Copies a host file inside (parents created) with that mode.
    pub fn copy_in(&self, from: &Path, to: &str, mode: u32) {
        let contents =
            fs::read(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
        self.write_file_mode(to, contents, mode);
    }

    /// A file inside, if it exists and is readable.
    pub fn read_file(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.host_path(path)).ok()
    }

    /// Makes the container's Nix use these settings (e.g. [`crate::cache::Cache::nix_config`])
    /// on top of what the tree needs to run Nix as root without a daemon.
    pub fn configure_nix(&self, extra: &str) {
        self.write_file("/etc/nix/nix.conf", format!("sandbox = false\n{extra}"));
    }

    /// Installs a hail binary as `/usr/local/bin/hail`, the shipped template unit as a vendor
    /// unit (`/usr/lib/systemd/system/hail@.service`, so `/etc` stays free for drop-ins) and the
    /// journal catalog as the README says (`/usr/lib/systemd/catalog/`, then
    /// `journalctl --update-catalog`), then reloads systemd.
    pub fn install_hail(&self, binary: &Path) {
        self.copy_in(binary, "/usr/local/bin/hail", 0o755);
        self.copy_in(&unit_file(), "/usr/lib/systemd/system/hail@.service", 0o644);
        self.copy_in(&crate::catalog::catalog_file(), CATALOG_IN_CONTAINER, 0o644);
        self.exec(&["journalctl", "--update-catalog"]);
        self.daemon_reload();
    }

    /// `systemctl daemon-reload`.
    pub fn daemon_reload(&self) {
        self.exec(&["systemctl", "daemon-reload"]);
    }

    /// `systemctl ARGS…`, whatever its outcome.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut argv = vec!["systemctl"];
        argv.extend_from_slice(args);
        self.try_exec(&argv)
    }

    /// `systemctl VERB UNIT`, which must succeed (else the unit's journal is shown).
    pub fn systemctl_ok(&self, verb: &str, unit: &str) {
        let out = self.systemctl(&[verb, unit]);
        assert!(
            out.success(),
            "systemctl {verb} {unit} failed: {}\n{}",
            out.stderr,
            self.unit_log(unit)
        );
    }

    /// One property of a unit (`systemctl show -p NAME --value UNIT`).
    pub fn show(&self, unit: &str, property: &str) -> String {
        let out = self.exec(&["systemctl", "show", "-p", property, "--value", unit]);
        out.strip_suffix('\n').unwrap_or(&out).to_string()
    }

    /// `journalctl --sync`: whatever was logged before this call is in the journal files
    /// afterwards (journald reads its sockets asynchronously).
    pub fn sync_journal(&self) {
        self.exec(&["journalctl", "--sync"]);
    }

    /// Journal entries, `journalctl -o json ARGS…` (ARGS are options and `FIELD=value` matches),
    /// one JSON object each; everything logged before the call is included.
    pub fn journal(&self, args: &[&str]) -> Vec<Value> {
        self.sync_journal();
        let mut argv = vec!["journalctl", "--no-pager", "-o", "json"];
        argv.extend_from_slice(args);
        let out = self.try_exec(&argv);
        // No matching entry is exit 0 with "-- No entries --" on stderr (or exit 1 on some
        // versions): both mean an empty list.
        out.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("journalctl printed bad JSON ({e}): {l}"))
            })
            .collect()
    }

    /// The plain journal text of a unit (`journalctl -u UNIT`), everything logged before the call.
    pub fn unit_log(&self, unit: &str) -> String {
        self.sync_journal();
        self.try_exec(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-precise",
            "-u",
            unit,
        ])
        .stdout
    }

    /// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`
    /// and the journal of `unit`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        unit: &str,
        timeout: Duration,
        mut check: impl FnMut(&Container) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what} in {}; journal of {unit}:\n{}",
                    self.name,
                    self.unit_log(unit)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// nspawn's exit status once the container has ended by itself (133: it rebooted).
    pub fn ended(&mut self) -> Option<std::process::ExitStatus> {
        self.nspawn.try_wait().ok().flatten()
    }

    /// Halts the container: SIGTERM makes nspawn shut it down cleanly; SIGKILL after
    /// [`HALT_TIMEOUT`].
    fn halt(&mut self) {
        if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) on a child we own, which has not been reaped yet.
        unsafe { libc::kill(self.nspawn.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + HALT_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.nspawn.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} did not halt within {HALT_TIMEOUT:?}; killing it",
            self.name
        );
        // Killing the container's PID 1 ends its whole PID namespace. (0 = not found yet; kill(0)
        // would signal our own process group.)
        if self.leader != 0 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(self.leader as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `(pid, comm)` of the processes whose parent is `parent`.
fn children(parent: u32) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // PID (COMM) STATE PPID …; COMM may hold spaces and parentheses: split at the last ')'.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some((pid, comm))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_system_types_come_from_the_deepest_mount() {
        assert!(fs_type(Path::new("/")).is_some());
        assert_eq!(fs_type(Path::new("/proc/self")).as_deref(), Some("proc"));
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_path(r"/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/end\"), r"/end\");
    }

    /// Boots, runs commands, writes and reads files, and halts: the rig itself.
    #[test]
    #[cfg_attr(
        hail_skip_container,
        ignore = "needs root, debootstrap and systemd-nspawn (HAIL_TEST_SKIP_MISSING=1)"
    )]
    fn boots_runs_and_halts() {
        require();
        let mut c = Container::boot("rig");
        assert_eq!(
            c.exec(&["systemctl", "is-system-running"]).trim(),
            "running",
            "{}",
            c.log()
        );
        assert_eq!(c.sh("hostname").trim(), c.name());
        // A clean environment inside, whatever the test process has.
        assert_eq!(c.sh("echo \"${NIX_CONFIG:-unset}\"").trim(), "unset");
        c.write_file("/etc/hail-rig-test", "hello\n");
        assert_eq!(c.sh("cat /etc/hail-rig-test"), "hello\n");
        assert_eq!(
            c.read_file("/etc/hail-rig-test").as_deref(),
            Some("hello\n")
        );
        assert!(!c.try_sh("exit 3").success());
        assert!(c.sh("nix-store --version").contains("nix"));
        assert_eq!(c.show("systemd-journald.service", "ActiveState"), "active");
        c.halt();
        assert!(
            matches!(c.nspawn.try_wait(), Ok(Some(_))),
            "nspawn still runs after the halt"
        );
        assert!(
            !Path::new(&format!("/proc/{}", c.leader)).exists(),
            "the container's PID 1 outlived the halt"
        );
    }
}
