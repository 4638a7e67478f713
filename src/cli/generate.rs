//! `hail generate`: the man page and the shell completions, made from the command line's own
//! definition so that they list exactly the options `--help` does.

use std::io::{self, Write};

use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::Roff;

use super::Cli;

/// Options of `hail generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to print: the man page hail(1) in roff, or the completion script for a shell.
    #[arg(value_enum, value_name = "WHAT")]
    pub what: Generated,
}

/// What `hail generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// The man page hail(1), every command's options included (`man -l` reads it).
    Man,
    /// bash completion (bash-completion loads it from completions/hail).
    Bash,
    /// zsh completion (a `_hail` file in a directory on $fpath).
    Zsh,
    /// fish completion (completions/hail.fish).
    Fish,
}

/// Why `hail generate` printed nothing, or not all.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the {what} to standard output: {source}")]
pub struct GenerateError {
    what: &'static str,
    source: io::Error,
}

/// Prints what `args` asks for to `out`.
pub fn generate(args: &GenerateArgs, out: &mut dyn Write) -> Result<(), GenerateError> {
    let (what, shell) = match args.what {
        Generated::Man => ("man page", None),
        Generated::Bash => ("bash completion", Some(Shell::Bash)),
        Generated::Zsh => ("zsh completion", Some(Shell::Zsh)),
        Generated::Fish => ("fish completion", Some(Shell::Fish)),
    };
    let written = match shell {
        None => man_page(out),
        Some(shell) => {
            // clap_complete writes with `write_all(..).expect(..)`: render to memory first so that
            // a closed pipe is an error here, not a panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hail", &mut script);
            out.write_all(&script)
        }
    };
    written
        .and_then(|()| out.flush())
        .map_err(|source| GenerateError { what, source })
}

/// hail(1): the agent's synopsis, description and options as clap_mangen renders them, then one
/// section per command with its synopsis, description and options. One page rather than a
/// hail-COMMAND(1) page each: the commands are few and short, and one file is one install step.
fn man_page(out: &mut dyn Write) -> io::Result<()> {
    // `hail help` is --help again; clap_mangen leaves it out of its pages too.
    let mut hail = Cli::command().disable_help_subcommand(true);
    hail.build();
    let page = Man::new(hail.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    for command in hail.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = command.get_bin_name().unwrap_or_else(|| command.get_name());
        let mut heading = Roff::new();
        heading.control("SH", [name.to_uppercase().as_str()]);
        heading.to_writer(out)?;
        let man = Man::new(command.clone());
        let mut body = Vec::new();
        man.render_synopsis_section(&mut body)?;
        Roff::new().control("PP", []).to_writer(&mut body)?;
        man.render_description_section(&mut body)?;
        man.render_options_section(&mut body)?;
        out.write_all(&without_headings(&body))?;
    }
    page.render_version_section(out)
}

/// `roff` without its `.SH` lines: a command's synopsis, description and options go under the
/// one heading that names the command (commands' options carry no help headings of their own).
fn without_headings(roff: &[u8]) -> Vec<u8> {
    roff.split_inclusive(|b| *b == b'\n')
        .filter(|line| !line.starts_with(b".SH "))
        .flatten()
        .copied()
        .collect()
}
