//! The instance set as data (`instances.json`, written by `nix/manager.nix`), checked, and each
//! instance rendered to the systemd drop-in that configures its `hail@NAME.service`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};
use serde::Deserialize;

use crate::cli::Cli;

/// The only format version this hail reads.
pub const FORMAT_VERSION: u32 = 1;

/// Where an instance's profile lives; the same as the template unit's `HAIL_PROFILE`, written
/// explicitly in the drop-in so that removal cleans exactly the profile the instance used.
pub const PROFILES_DIR: &str = "/nix/var/nix/profiles/hail";

/// Variable in a managed instance's environment naming the configuration it was started with:
/// reading it from the running process tells whether a restart is still owed.
pub const CONFIG_VAR: &str = "HAIL_MANAGER_CONFIG";

/// Variables an instance may not set: the profile is fixed by the instance name (removal cleans
/// it), a oneshot service would never poll again, and the configuration id is the manager's.
const RESERVED_VARS: &[&str] = &["HAIL_PROFILE", "HAIL_ONESHOT", CONFIG_VAR];

/// `instances.json` as written by `nix/manager.nix`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SetFile {
    version: u32,
    /// The hail executable the instances run (`ExecStart=`); absent keeps the template's.
    #[serde(default)]
    exec_start: Option<String>,
    instances: BTreeMap<String, InstanceFile>,
}

/// One instance: the output of `nix/instance.nix`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceFile {
    #[serde(default)]
    environment: BTreeMap<String, String>,
    /// systemd credential id → absolute path of the file (`LoadCredential=ID:PATH`).
    #[serde(default)]
    credentials: BTreeMap<String, String>,
}

/// A checked instance set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSet {
    pub instances: BTreeMap<String, Instance>,
}

/// A checked instance, with its rendered drop-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    /// Credential files that must exist before the instance can start.
    pub credential_files: Vec<PathBuf>,
    /// Identifies this configuration (a hash of the drop-in's settings).
    pub config_id: String,
    /// The complete drop-in file.
    pub dropin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("cannot read the instance set {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the instance set {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "the instance set is format version {0}, this hail reads version {FORMAT_VERSION}: \
         deploy a hail that matches nix/manager.nix"
    )]
    Version(u32),
    #[error("execStart {0:?}: expected an absolute path without spaces, quotes or '%'")]
    ExecStart(String),
    #[error(
        "instance name {0:?}: use letters, digits, '.', '_' and '-', starting with a letter or \
         digit, at most 200 characters"
    )]
    Name(String),
    #[error("instance {instance}: {message}")]
    Instance { instance: String, message: String },
}

