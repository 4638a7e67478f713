//! The demo: a real deployment with real Nix, on this machine, in about a minute.
//!
//! It builds versions of a small profile with Nix, publishes them to a signed binary cache and
//! a Hydra-compatible server on 127.0.0.1, and lets the real `hail` binary deploy them:
//! a first deployment, a new build picked up by the running service, a build whose activation
//! fails (hail puts the previous generation back and remembers the build), `hail status`, an
//! unsigned build (Nix refuses it), an operator's rollback (hail keeps it), pause and resume, a
//! build whose health check fails (rolled back), the metrics file, and a whole (fake) NixOS
//! system deployed with `--system`.
//!
//! Usage: hail-demo PATH-TO-HAIL

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hail_testkit::cache::{Cache, ProfileSpec, nixos_system_nix};
use hail_testkit::hydra::{BuildSpec, DEFAULT_JOBSET, DEFAULT_PROJECT, HydraServer};

fn main() {
    let hail = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            eprintln!("usage: hail-demo PATH-TO-HAIL");
            std::process::exit(2);
        });
    hail_testkit::prereq::require_nix();
    let work = tempfile::Builder::new()
        .prefix("hail-demo-")
        .tempdir()
        .expect("temp dir");
    let marker = work.path().join("activations.log");
    let profile = work.path().join("profiles/demo");
    let home = work.path().join("home");

    step(
        "1. Build two versions of a demo profile with Nix and publish them to a signed binary cache",
    );
    let cache = Cache::start();
    let v1 = cache.publish(&ProfileSpec::new("1", &marker));
    let v2 = cache.publish(&ProfileSpec::new("2", &marker));
    say(&format!(
        "cache  {}  (key {})",
        cache.url(),
        cache.public_key()
    ));
    say(&format!("v1     {}", v1.out_path));
    say(&format!("v2     {}", v2.out_path));
    say("both were removed from the local store: hail's Nix has to substitute them from the cache");

    step("2. Start a Hydra-compatible server whose job has one successful build (v1)");
    let hydra = HydraServer::start();
    let job = hydra.default_job_uri();
    let b1 = hydra.add_build(BuildSpec::succeeded(&v1.out_path));
    say(&format!("job    {job}  (latest = build {b1})"));

    let nix_config = cache.nix_config();
    let metrics = work.path().join("hail.prom");
    let bare = |args: &[&str]| -> Command {
        let mut c = Command::new(&hail);
        c.args(args);
        c.env("NIX_CONFIG", &nix_config)
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        c
    };
    let run = |extra: &[&str]| -> Command {
        let mut c = bare(&["--profile", profile.to_str().unwrap(), "--job-uri", &job]);
        c.args(extra);
        c
    };
    // `hail status`, `pause`, `resume` for the agent deploying `profile`.
    let control_for = |profile: &Path, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--profile", profile.to_str().unwrap()]);
        say(&format!("$ hail {}", all.join(" ")));
        let out = bare(&all).output().expect("run hail");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            say(&format!("  {line}"));
        }
    };
    let control = |args: &[&str]| control_for(&profile, args);

    step("3. hail --oneshot: poll, realise from the cache, switch the profile, activate");
    show_command(&profile, &job, "--oneshot");
    let code = run(&["--oneshot"]).status().expect("run hail").code();
    say(&format!("exit code {code:?}; {}", describe(&profile)));
    say(&format!("activation wrote: {}", last_line(&marker)));
    assert_eq!(code, Some(0), "the first deployment failed");

    step("4. hail as a service (poll every 2s, metrics to a file); Hydra finishes build v2");
    let metrics_arg = metrics.to_str().unwrap();
    // Health checks get 3 s to pass (tried every second): a demo does not wait two minutes.
    let service_args = [
        "--poll-period",
        "2s",
        "--metrics-file",
        metrics_arg,
        "--health-interval",
        "1s",
        "--health-timeout",
        "3s",
    ];
    show_command(&profile, &job, &service_args.join(" "));
    let mut service = run(&service_args).spawn().expect("start hail");
    wait_for(
        || activations(&marker) >= 2,
        "the start-up activation",
        &mut service,
    );
    let b2 = hydra.add_build(BuildSpec::succeeded(&v2.out_path));
    say(&format!("Hydra: build {b2} succeeded"));
    wait_for(
        || current(&profile) == v2.out_path,
        "build v2 to be deployed",
        &mut service,
    );
    wait_for(
        || last_line(&marker).contains(&v2.out_path),
        "v2's activation",
        &mut service,
    );
    say(&describe(&profile));

    step("5. A build whose activation fails: hail switches back to the previous generation");
    let v3 = cache.publish(&ProfileSpec::new("3-broken", &marker).exit_code(1));
    let b3 = hydra.add_build(BuildSpec::succeeded(&v3.out_path));
    say(&format!("Hydra: build {b3} succeeded ({})", v3.out_path));
    let before = activations(&marker);
    wait_for(
        || activations(&marker) >= before + 2 && current(&profile) == v2.out_path,
        "the failed activation and the switch back",
        &mut service,
    );
    say(&describe(&profile));
    say("build 3 is known-bad now: no hail deploys it again, also after a restart");
    control(&["status"]);

    step("6. An unsigned build: Nix refuses it, the profile stays where it is");
    let v4 = cache.publish_unsigned(&ProfileSpec::new("4-unsigned", &marker));
    let b4 = hydra.add_build(BuildSpec::succeeded(&v4.out_path));
    say(&format!(
        "Hydra: build {b4} succeeded ({}), not signed",
        v4.out_path
    ));
    let polls = hydra.requests().len();
    wait_for(
        || hydra.requests().len() >= polls + 2,
        "hail to try build 4",
        &mut service,
    );
    std::thread::sleep(Duration::from_secs(1));
    say(&describe(&profile));
    assert_eq!(
        current(&profile),
        v2.out_path,
        "the unsigned build was deployed"
    );

    step("7. An operator rolls back by hand: hail keeps the operator's choice");
    say(&format!(
        "$ nix-env --profile {} --rollback",
        profile.display()
    ));
    let rolled = Command::new("nix-env")
        .arg("--profile")
        .arg(&profile)
        .arg("--rollback")
        .env("HOME", &home)
        .status()
        .expect("run nix-env");
    assert!(rolled.success(), "nix-env --rollback failed");
    let polls = hydra.requests().len();
    wait_for(
        || hydra.requests().len() >= polls + 2,
        "hail to look again",
        &mut service,
    );
    say(&describe(&profile));
    assert_eq!(current(&profile), v1.out_path, "hail undid the rollback");

    step("8. Pause, a new build, resume");
    control(&["pause", "--reason", "demo maintenance"]);
    let v5 = cache.publish(&ProfileSpec::new("5", &marker));
    let b5 = hydra.add_build(BuildSpec::succeeded(&v5.out_path));
    say(&format!(
        "Hydra: build {b5} succeeded; hail sees it but waits"
    ));
    let polls = hydra.requests().len();
    wait_for(
        || hydra.requests().len() >= polls + 2,
        "hail to poll while paused",
        &mut service,
    );
    say(&describe(&profile));
    control(&["resume"]);
    wait_for(
        || current(&profile) == v5.out_path,
        "build 5 to be deployed",
        &mut service,
    );
    say(&describe(&profile));

    step("9. A build whose own health check never passes: hail puts the previous generation back");
    let v6 = cache.publish(
        &ProfileSpec::new("6-unhealthy", &marker)
            .health_check("echo 'service answered 503'; exit 1"),
    );
    let b6 = hydra.add_build(BuildSpec::succeeded(&v6.out_path));
    say(&format!(
        "Hydra: build {b6} succeeded; its bin/health-check fails"
    ));
    let before = activations(&marker);
    wait_for(
        || activations(&marker) >= before + 2 && current(&profile) == v5.out_path,
        "the failed health check and the switch back",
        &mut service,
    );
    say(&describe(&profile));

    step("10. The metrics file, for node_exporter's textfile collector");
    let text = std::fs::read_to_string(&metrics).unwrap_or_default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        say(line);
    }

    step("11. A whole NixOS system (--system): checked, switched to, reboot-needed reported");
    let system_log = work.path().join("switches");
    let (boot_entry, current_system) = (
        work.path().join("boot-entry"),
        work.path().join("current-system"),
    );
    let publish_system = |version: &str, kernel: &str| {
        let nonce = format!("demo-{version}-{}", std::process::id());
        #[rustfmt::skip]
        let args = [
            "--argstr", "version", version,
            "--argstr", "nonce", &nonce,
            "--argstr", "kernel", kernel,
            "--argstr", "log", system_log.to_str().unwrap(),
            "--argstr", "bootEntry", boot_entry.to_str().unwrap(),
            "--argstr", "currentSystem", current_system.to_str().unwrap(),
        ];
        cache.publish_nix(&nixos_system_nix(), &args).out_path
    };
    let (s1, s2) = (publish_system("1", "6.1"), publish_system("2", "6.6"));
    let system_job = hydra.job_uri(DEFAULT_PROJECT, DEFAULT_JOBSET, "nixos");
    let system_profile = work.path().join("profiles/system");
    let system = |out: &str| {
        hydra.add_build(BuildSpec::succeeded(out).job(DEFAULT_PROJECT, DEFAULT_JOBSET, "nixos"));
        let mut c = bare(&["--profile", system_profile.to_str().unwrap()]);
        c.args(["--job-uri", &system_job, "--system", "--oneshot"])
            .args(["--booted-system", &s1]);
        say(&format!(
            "$ hail --system --oneshot --booted-system {s1} --job-uri {system_job} …"
        ));
        let code = c.status().expect("run hail").code();
        say(&format!(
            "exit code {code:?}; {}",
            describe(&system_profile)
        ));
    };
    system(&s1);
    system(&s2);
    say("switch-to-configuration ran (here directly: this host runs no systemd):");
    for line in std::fs::read_to_string(&system_log)
        .unwrap_or_default()
        .lines()
    {
        say(&format!(
            "  {}",
            line.split(" unit=").next().unwrap_or(line)
        ));
    }
    control_for(&system_profile, &["status"]);

    step(
        "12. Killed mid-activation (SIGKILL, as power loss or the OOM killer): the next start finishes the job",
    );
    let started = work.path().join("activation-7.pid");
    let v7 = cache.publish(
        &ProfileSpec::new("7-broken", &marker)
            .exit_code(1)
            .extra(&hail_testkit::cache::hang_once(&started)),
    );
    let b7 = hydra.add_build(BuildSpec::succeeded(&v7.out_path));
    say(&format!(
        "Hydra: build {b7} succeeded; its activation fails, and the first time it hangs"
    ));
    wait_for(|| started.exists(), "build 7's activation", &mut service);
    say(&describe(&profile));
    let activation: i32 = std::fs::read_to_string(&started)
        .expect("the activation's pid")
        .trim()
        .parse()
        .expect("a pid");
    // SAFETY: kill(2) on our own child and on the process group of its activation.
    unsafe {
        libc::kill(service.id() as i32, libc::SIGKILL);
        libc::kill(-activation, libc::SIGKILL);
    }
    let _ = service.wait();
    say("hail and the activation were killed; the profile points at the half-deployed build 7");
    show_command(&profile, &job, &service_args.join(" "));
    let mut service = run(&service_args).spawn().expect("start hail");
    wait_for(
        || current(&profile) == v5.out_path && last_line(&marker).contains(&v5.out_path),
        "build 7's activation to run again, fail, and build 5 to be put back",
        &mut service,
    );
    say(&describe(&profile));
    say("build 7 was seen through: its activation ran again, failed, and build 5 was put back");

    step("13. SIGTERM: hail stops cleanly");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    let status = service.wait().expect("wait for hail");
    say(&format!("hail exited with {status}"));

    step("Done");
    say(&format!(
        "activations, in order (from {}):",
        marker.display()
    ));
    for line in std::fs::read_to_string(&marker).unwrap_or_default().lines() {
        say(&format!("  {line}"));
    }
}

fn step(title: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m== {title}\x1b[0m");
    } else {
        println!("\n== {title}");
    }
}

fn say(text: &str) {
    println!("   {text}");
}

fn show_command(profile: &Path, job: &str, extra: &str) {
    say(&format!(
        "$ hail --profile {} --job-uri {job} {extra}",
        profile.display()
    ));
}

fn current(profile: &Path) -> String {
    std::fs::canonicalize(profile)
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn describe(profile: &Path) -> String {
    let link = std::fs::read_link(profile)
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    format!("profile -> {link} -> {}", current(profile))
}

fn activations(marker: &Path) -> usize {
    std::fs::read_to_string(marker)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn last_line(marker: &Path) -> String {
    std::fs::read_to_string(marker)
        .ok()
        .and_then(|s| s.lines().last().map(str::to_string))
        .unwrap_or_default()
}

fn wait_for(done: impl Fn() -> bool, what: &str, service: &mut Child) {
    let start = Instant::now();
    while !done() {
        if let Ok(Some(status)) = service.try_wait() {
            panic!("hail exited ({status}) while waiting for {what}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
