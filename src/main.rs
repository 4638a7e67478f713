use std::process::ExitCode;

use hail::cli::{Cli, Command, ConfigError, Env, GenerateError};
use hail::state::Request;
use hail::{agent, control, logging, manager, systemd};

/// What ended hail unsuccessfully: the one place exit codes are chosen and last words said.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    #[error(transparent)]
    Manager(#[from] manager::ManagerError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

impl Failure {
    /// Logs the failure (unless it was logged, with its fields, where it happened), shows it in
    /// the agent's status line, and returns the documented exit code (docs/src/reference/exit-codes.md).
    fn report(&self) -> u8 {
        match self {
            Failure::Manager(e) => {
                tracing::error!(hail.event = "apply-failed", hail.error = %e, "{e}");
                return e.exit_code();
            }
            Failure::Control(e) => {
                eprintln!("hail: {e}");
                return e.exit_code();
            }
            Failure::Generate(e) => {
                eprintln!("hail: {e}");
                return 1;
            }
            Failure::Agent(e) if e.logged() => {}
            _ => tracing::error!(hail.event = "exit", hail.error = %self, "{self}"),
        }
        systemd::status(&format!("failed: {self}"));
        match self {
            Failure::Config(_) => 3,
            Failure::Agent(e) => e.exit_code(),
            Failure::Manager(e) => e.exit_code(),
            Failure::Control(e) => e.exit_code(),
            Failure::Generate(_) => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::from_env();
    let config = cli.agent.into_config(&Env::from_process());
    // Every journal entry names the job and profile, the manager's too (it runs in their unit).
    logging::init(
        &config
            .as_ref()
            .map(|c| c.journal_fields())
            .unwrap_or_default(),
    );
    let result = match (cli.command, config) {
        (Some(Command::ApplyInstances(args)), _) => manager::apply(&args).map_err(Failure::from),
        (Some(Command::Status(args)), _) => control::status(&args).map_err(Failure::from),
        (Some(Command::Pause(args)), _) => {
            let request = Request::Pause {
                reason: args.reason,
            };
            control::request(&args.instance, request).map_err(Failure::from)
        }
        (Some(Command::Resume(instance)), _) => {
            control::request(&instance, Request::Resume).map_err(Failure::from)
        }
        (Some(Command::Retry(args)), _) => {
            let request = Request::Retry {
                build_id: args.build,
            };
            control::request(&args.instance, request).map_err(Failure::from)
        }
        (Some(Command::Generate(args)), _) => {
            hail::cli::generate(&args, &mut std::io::stdout().lock()).map_err(Failure::from)
        }
        (None, Ok(config)) => agent::run(config).map_err(Failure::from),
        (None, Err(e)) => Err(Failure::from(e)),
    };
    ExitCode::from(result.map_or_else(|f| f.report(), |()| 0))
}