impl InstanceSet {
    /// Reads and checks the set in `path`.
    pub fn load(path: &Path) -> Result<InstanceSet, SetError> {
        let text = std::fs::read_to_string(path).map_err(|source| SetError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: SetFile = serde_json::from_str(&text).map_err(|source| SetError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        InstanceSet::check(file)
    }

    #[cfg(test)]
    pub fn from_json(text: &str) -> Result<InstanceSet, SetError> {
        let file: SetFile = serde_json::from_str(text).map_err(|source| SetError::Parse {
            path: PathBuf::from("<test>"),
            source,
        })?;
        InstanceSet::check(file)
    }

    fn check(file: SetFile) -> Result<InstanceSet, SetError> {
        if file.version != FORMAT_VERSION {
            return Err(SetError::Version(file.version));
        }
        if let Some(exec) = &file.exec_start
            && !(exec.starts_with('/') && is_plain(exec))
        {
            return Err(SetError::ExecStart(exec.clone()));
        }
        let mut instances = BTreeMap::new();
        for (name, spec) in file.instances {
            if !valid_name(&name) {
                return Err(SetError::Name(name));
            }
            let instance = check_instance(&name, spec, file.exec_start.as_deref())
                .map_err(|message| SetError::Instance {
                    instance: name.clone(),
                    message,
                })?;
            instances.insert(name, instance);
        }
        Ok(InstanceSet { instances })
    }
}

/// The profile of instance `name`.
pub fn profile_of(name: &str) -> PathBuf {
    Path::new(PROFILES_DIR).join(name)
}

/// Instance names are used in unit names and profile paths: keep them to a safe alphabet
/// (no `@`, `/`, `\`, which systemd would need escaped, no leading `-` or `.`).
pub fn valid_name(name: &str) -> bool {
    name.len() <= 200
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Characters that need no quoting in a unit file value (paths of the store and of /etc).
fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._+-=,@:".contains(c))
}

fn check_instance(name: &str, spec: InstanceFile, exec_start: Option<&str>) -> Result<Instance, String> {
    let profile = profile_of(name);
    for (key, value) in &spec.environment {
        let key_ok = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err(format!("environment variable name {key:?} is not valid"));
        }
        if RESERVED_VARS.contains(&key.as_str()) {
            return Err(format!("{key} cannot be set for a managed instance"));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(format!("{key}: the value contains a control character (newline?)"));
        }
    }
    check_with_agent_parser(&profile, &spec.environment)?;

    let mut credential_files = Vec::new();
    for (id, path) in &spec.credentials {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(format!("credential name {id:?} is not valid"));
        }
        if !(path.starts_with('/') && is_plain(path)) {
            return Err(format!(
                "credential {id}: {path:?} must be an absolute path without spaces, quotes or '%'"
            ));
        }
        if path.starts_with("/nix/store/") {
            return Err(format!(
                "credential {id}: {path} is in the Nix store, which every user can read; keep \
                 secrets in a file outside the store (e.g. /etc/hail/{name}.netrc)"
            ));
        }
        credential_files.push(PathBuf::from(path));
    }

    let body = render_settings(&profile, exec_start, &spec);
    let config_id = format!("{:016x}", fnv1a64(body.as_bytes()));
    let dropin = format!(
        "# Configuration of hail@{name}.service, written by `hail apply-instances` from the\n\
         # manager's instance set. Do not edit: the manager's next activation replaces or removes it.\n\
         [Service]\n{body}Environment=\"{CONFIG_VAR}={config_id}\"\n"
    );
    Ok(Instance {
        name: name.to_string(),
        credential_files,
        config_id,
        dropin,
    })
}

/// The `[Service]` settings of a managed instance (without the configuration id).
fn render_settings(profile: &Path, exec_start: Option<&str>, spec: &InstanceFile) -> String {
    let mut out = String::new();
    if let Some(exec) = exec_start {
        // An empty assignment clears the template's command first.
        out.push_str(&format!("ExecStart=\nExecStart={}\n", exec.replace('%', "%%")));
    }
    // The set is the whole configuration: an /etc/hail/NAME.env left from a manual install
    // would otherwise override it (EnvironmentFile= wins over Environment=).
    out.push_str("EnvironmentFile=\n");
    out.push_str(&env_line("HAIL_PROFILE", &profile.to_string_lossy()));
    for (key, value) in &spec.environment {
        out.push_str(&env_line(key, value));
    }
    for (id, path) in &spec.credentials {
        out.push_str(&format!("LoadCredential={id}:{}\n", path.replace('%', "%%")));
    }
    out
}

/// `Environment="KEY=value"` with systemd's quoting: backslash and double quote escaped, `%`
/// doubled so it is not read as a specifier.
fn env_line(key: &str, value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("Environment=\"{key}={escaped}\"\n")
}

