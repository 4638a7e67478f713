//! Benchmarks of the real hail binary against the Hydra-compatible server and a signed cache on
//! 127.0.0.1, printing figures (no pass/fail):
//! - idle RSS of a running agent (and its peak), and its spread over 21 starts,
//! - CPU time per no-op poll (polls triggered with SIGHUP, CPU read from /proc),
//! - wall and CPU time of a no-op `--oneshot`,
//! - the time hail adds to a deployment beyond the nix commands and the activation themselves
//!   (nix-store and nix-env are timed by wrappers placed first on PATH),
//! - a deployment that really switches, by `hail --oneshot` and by a shell script doing the same
//!   job with curl, sed, `nix-env --set` and the activation (wall time, and CPU time of it and all
//!   its children),
//! - CPU time per poll of an agent polling every second (from /proc),
//! - the memory (PSS) of 1, 50 and 200 agents on one host, and per additional agent.
//!
//! Usage: hail-bench PATH-TO-HAIL [ROUNDS]   (build both with --release)

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hail_testkit::cache::{Cache, ProfileSpec};
use hail_testkit::hydra::{BuildSpec, DEFAULT_JOBSET, DEFAULT_PROJECT, HydraServer};

/// Agents started one after another to measure the idle RSS.
const RSS_SAMPLES: usize = 21;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let hail = args.next().map(PathBuf::from).unwrap_or_else(|| {
        eprintln!("usage: hail-bench PATH-TO-HAIL [ROUNDS]");
        std::process::exit(2);
    });
    let rounds: usize = args
        .next()
        .and_then(|a| a.to_str()?.parse().ok())
        .unwrap_or(200);
    hail_testkit::prereq::require_nix();
    let work = tempfile::Builder::new()
        .prefix("hail-bench-")
        .tempdir()
        .expect("temp dir");
    let marker = work.path().join("activations.log");
    let cache = Cache::start();
    let hydra = HydraServer::start();
    let job = hydra.default_job_uri();
    let bench = Bench {
        hail,
        work: work.path().to_path_buf(),
        job,
        nix_config: cache.nix_config(),
    };

    // A new build, not in the local store, becomes the job's latest; returns its output.
    let publish_latest = |version: &str| {
        let p = cache.publish(&ProfileSpec::new(version, &marker));
        hydra.add_build(BuildSpec::succeeded(&p.out_path));
        p.out_path
    };

    // One deployment so that every later poll is a no-op.
    publish_latest("bench-0");
    let profile = bench.work.join("profiles/noop");
    let status = bench
        .command(&profile, &["--oneshot"])
        .status()
        .expect("run hail");
    assert!(status.success(), "the first deployment failed: {status}");

    println!("hail {}", bench.hail.display());
    println!("binary size: {:.1} MiB", file_mib(&bench.hail));

    // Idle RSS and CPU per poll of a running agent.
    let mut agent = bench.idle_agent(&profile, &hydra);
    let pid = agent.id();
    let idle = proc_kib(pid, "status", "VmRSS");
    let pss = mib(proc_kib(pid, "smaps_rollup", "Pss"));
    let anon = mib(proc_kib(pid, "smaps_rollup", "Anonymous"));
    let cpu_before = cpu_ns(pid);
    let polls_before = count_latest(&hydra);
    for i in 1..=rounds {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        wait_until(
            || count_builds(&hydra) >= polls_before + i,
            "a poll",
            std::slice::from_mut(&mut agent),
            Duration::from_millis(1),
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let cpu = cpu_ns(pid) - cpu_before;
    let after = proc_kib(pid, "status", "VmRSS");
    let peak = proc_kib(pid, "status", "VmHWM");
    stop(&mut agent);
    println!(
        "idle RSS of a running agent: {:.2} MiB (after {rounds} polls: {:.2} MiB, peak {:.2} MiB)",
        mib(idle),
        mib(after),
        mib(peak)
    );
    println!(
        "  of which private anonymous memory {anon:.2} MiB; PSS {pss:.2} MiB (the rest is code shared with other processes)"
    );
    // Each start maps the binary at another address (ASLR), so other code shares the kernel's
    // fault-around windows (64 KiB): the resident code differs from one start to the next.
    let mut samples: Vec<u64> = (0..RSS_SAMPLES)
        .map(|_| {
            let mut agent = bench.idle_agent(&profile, &hydra);
            let rss = proc_kib(agent.id(), "status", "VmRSS");
            stop(&mut agent);
            rss
        })
        .collect();
    samples.sort_unstable();
    println!(
        "idle RSS over {RSS_SAMPLES} starts: median {:.2} MiB, min {:.2} MiB, max {:.2} MiB",
        mib(samples[samples.len() / 2]),
        mib(samples[0]),
        mib(samples[samples.len() - 1])
    );
    println!(
        "CPU time per no-op poll: {:.3} ms (over {rounds} polls)",
        cpu as f64 / 1e6 / rounds as f64
    );

    // Wall and CPU time of a no-op --oneshot.
    let (mut walls, mut cpus): (Vec<_>, Vec<_>) = (0..rounds.min(100))
        .map(|_| run_measured(&mut bench.command(&profile, &["--oneshot"])))
        .unzip();
    println!("no-op --oneshot wall time: {}", summary(&mut walls));
    println!(
        "no-op --oneshot CPU time (user+sys): {}",
        summary(&mut cpus)
    );

    // hail's own time per deployment.
    let wrappers = bench.work.join("wrappers");
    let timings = bench.work.join("nix-timings");
    write_wrappers(&wrappers, &timings);
    let deploy_profile = bench.work.join("profiles/deploy");
    let mut overheads = Vec::new();
    let mut totals = Vec::new();
    for i in 0..10 {
        publish_latest(&format!("bench-{}", i + 1));
        let _ = std::fs::remove_file(&timings);
        let mut c = bench.command(&deploy_profile, &["--oneshot"]);
        if let Some(dir) = std::env::var_os("HAIL_BENCH_LOGS") {
            let f = std::fs::File::create(Path::new(&dir).join(format!("deploy-{i}.log"))).unwrap();
            c.stderr(f).env("RUST_LOG", "debug");
        }
        let path = format!(
            "{}:{}",
            wrappers.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path).env("HAIL_BENCH_TIMINGS", &timings);
        let (total, _) = run_measured(&mut c);
        let nix: Duration = std::fs::read_to_string(&timings)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .map(Duration::from_nanos)
            .sum();
        let activation = time_activation(&deploy_profile);
        totals.push(total);
        overheads.push(total.saturating_sub(nix + activation));
    }
    println!(
        "deployment wall time (realise from cache + switch + activate): {}",
        summary(&mut totals)
    );
    println!(
        "hail's own time per deployment (beyond nix commands and activation): {}",
        summary(&mut overheads)
    );

    // A deployment that really switches, by hail and by the shortest script doing the same job,
    // taking turns; each run deploys a build of its own, which it has to substitute.
    let script = bench.work.join("deploy.sh");
    std::fs::write(&script, DEPLOY_SCRIPT).unwrap();
    let hail_profile = bench.work.join("profiles/switch-hail");
    let script_profile = bench.work.join("profiles/switch-script");
    let (mut hail_runs, mut script_runs) = (Vec::new(), Vec::new());
    for i in 0..rounds.min(SWITCH_ROUNDS) {
        publish_latest(&format!("switch-hail-{i}"));
        hail_runs.push(run_measured(
            &mut bench.command(&hail_profile, &["--oneshot"]),
        ));
        publish_latest(&format!("switch-script-{i}"));
        let mut c = bench.clean(Path::new("/bin/sh"));
        c.arg(&script).arg(&bench.job).arg(&script_profile);
        script_runs.push(run_measured(&mut c));
    }
    let (hail_wall, hail_cpu) = print_runs("hail --oneshot", hail_runs);
    let (script_wall, script_cpu) =
        print_runs("curl + nix-env --set + activate script", script_runs);
    println!(
        "  hail / script (medians): wall {:.2}x, CPU {:.2}x",
        hail_wall.as_secs_f64() / script_wall.as_secs_f64(),
        hail_cpu.as_secs_f64() / script_cpu.as_secs_f64()
    );

    // Many agents on one host, each with a profile and a job of its own (so the server tells
    // their polls apart), polling every second. Each profile gets its first deployment from a
    // --oneshot before its agent starts, so the agents' polls are all no-ops.
    raise_open_files_limit();
    let out_path = publish_latest("agents");
    let mut agents = Agents::default();
    let start_agent = |agents: &mut Agents| {
        let job = format!("agent-{}", agents.jobs.len());
        hydra.add_build(BuildSpec::succeeded(&out_path).job(DEFAULT_PROJECT, DEFAULT_JOBSET, &job));
        let uri = hydra.job_uri(DEFAULT_PROJECT, DEFAULT_JOBSET, &job);
        let profile = bench.work.join("profiles").join(&job);
        run_measured(&mut bench.command_for(&uri, &profile, &["--oneshot"]));
        agents.start(
            job,
            bench.command_for(&uri, &profile, &["--poll-period", "1s"]),
        );
    };

    // CPU per poll of one agent polling every second (idle time between polls included).
    start_agent(&mut agents);
    agents.wait_for_polls(&hydra, 1);
    let (pid, job) = (agents.children[0].id(), agents.jobs[0].clone());
    let (cpu_before, polls_before) = (cpu_ns(pid), polls_by_job(&hydra)[&job]);
    agents.wait_for_polls(&hydra, polls_before + 20);
    let cpu = cpu_ns(pid) - cpu_before;
    let polls = polls_by_job(&hydra)[&job] - polls_before;
    println!(
        "CPU time per poll at a 1 s poll period: {:.3} ms (over {polls} polls)",
        cpu as f64 / 1e6 / polls as f64
    );

    hydra_load(&bench, &hydra, &profile, &publish_latest);

    // PSS, which splits shared pages among the processes sharing them, summed over the agents.
    let one = agents.pss_kib();
    println!("PSS of 1 agent: {:.2} MiB", mib(one));
    for n in [50, 200] {
        while agents.jobs.len() < n {
            start_agent(&mut agents);
        }
        agents.wait_for_polls(&hydra, 3);
        let total = agents.pss_kib();
        println!(
            "PSS of {n} agents: {:.1} MiB in all, {:.2} MiB per additional agent",
            mib(total),
            mib(total.saturating_sub(one)) / (n - 1) as f64
        );
    }
}

/// What one poll costs Hydra under each gate: requests and bytes answered, for a no-op poll in
/// steady state, and for the first poll after a new evaluation of 1,000 builds (when the gate
/// reads its builds once).
fn hydra_load(
    bench: &Bench,
    hydra: &HydraServer,
    profile: &Path,
    publish: &dyn Fn(&str) -> String,
) {
    let cost = |extra: &[&str]| {
        let before = hydra.requests().len();
        let status = bench
            .command(profile, &[&["--oneshot"], extra].concat())
            .status()
            .expect("run hail");
        assert!(status.success(), "hail {extra:?} failed: {status}");
        let asked = &hydra.requests()[before..];
        let bytes: u64 = asked.iter().filter_map(|r| r.response_bytes).sum();
        (asked.len(), bytes)
    };
    let show = |what: &str, (requests, bytes): (usize, u64)| {
        println!("Hydra's load, {what}: {requests} requests, {bytes} bytes");
    };
    show("--gate latest, a poll", cost(&[]));
    // A new evaluation: the deployed job's build beside 1,000 others, all succeeded.
    let out = publish("gate");
    let eval = hydra.add_eval(DEFAULT_PROJECT, DEFAULT_JOBSET);
    hydra.add_build(BuildSpec::succeeded(&out).in_evals(&[eval]));
    hydra.add_other_builds(eval, 1000, &BuildSpec::succeeded(&out));
    let gate = ["--gate", "evaluation"];
    show(
        "--gate evaluation, the first poll after a new evaluation of 1,001 builds (deploys it)",
        cost(&gate),
    );
    show("--gate evaluation, a poll in steady state", cost(&gate));
}

/// Running agents and the jobs they poll; all are killed when this is dropped. Each also dies
/// with the benchmark: release builds abort on panic, and then no destructor runs.
#[derive(Default)]
struct Agents {
    jobs: Vec<String>,
    children: Vec<Child>,
}

impl Agents {
    fn start(&mut self, job: String, mut c: Command) {
        // SAFETY: prctl(2) is async-signal-safe and only changes the new process.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            })
        };
        self.children.push(c.spawn().expect("start hail"));
        self.jobs.push(job);
    }

    /// Waits until each agent's job has seen `polls` polls, then half a second for the last ones
    /// to finish.
    fn wait_for_polls(&mut self, hydra: &HydraServer, polls: usize) {
        let jobs = &self.jobs;
        let done = || {
            let seen = polls_by_job(hydra);
            jobs.iter()
                .all(|job| seen.get(job).copied().unwrap_or(0) >= polls)
        };
        // Counting reads every request recorded so far: not at every millisecond.
        let every = Duration::from_millis(100);
        wait_until(done, "the agents' polls", &mut self.children, every);
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Total PSS, in KiB.
    fn pss_kib(&self) -> u64 {
        self.children
            .iter()
            .map(|agent| proc_kib(agent.id(), "smaps_rollup", "Pss"))
            .sum()
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for agent in &mut self.children {
            let _ = agent.kill();
        }
        for agent in &mut self.children {
            let _ = agent.wait();
        }
    }
}

/// Requests for `<job>/latest` so far, by job name.
fn polls_by_job(hydra: &HydraServer) -> HashMap<String, usize> {
    let mut polls = HashMap::new();
    for r in hydra.requests() {
        if let Some(job) = r
            .path()
            .strip_suffix("/latest")
            .and_then(|p| p.rsplit('/').next())
        {
            *polls.entry(job.to_string()).or_default() += 1;
        }
    }
    polls
}

/// Lifts the soft limit on open files to the hard one: the test servers keep descriptors for
/// every connection the agents open.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Rounds of the switching comparison at most: each publishes two closures with real Nix.
const SWITCH_ROUNDS: usize = 40;

/// The shortest shell script doing what a switching `hail --oneshot` does: ask Hydra for the
/// job's latest build, substitute its output and make it the profile's new generation, activate
/// it. Arguments: JOB-URI PROFILE.
const DEPLOY_SCRIPT: &str = r#"set -e
out=$(curl -sfL -H 'Accept: application/json' "$1/latest" | sed -n 's/.*"out":{"path":"\([^"]*\)".*/\1/p')
test -n "$out"
nix-env --profile "$2" --set "$out"
exec "$2/bin/activate"
"#;

/// Prints the wall and CPU times of switching deployments; returns their medians.
fn print_runs(who: &str, runs: Vec<(Duration, Duration)>) -> (Duration, Duration) {
    let (mut walls, mut cpus): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
    println!("switching deployment by {who}:");
    println!("  wall time: {}", summary(&mut walls));
    println!(
        "  CPU time (user+sys, with all its children): {}",
        summary(&mut cpus)
    );
    (median(&mut walls), median(&mut cpus))
}

struct Bench {
    hail: PathBuf,
    work: PathBuf,
    job: String,
    nix_config: String,
}

impl Bench {
    /// An agent polling hourly, once its first poll is answered and it has settled.
    fn idle_agent(&self, profile: &Path, hydra: &HydraServer) -> Child {
        let before = count_latest(hydra);
        let mut agent = self
            .command(profile, &["--poll-period", "1h"])
            .spawn()
            .expect("start hail");
        wait_until(
            || count_latest(hydra) > before,
            "the agent's first poll",
            std::slice::from_mut(&mut agent),
            Duration::from_millis(1),
        );
        std::thread::sleep(Duration::from_millis(500));
        agent
    }

    /// hail deploying the benchmark's job to `profile`.
    fn command(&self, profile: &Path, extra: &[&str]) -> Command {
        self.command_for(&self.job, profile, extra)
    }

    /// hail deploying the job at `job_uri` to `profile`.
    fn command_for(&self, job_uri: &str, profile: &Path, extra: &[&str]) -> Command {
        let mut c = self.clean(&self.hail);
        c.arg("--profile")
            .arg(profile)
            .arg("--job-uri")
            .arg(job_uri)
            .args(extra);
        c
    }

    /// `program` in a clean environment (PATH kept, a HOME of its own, the cache's NIX_CONFIG),
    /// its output discarded.
    fn clean(&self, program: &Path) -> Command {
        let home = self.work.join("home");
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("NIX_CONFIG", &self.nix_config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
}

/// Runs `c` to completion and returns its wall time and the CPU time (user + system) of it and
/// of every descendant it waited for. Only one child runs at a time, so the growth of
/// RUSAGE_CHILDREN is this command's alone.
fn run_measured(c: &mut Command) -> (Duration, Duration) {
    let cpu_before = children_cpu();
    let t = Instant::now();
    let status = c
        .status()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    let wall = t.elapsed();
    assert!(status.success(), "{c:?} failed: {status}");
    (wall, children_cpu() - cpu_before)
}

/// User + system time of all waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The activation alone: the deployed profile's bin/activate, run directly, median of 5.
fn time_activation(profile: &Path) -> Duration {
    let mut runs: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            Command::new(profile.join("bin/activate"))
                .stdout(Stdio::null())
                .status()
                .expect("activate");
            t.elapsed()
        })
        .collect();
    runs.sort();
    runs[2]
}

/// `nix-store` and `nix-env` wrappers that add their run time (ns) to $HAIL_BENCH_TIMINGS.
fn write_wrappers(dir: &Path, _timings: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    for prog in ["nix-store", "nix-env"] {
        let real = which(prog);
        let script = format!(
            "#!/bin/sh\nstart=$(date +%s%N)\n{real} \"$@\"\nrc=$?\necho $(( $(date +%s%N) - start )) >> \"$HAIL_BENCH_TIMINGS\"\nexit $rc\n"
        );
        let path = dir.join(prog);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn which(prog: &str) -> String {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{prog} is not on PATH"))
        .display()
        .to_string()
}

/// SIGTERM, and the exit awaited.
fn stop(agent: &mut Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
}

fn count_latest(hydra: &HydraServer) -> usize {
    hydra
        .requests()
        .iter()
        .filter(|r| r.path().ends_with("/latest"))
        .count()
}

fn count_builds(hydra: &HydraServer) -> usize {
    hydra
        .requests()
        .iter()
        .filter(|r| r.path().starts_with("/build/"))
        .count()
}

/// The `KEY:  N kB` line of `/proc/PID/FILE` (`status`, `smaps_rollup`), in KiB; 0 if missing.
fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    s.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU time of every thread of `pid`, in ns (from schedstat: finer than clock ticks).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn file_mib(p: &Path) -> f64 {
    std::fs::metadata(p)
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
        .unwrap_or(0.0)
}

fn median(d: &mut [Duration]) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn summary(d: &mut [Duration]) -> String {
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    let median = median(d);
    let mean = d.iter().map(|x| ms(*x)).sum::<f64>() / d.len() as f64;
    format!(
        "median {:.2} ms, mean {:.2} ms, min {:.2} ms, max {:.2} ms (n={})",
        ms(median),
        mean,
        ms(d[0]),
        ms(d[d.len() - 1]),
        d.len()
    )
}

/// Waits until `done()`, checking `every` so often; panics if one of `children` exits first.
fn wait_until(done: impl Fn() -> bool, what: &str, children: &mut [Child], every: Duration) {
    let start = Instant::now();
    while !done() {
        for child in children.iter_mut() {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("hail exited ({s}) while waiting for {what}");
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(every);
    }
}
