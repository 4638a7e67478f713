//! Shared set-up of the agent's integration tests: a Hydra-compatible server, a signed binary
//! cache and the real hail binary, all private to one test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hail_testkit::cache::{Cache, ProfileSpec, Published};
use hail_testkit::hail::{Finished, Hail, Running};
use hail_testkit::hydra::{BuildSpec, HydraServer};
use tempfile::TempDir;

pub const HAIL: &str = env!("CARGO_BIN_EXE_hail");

/// Long enough for a realise and an activation on a busy 2-core CI machine.
pub const RUN: Duration = Duration::from_secs(120);

pub struct Fixture {
    pub hydra: HydraServer,
    pub cache: Cache,
    pub hail: Hail,
    pub tmp: TempDir,
}

impl Fixture {
    /// Panics when root or Nix is missing: a test using it is marked
    /// `#[cfg_attr(hail_skip_nix, ignore = "…")]` (see `hail_testkit::prereq`).
    pub fn new() -> Fixture {
        hail_testkit::prereq::require_nix();
        let hydra = HydraServer::start();
        let cache = Cache::start();
        let hail = Hail::new(HAIL, &hydra.default_job_uri(), &cache.nix_config());
        let tmp = tempfile::Builder::new()
            .prefix("hail-test-")
            .tempdir()
            .unwrap();
        Fixture {
            hydra,
            cache,
            hail,
            tmp,
        }
    }

    /// The file every test profile's `bin/activate` appends to.
    pub fn marker(&self) -> PathBuf {
        self.tmp.path().join("marker")
    }

    pub fn spec(&self, version: &str) -> ProfileSpec {
        ProfileSpec::new(version, &self.marker())
    }

    /// Publishes a signed test profile; it is not in the local store afterwards.
    pub fn publish(&self, version: &str) -> Published {
        let p = self.cache.publish(&self.spec(version));
        assert!(
            !Path::new(&p.out_path).exists(),
            "{} is still in the local store",
            p.out_path
        );
        p
    }

    /// Publishes a signed test profile and makes it the job's latest successful build.
    pub fn release(&self, version: &str) -> (Published, u64) {
        let p = self.publish(version);
        let id = self.make_latest(&p);
        (p, id)
    }

    /// Releases a test profile and deploys it with `hail --oneshot`.
    pub fn deployed(&self, version: &str) -> Published {
        let (p, _) = self.release(version);
        let r = self.hail.oneshot(&[], RUN);
        assert_eq!(r.code(), Some(0), "{}", r.output);
        p
    }

    /// Publishes a signed test profile made from `spec` and makes it the job's latest successful
    /// build.
    pub fn release_spec(&self, spec: &ProfileSpec) -> (Published, u64) {
        let p = self.cache.publish(spec);
        let id = self.make_latest(&p);
        (p, id)
    }

    /// Makes a published closure the job's latest successful build; returns the build id.
    pub fn make_latest(&self, p: &Published) -> u64 {
        self.hydra.add_build(BuildSpec::succeeded(&p.out_path))
    }

    /// The lines `bin/activate` wrote so far.
    pub fn activations(&self) -> Vec<String> {
        fs::read_to_string(self.marker())
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Waits until there are at least `n` activation lines.
    pub fn wait_activations(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_until(timeout, || self.activations().len() >= n);
        self.activations()
    }

    /// Waits until there are as many activation lines as `want` and checks they are `want`.
    pub fn assert_activations(&self, want: &[String], hail: &Running) {
        let acts = self.wait_activations(want.len(), RUN);
        assert_eq!(acts, want, "{}", hail.output());
    }

    /// Where the profile points (fully resolved), if it exists.
    pub fn profile_target(&self) -> Option<String> {
        fs::canonicalize(&self.hail.profile)
            .ok()
            .map(|p| p.display().to_string())
    }

    /// The generation links beside the profile (`<profile>-<N>-link`), sorted.
    pub fn generations(&self) -> Vec<String> {
        let dir = self.hail.profile.parent().unwrap();
        let name = self.hail.profile.file_name().unwrap().to_str().unwrap();
        let mut gens: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("{name}-")) && n.ends_with("-link"))
                    .collect()
            })
            .unwrap_or_default();
        gens.sort();
        gens
    }

    /// Nothing was deployed: no profile, no generation, no activation, nothing fetched from the
    /// cache.
    pub fn assert_untouched(&self, output: &str) {
        assert!(
            fs::symlink_metadata(&self.hail.profile)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
            "the profile was created; hail's output:\n{output}"
        );
        assert_eq!(
            self.generations(),
            Vec::<String>::new(),
            "hail's output:\n{output}"
        );
        assert_eq!(
            self.activations(),
            Vec::<String>::new(),
            "hail's output:\n{output}"
        );
        let fetched: Vec<String> = self
            .cache
            .requests()
            .into_iter()
            .filter(|r| r != "/nix-cache-info")
            .collect();
        assert_eq!(
            fetched,
            Vec::<String>::new(),
            "the cache was asked; hail's output:\n{output}"
        );
    }

    /// Runs `hail --oneshot extra…` in a mount namespace of its own whose `/etc` shows `files`
    /// (name → content, mode 0600) over the host's, which stays untouched (an overlay on a
    /// tmpfs, both gone with the namespace). Needs [`NAMESPACES`](hail_testkit::prereq::NAMESPACES).
    pub fn oneshot_with_etc(&self, files: &[(&str, &str)], extra: &[&str]) -> Finished {
        hail_testkit::prereq::require(&hail_testkit::prereq::NAMESPACES);
        let layers = tempfile::Builder::new()
            .prefix("etc-")
            .tempdir_in(self.tmp.path())
            .unwrap();
        let mut prelude = format!(
            "mount -t tmpfs hail-test-etc {d} && mkdir {d}/upper {d}/work && ",
            d = layers.path().display()
        );
        for (i, (name, content)) in files.iter().enumerate() {
            let source = self.tmp.path().join(format!("etc-file-{i}"));
            fs::write(&source, content).unwrap();
            prelude.push_str(&format!(
                "install -m 0600 {} {}/upper/{name} && ",
                source.display(),
                layers.path().display()
            ));
        }
        prelude.push_str(&format!(
            "mount -t overlay hail-test-etc -o lowerdir=/etc,upperdir={d}/upper,workdir={d}/work /etc && ",
            d = layers.path().display()
        ));
        let mut args = vec!["--oneshot"];
        args.extend_from_slice(extra);
        let hail = self.hail.command(&args);
        let mut c = Command::new("unshare");
        c.env_clear();
        for (k, v) in hail.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!("{prelude}exec \"$@\""))
            .arg("sh")
            .arg(hail.get_program())
            .args(hail.get_args());
        Running::start(c).finish_within(RUN)
    }

    /// Requests hail made for the job's `/latest`.
    pub fn latest_requests(&self) -> usize {
        self.hydra
            .requests_to(&self.hydra.default_latest_path())
            .len()
    }
}

/// hail has not exited (whatever the test did to it).
pub fn assert_running(hail: &mut Running) {
    assert!(
        hail.try_status().is_none(),
        "hail exited: {}",
        hail.output()
    );
}

/// `activated <version> <out path>`, as the test profile writes it.
pub fn activated(version: &str, p: &Published) -> String {
    format!("activated {version} {}", p.out_path)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` is gone: it does not exist, or it was killed and waits only to be reaped
/// (a zombie).
pub fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 2..].starts_with('Z')))
        .unwrap_or(true)
}
