//! A real signed binary cache: a `file://` cache in a temporary directory, filled by `nix copy`
//! with a key made by `nix-store --generate-binary-cache-key`, served over HTTP on 127.0.0.1.
//!
//! Publishing builds a closure with real Nix, copies it into the cache and then deletes it from the
//! local store, so the agent under test really has to substitute it (and the signature check of
//! the agent's Nix really runs). Builds use their own `NIX_CONFIG`, `HOME` and `XDG_CACHE_HOME`
//! (sandbox off, no substituters: nothing is fetched from elsewhere).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::http::{Reply, Response, Server};

/// How long a Nix command waits for the store's database to be free.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// The test profile expression shipped with the test kit (see its header for the arguments).
pub fn test_profile_nix() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/test-profile.nix")
}

/// The fake NixOS system expression shipped with the test kit (see its header for the
/// arguments): a `bin/switch-to-configuration` that records how it ran and exits as told.
pub fn nixos_system_nix() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/nixos-system.nix")
}

/// What [`Cache::publish`] builds: a `test-profile.nix` instance.
#[derive(Debug, Clone)]
pub struct ProfileSpec {
    /// Shown in the store path name and in the marker line.
    pub version: String,
    /// File that `bin/activate` appends `activated <version> <out path>` to.
    pub marker: PathBuf,
    /// `bin/activate`'s exit code.
    pub activate_exit: i32,
    /// Seconds `bin/activate` sleeps before writing the marker.
    pub activate_sleep: f64,
    /// Shell lines run first by `bin/activate`.
    pub extra_activate: String,
    /// The body of the profile's `bin/health-check` (none when empty).
    pub health_check: String,
}

/// Shell lines that, the first time they run, write their shell's pid (its process group leader's
/// when run as an activation or check) to `pid_file` and then hang, until killed; afterwards they
/// do nothing. For a step that a test kills half-way, then lets run again.
pub fn hang_once(pid_file: &Path) -> String {
    format!(
        "if [ ! -e {0} ]; then echo $$ > {0}.tmp && mv {0}.tmp {0}; sleep 3600; fi",
        pid_file.display()
    )
}

impl ProfileSpec {
    pub fn new(version: &str, marker: &Path) -> ProfileSpec {
        ProfileSpec {
            version: version.into(),
            marker: marker.into(),
            activate_exit: 0,
            activate_sleep: 0.0,
            extra_activate: String::new(),
            health_check: String::new(),
        }
    }

    pub fn exit_code(mut self, code: i32) -> ProfileSpec {
        self.activate_exit = code;
        self
    }

    pub fn sleep(mut self, seconds: f64) -> ProfileSpec {
        self.activate_sleep = seconds;
        self
    }

    pub fn extra(mut self, shell_lines: &str) -> ProfileSpec {
        self.extra_activate = shell_lines.into();
        self
    }

    /// Ships a `bin/health-check` running these shell lines.
    pub fn health_check(mut self, shell_lines: &str) -> ProfileSpec {
        self.health_check = shell_lines.into();
        self
    }
}

/// A published closure.
#[derive(Debug, Clone)]
pub struct Published {
    /// The top-level output (the first one `nix-build` printed).
    pub out_path: String,
    /// Every output `nix-build` printed.
    pub out_paths: Vec<String>,
    /// The closure copied into the cache.
    pub closure: Vec<String>,
}

/// How a published closure is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// With the cache's key, which [`Cache::nix_config`] trusts.
    Trusted,
    /// Not at all.
    Unsigned,
    /// With a second key that nothing trusts.
    UntrustedKey,
}

/// The cache; its HTTP server stops and its directory is removed when dropped.
pub struct Cache {
    dir: TempDir,
    public_key: String,
    server: Server,
    requests: Arc<Mutex<Vec<String>>>,
    /// How long each NAR takes to come (a slow cache, so that a download can be cut short).
    nar_delay: Arc<Mutex<Duration>>,
}

