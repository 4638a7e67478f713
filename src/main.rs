use std::process::ExitCode;

use clap::Parser;
use hail::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    hail::logging::init(&cli.agent.journal_fields());
    let code = match cli.command {
        None => hail::agent::main(cli.agent),
        Some(Command::ApplyInstances(args)) => match hail::manager::apply(&args) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(hail.event = "apply-failed", hail.error = %e, "{e}");
                e.exit_code()
            }
        },
    };
    ExitCode::from(code)
}