/// Checks an instance's `HAIL_*` variables with hail's own command-line parser, so the manager
/// accepts exactly what the instance will accept at start-up. The parser's environment fallback
/// is switched off: only the instance's own values count, not the caller's.
fn check_with_agent_parser(profile: &Path, env: &BTreeMap<String, String>) -> Result<(), String> {
    let command = Cli::command().mut_args(|a| a.env(None::<&'static str>));
    let by_env: BTreeMap<String, String> = Cli::command()
        .get_arguments()
        .filter_map(|a| Some((a.get_env()?.to_str()?.to_string(), a.get_long()?.to_string())))
        .collect();
    let mut argv = vec![
        "hail".to_string(),
        "--profile".to_string(),
        profile.to_string_lossy().into_owned(),
    ];
    for (key, value) in env.iter().filter(|(k, _)| k.starts_with("HAIL_")) {
        let Some(long) = by_env.get(key) else {
            let known: Vec<&str> = by_env.keys().map(String::as_str).collect();
            return Err(format!("unknown hail setting {key} (hail reads {})", known.join(", ")));
        };
        argv.push(format!("--{long}={value}"));
    }
    if !env.contains_key("HAIL_JOB_URI") {
        return Err("no job URI (HAIL_JOB_URI)".to_string());
    }
    let matches = command.try_get_matches_from(&argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        first.trim_start_matches("error: ").to_string()
    })?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    cli.agent.into_config(None).map_err(|e| e.to_string())?;
    Ok(())
}

/// FNV-1a, 64 bits: a stable fingerprint of a drop-in (change detection, not security).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(json: &str) -> Result<InstanceSet, SetError> {
        InstanceSet::from_json(json)
    }

    const WEB: &str = r#"{"version": 1, "execStart": "/nix/store/abc-hail/bin/hail", "instances": {
        "web": {"environment": {"HAIL_JOB_URI": "https://hydra.example.org/job/p/j/web",
                                "HAIL_POLL_PERIOD": "30s", "RUST_LOG": "debug \"x\" 50%"},
                "credentials": {"netrc": "/etc/hail/web.netrc"}}}}"#;

    #[test]
    fn renders_a_complete_dropin() {
        let s = set(WEB).unwrap();
        let web = &s.instances["web"];
        let expected_body = "ExecStart=\n\
            ExecStart=/nix/store/abc-hail/bin/hail\n\
            EnvironmentFile=\n\
            Environment=\"HAIL_PROFILE=/nix/var/nix/profiles/hail/web\"\n\
            Environment=\"HAIL_JOB_URI=https://hydra.example.org/job/p/j/web\"\n\
            Environment=\"HAIL_POLL_PERIOD=30s\"\n\
            Environment=\"RUST_LOG=debug \\\"x\\\" 50%%\"\n\
            LoadCredential=netrc:/etc/hail/web.netrc\n";
        assert!(web.dropin.contains(expected_body), "{}", web.dropin);
        assert!(web.dropin.starts_with("# Configuration of hail@web.service"));
        assert!(web.dropin.ends_with(&format!("Environment=\"HAIL_MANAGER_CONFIG={}\"\n", web.config_id)));
        assert_eq!(web.credential_files, vec![PathBuf::from("/etc/hail/web.netrc")]);
    }

    #[test]
    fn config_id_follows_the_settings_only() {
        let a = set(WEB).unwrap().instances["web"].config_id.clone();
        let again = set(WEB).unwrap().instances["web"].config_id.clone();
        assert_eq!(a, again);
        let changed = set(&WEB.replace("30s", "1m")).unwrap().instances["web"].config_id.clone();
        assert_ne!(a, changed);
        let new_hail = set(&WEB.replace("abc-hail", "def-hail")).unwrap().instances["web"].config_id.clone();
        assert_ne!(a, new_hail);
    }

    #[test]
    fn without_exec_start_the_template_command_stays() {
        let s = set(r#"{"version": 1, "instances": {"a": {"environment": {"HAIL_JOB_URI": "http://h/job/p/j/a"}}}}"#)
            .unwrap();
        assert!(!s.instances["a"].dropin.contains("ExecStart"));
    }

    #[test]
    fn an_empty_set_is_valid() {
        assert!(set(r#"{"version": 1, "instances": {}}"#).unwrap().instances.is_empty());
    }

    fn instance_error(json: &str) -> String {
        match set(json) {
            Err(SetError::Instance { message, .. }) => message,
            other => panic!("expected an instance error, got {other:?}"),
        }
    }

    fn one(env: &str) -> String {
        format!(r#"{{"version": 1, "instances": {{"a": {{"environment": {{{env}}}}}}}}}"#)
    }

    #[test]
    fn settings_are_checked_with_hails_own_rules() {
        assert!(instance_error(&one(r#""HAIL_JOB_URI": "ftp://h/x""#)).contains("--job-uri"));
        assert!(
            instance_error(&one(r#""HAIL_JOB_URI": "http://h/job/a/b/c", "HAIL_POLL_PERIOD": "5x""#))
                .contains("poll-period")
        );
        assert!(
            instance_error(&one(r#""HAIL_JOB_URI": "http://h/job/a/b/c", "HAIL_POLL_PERIOD": "0""#))
                .contains("at least one second")
        );
        assert!(instance_error(&one(r#""HAIL_POLL_PERIOD": "5""#)).contains("no job URI"));
        let typo = instance_error(&one(r#""HAIL_JOB_URI": "http://h/job/a/b/c", "HAIL_POL_PERIOD": "5""#));
        assert!(typo.contains("unknown hail setting HAIL_POL_PERIOD"), "{typo}");
        assert!(typo.contains("HAIL_POLL_PERIOD"), "{typo}");
        // Bare numbers are minutes, as everywhere in hail.
        set(&one(r#""HAIL_JOB_URI": "http://h/job/a/b/c", "HAIL_POLL_PERIOD": "5""#)).unwrap();
    }

    #[test]
    fn reserved_and_malformed_variables_are_refused() {
        for key in ["HAIL_PROFILE", "HAIL_ONESHOT", "HAIL_MANAGER_CONFIG"] {
            let e = instance_error(&one(&format!(r#""HAIL_JOB_URI": "http://h/j", "{key}": "x""#)));
            assert!(e.contains("cannot be set"), "{e}");
        }
        assert!(instance_error(&one(r#""HAIL_JOB_URI": "http://h/j", "A B": "x""#)).contains("not valid"));
        assert!(instance_error(&one(r#""HAIL_JOB_URI": "http://h/j", "A": "x\ny""#)).contains("control"));
    }

    #[test]
    fn credentials_must_stay_out_of_the_store() {
        let e = instance_error(
            r#"{"version": 1, "instances": {"a": {"environment": {"HAIL_JOB_URI": "http://h/j"},
                "credentials": {"netrc": "/nix/store/x-netrc"}}}}"#,
        );
        assert!(e.contains("Nix store"), "{e}");
        let e = instance_error(
            r#"{"version": 1, "instances": {"a": {"environment": {"HAIL_JOB_URI": "http://h/j"},
                "credentials": {"netrc": "etc/netrc"}}}}"#,
        );
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn names_version_and_unknown_fields() {
        for bad in ["", "-a", ".a", "a/b", "a@b", "a b", "a\\x2d"] {
            let json = format!(r#"{{"version": 1, "instances": {{"{}": {{}}}}}}"#, bad.replace('\\', "\\\\"));
            assert!(matches!(set(&json), Err(SetError::Name(_))), "{bad:?}");
        }
        assert!(valid_name("web-2.prod_x"));
        assert!(matches!(set(r#"{"version": 2, "instances": {}}"#), Err(SetError::Version(2))));
        assert!(matches!(set(r#"{"version": 1, "instances": {}, "extra": 1}"#), Err(SetError::Parse { .. })));
        assert!(matches!(
            set(r#"{"version": 1, "execStart": "hail", "instances": {}}"#),
            Err(SetError::ExecStart(_))
        ));
    }
}
