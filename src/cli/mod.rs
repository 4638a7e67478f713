//! The command line and `HAIL_*` environment: what the operator can set, parsed and checked.
//! clap lives here alone: [`agent`] checks the agent's options into a `Config`, [`values`] parses
//! periods and profile names, [`generate`] prints the man page and shell completions made from
//! these definitions, and the subcommands' options are below.

mod agent;
mod check;
mod generate;
mod values;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use agent::{AgentArgs, Config, ConfigError, Env, HealthChecks, Hooks};
pub use check::check_agent_settings;
pub use generate::{GenerateArgs, GenerateError, Generated, generate};
pub use values::{
    DEFAULT_POLL_PERIOD, MAX_DURATION, PROFILES_DIR, parse_duration, parse_period, profile_path,
};

/// Without a command, hail is the deployment agent, usually run as the systemd service hail@NAME:
/// it polls the job's latest successful build, realises its output from the binary cache,
/// switches the profile to it, runs the profile's `bin/activate` and its health checks, and
/// switches back to the last good build when they fail. The commands below look at and steer
/// such an agent, or install a set of agents.
///
/// Every option of the agent can also be set through the environment variable named with it
/// (HAIL_*). RUST_LOG sets the verbosity (default info).
// `about` (the short help and the man page's NAME line) is the package description; this doc
// comment is the long help and the man page's DESCRIPTION.
#[derive(Debug, Parser)]
#[command(
    name = "hail",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    subcommand_value_name = "COMMAND"
)]
pub struct Cli {
    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command line and `HAIL_*` variables of this process; exits with a usage message (code
    /// 2) when they are wrong.
    pub fn from_env() -> Cli {
        Cli::parse()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge this host's hail@ instances to a set described in a JSON file
    /// (what a manager profile's `bin/activate` runs).
    ApplyInstances(ApplyArgs),
    /// Show what an instance has deployed, what Hydra offers, and why it waits; with no
    /// instance named, a table of this host's hail@ instances.
    Status(StatusArgs),
    /// Stop deploying and rebooting (polls and reports go on) until `hail resume`; survives
    /// restarts.
    Pause(PauseArgs),
    /// Deploy again after `hail pause`, polling at once.
    Resume(InstanceArgs),
    /// Forget known-bad builds (all of them, or one with --build) and poll at once.
    Retry(RetryArgs),
    /// Print the man page hail(1), or the completion script for bash, zsh or fish.
    Generate(GenerateArgs),
}

/// Options of `hail apply-instances`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// JSON file describing the instance set (a manager profile's `instances.json`).
    #[arg(value_name = "FILE")]
    pub instances: PathBuf,

    /// Apply in this process instead of a transient systemd unit (what that unit runs). An
    /// apply run this way from a hail instance's activation dies if it restarts that instance.
    #[arg(long)]
    pub direct: bool,

    /// Only check the set and print each instance's drop-in; change nothing (no systemd needed).
    #[arg(long, conflicts_with = "direct")]
    pub check: bool,

    /// The hail instance whose activation runs this apply; if the set changes it, it is
    /// restarted last and without waiting [default: the hail@ unit this process runs in].
    #[arg(long, value_name = "NAME", requires = "direct")]
    pub caller: Option<String>,
}

/// Which instance a command is about.
#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// The instance `hail@NAME` (its state directory is /var/lib/hail/NAME).
    #[arg(value_name = "NAME", conflicts_with_all = ["state_dir", "profile"])]
    pub name: Option<String>,

    /// The state directory of the agent (its --state-dir).
    #[arg(long, value_name = "DIR", conflicts_with = "profile")]
    pub state_dir: Option<PathBuf>,

    /// The agent deploying this profile (a name or an absolute path, as the agent's --profile).
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
}

/// Options of `hail status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Print JSON (the schema is in the book, docs/: "hail status --json") instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Options of `hail pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Why, for `hail status`, the status line and the metrics' readers.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// Options of `hail retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Forget only this build (a Hydra build id) [default: all known-bad builds].
    #[arg(long = "build", value_name = "BUILD_ID")]
    pub build: Option<u64>,
}