impl Cache {
    /// Makes the keys and starts serving an empty cache.
    pub fn start() -> Cache {
        let dir = tempfile::Builder::new()
            .prefix("hail-cache-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("cache");
        fs::create_dir_all(&root).expect("create the cache directory");
        for (name, key) in [
            ("test-cache-1", "cache"),
            ("untrusted-cache-1", "untrusted"),
        ] {
            let (sec, public) = (
                dir.path().join(format!("{key}.sec")),
                dir.path().join(format!("{key}.pub")),
            );
            run(nix(dir.path(), "nix-store")
                .arg("--generate-binary-cache-key")
                .args([name.as_ref(), sec.as_os_str(), public.as_os_str()]));
        }
        let public_key = fs::read_to_string(dir.path().join("cache.pub"))
            .unwrap()
            .trim()
            .to_string();
        // `nix copy` writes nix-cache-info itself, but only on the first copy: a cache must
        // answer it from the start.
        fs::write(
            root.join("nix-cache-info"),
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n",
        )
        .unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let nar_delay = Arc::new(Mutex::new(Duration::ZERO));
        let server = {
            let (root, requests) = (root.clone(), requests.clone());
            let nar_delay = nar_delay.clone();
            Server::start(move |r| {
                requests.lock().unwrap().push(r.path().to_string());
                if r.path().starts_with("/nar/") {
                    let delay = *nar_delay.lock().unwrap();
                    std::thread::sleep(delay);
                }
                Reply::Send(serve_file(&root, r.path()))
            })
            .expect("start the cache server")
        };
        Cache {
            dir,
            public_key,
            server,
            requests,
            nar_delay,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Makes every NAR download from now on take `delay` before its first byte.
    pub fn set_nar_delay(&self, delay: Duration) {
        *self.nar_delay.lock().unwrap() = delay;
    }

    /// `test-cache-1:<base64>`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The directory holding the cache's files (`nix-cache-info`, `*.narinfo`, `nar/`).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// What the agent's Nix needs (a `NIX_CONFIG` value): this cache as its only substituter,
    /// its key trusted, and no memory of narinfo look-ups between runs.
    pub fn nix_config(&self) -> String {
        format!(
            "substituters = {}\ntrusted-public-keys = {}\nnarinfo-cache-negative-ttl = 0\nnarinfo-cache-positive-ttl = 0\n",
            self.url(),
            self.public_key
        )
    }

    /// Paths requested from the cache so far (e.g. `/<hash>.narinfo`, `/nar/<hash>.nar.zst`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Deletes `paths` from the local store (as a garbage collection would), so that whoever
    /// needs them again substitutes them from this cache.
    pub fn collect(&self, paths: &[String]) {
        run(nix(self.dir.path(), "nix-store")
            .arg("--delete")
            .args(paths));
    }

    /// Builds a test profile, publishes it signed and removes it from the local store.
    pub fn publish(&self, spec: &ProfileSpec) -> Published {
        self.publish_profile(spec, Signing::Trusted)
    }

    /// As [`Cache::publish`], but without any signature.
    pub fn publish_unsigned(&self, spec: &ProfileSpec) -> Published {
        self.publish_profile(spec, Signing::Unsigned)
    }

    /// As [`Cache::publish`], but signed with a key the agent does not trust.
    pub fn publish_untrusted(&self, spec: &ProfileSpec) -> Published {
        self.publish_profile(spec, Signing::UntrustedKey)
    }

    fn publish_profile(&self, spec: &ProfileSpec, signing: Signing) -> Published {
        let nonce = format!("{:x}", crate::hydra::unique());
        let marker = spec.marker.to_str().expect("marker path is UTF-8");
        let (exit, sleep) = (
            spec.activate_exit.to_string(),
            spec.activate_sleep.to_string(),
        );
        let args = [
            "--argstr",
            "version",
            &spec.version,
            "--argstr",
            "marker",
            marker,
            "--argstr",
            "nonce",
            &nonce,
            "--argstr",
            "activateExit",
            &exit,
            "--argstr",
            "activateSleep",
            &sleep,
            "--argstr",
            "extraActivate",
            &spec.extra_activate,
            "--argstr",
            "healthCheck",
            &spec.health_check,
        ];
        self.publish_nix_with(&test_profile_nix(), &args, signing, true)
    }

    /// Builds any Nix expression (`args` go to `nix-build` verbatim), publishes it signed and
    /// removes it from the local store. Make its paths unique per test (e.g. a nonce argument).
    pub fn publish_nix(&self, file: &Path, args: &[&str]) -> Published {
        self.publish_nix_with(file, args, Signing::Trusted, true)
    }

    /// The general form: choose the signature, and whether to keep the closure locally.
    pub fn publish_nix_with(
        &self,
        file: &Path,
        args: &[&str],
        signing: Signing,
        delete_local: bool,
    ) -> Published {
        let out = run(nix(self.dir.path(), "nix-build")
            .arg(file)
            .args(args)
            .arg("--no-out-link"));
        let out_paths: Vec<String> = out
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        let out_path = out_paths
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("nix-build {file:?} printed no path"));
        let closure: Vec<String> = run(nix(self.dir.path(), "nix-store")
            .arg("-qR")
            .args(&out_paths))
        .lines()
        .map(str::to_string)
        .collect();
        let mut to = format!("file://{}?compression=zstd", self.dir().display());
        match signing {
            Signing::Trusted => {
                to += &format!(
                    "&secret-key={}",
                    self.dir.path().join("cache.sec").display()
                )
            }
            Signing::UntrustedKey => {
                to += &format!(
                    "&secret-key={}",
                    self.dir.path().join("untrusted.sec").display()
                )
            }
            Signing::Unsigned => {}
        }
        run(nix(self.dir.path(), "nix")
            .args(["copy", "--to", &to])
            .args(&out_paths));
        if delete_local {
            run(nix(self.dir.path(), "nix-store")
                .arg("--delete")
                .args(&closure));
            for p in &closure {
                assert!(
                    !Path::new(p).exists(),
                    "{p} is still in the local store after nix-store --delete"
                );
            }
        }
        Published {
            out_path,
            out_paths,
            closure,
        }
    }
}

/// A Nix command with the build-side settings (no sandbox, no build users, no substituters:
/// nothing to fetch, no waiting on DNS) and `dir` as its HOME.
pub fn nix(dir: &Path, program: &str) -> Command {
    let mut c = Command::new(program);
    c.env(
        "NIX_CONFIG",
        "experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n",
    )
    .env("HOME", dir)
    .env("XDG_CACHE_HOME", dir.join(".cache"));
    c
}

/// Runs a command, panicking with its stderr when it fails; returns its stdout. A Nix command
/// that finds the store's database busy (another Nix process of a parallel test holds it, and
/// Nix gives up at once when opening it) is run again once the database is free.
fn run(c: &mut Command) -> String {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let out = loop {
        let out = c
            .output()
            .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
        let busy = String::from_utf8_lossy(&out.stderr).contains("is busy");
        if out.status.success() || !busy || Instant::now() >= deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn serve_file(root: &Path, path: &str) -> Response {
    let rel = path.trim_start_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Response::with_body(404, "text/plain", "not found\n");
    }
    match fs::read(root.join(rel)) {
        Ok(body) => {
            let ct = if rel.ends_with(".narinfo") {
                "text/x-nix-narinfo"
            } else {
                "application/octet-stream"
            };
            Response::with_body(200, ct, body)
        }
        Err(_) => Response::with_body(404, "text/plain", "not found\n"),
    }
}
