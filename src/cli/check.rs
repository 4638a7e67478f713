//! The manager's check of an instance's settings: exactly the agent's own parsing, without this
//! process's environment.

use super::{Cli, Config, Env};

/// Checks an agent's settings exactly as `hail` checks its own at start-up, and returns the
/// configuration they make. `env` is the agent's environment (variables not starting with
/// `HAIL_` are not hail's and pass unchecked); `args` are its arguments after the program name
/// and win over the variable of the same option, as in hail. This process's own environment is
/// not consulted. The error is one line.
pub fn check_agent_settings(
    env: &std::collections::BTreeMap<String, String>,
    args: &[String],
) -> Result<Config, String> {
    use clap::{CommandFactory, FromArgMatches};

    use clap::builder::{BoolishValueParser, TypedValueParser};

    let command = Cli::command();
    // Each variable's option, and whether it is a flag (no value on the command line).
    let option_of_var: std::collections::BTreeMap<String, (String, bool)> = command
        .get_arguments()
        .filter_map(|a| {
            Some((
                a.get_env()?.to_str()?.to_string(),
                (a.get_long()?.to_string(), !a.get_action().takes_values()),
            ))
        })
        .collect();
    let mut argv = vec!["hail".to_string()];
    for (key, value) in env.iter().filter(|(k, _)| k.starts_with("HAIL_")) {
        let Some((long, flag)) = option_of_var.get(key) else {
            let known: Vec<&str> = option_of_var.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown hail setting {key} (hail reads {})",
                known.join(", ")
            ));
        };
        if !flag {
            argv.push(format!("--{long}={value}"));
            continue;
        }
        // A flag's variable is read as hail reads it (true, yes, 1, on / false, no, 0, off).
        let on = BoolishValueParser::new()
            .parse_ref(&command, None, std::ffi::OsStr::new(value))
            .map_err(|_| format!("{key}={value:?}: expected true or false"))?;
        if on {
            argv.push(format!("--{long}"));
        }
    }
    if !env.contains_key("HAIL_JOB_URI") && !args.iter().any(|a| a.starts_with("--job-uri")) {
        return Err("no job URI (HAIL_JOB_URI)".to_string());
    }
    argv.extend(args.iter().cloned());
    // The variables are passed as options above: clap must not also read this process's.
    // Options given twice (variable, then argument): the argument wins, as in hail.
    let command = command
        .mut_args(|a| a.env(None::<&'static str>))
        .args_override_self(true);
    let matches = command.try_get_matches_from(&argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        first.trim_start_matches("error: ").to_string()
    })?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    if cli.command.is_some() {
        return Err("the arguments run a subcommand, not the agent".to_string());
    }
    cli.agent
        .into_config(&Env::default())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(vars: &[(&str, &str)]) -> Result<Config, String> {
        let env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("HAIL_JOB_URI".into(), "https://h/job/p/j/a".into())])
            .chain([("HAIL_PROFILE".into(), "/nix/var/nix/profiles/a".into())])
            .collect();
        check_agent_settings(&env, &[])
    }

    #[test]
    fn a_flags_variable_is_read_as_hail_reads_it() {
        // As the NixOS module and the manager write them.
        assert!(check(&[("HAIL_SYSTEM", "true")]).unwrap().system.is_some());
        assert!(
            check(&[("HAIL_ALLOW_DOWNGRADE", "true")])
                .unwrap()
                .allow_downgrade
        );
        for off in ["false", "0", "no"] {
            assert!(check(&[("HAIL_SYSTEM", off)]).unwrap().system.is_none());
            assert!(
                !check(&[("HAIL_ALLOW_DOWNGRADE", off)])
                    .unwrap()
                    .allow_downgrade
            );
        }
        let e = check(&[("HAIL_SYSTEM", "maybe")]).unwrap_err();
        assert!(
            e.contains("HAIL_SYSTEM") && e.contains("true or false"),
            "{e}"
        );
    }
}
