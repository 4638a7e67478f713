//! The instance set as data (`instances.json`, written by `nix/manager.nix`), checked, and each
//! instance rendered to the systemd drop-in that configures its `hail@NAME.service`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::check_agent_settings;

/// The only format version this hail reads.
pub const FORMAT_VERSION: u32 = 1;

/// Where instances' profiles live by default (the template unit's `HAIL_PROFILE`). Only a
/// profile here, named after its instance, is deleted when the instance is removed.
pub const PROFILES_DIR: &str = "/nix/var/nix/profiles/hail";

/// Variable in a managed instance's environment naming the configuration it was started with:
/// reading it from the running process tells whether a restart is still owed.
pub const CONFIG_VAR: &str = "HAIL_MANAGER_CONFIG";

/// Variables an instance may not set: a oneshot service would never poll again, and the
/// configuration id is the manager's.
const RESERVED_VARS: &[&str] = &["HAIL_ONESHOT", CONFIG_VAR];

/// The drop-in's line naming the instance's profile (read back when the instance is removed).
const PROFILE_LINE: &str = "# Profile: ";

/// `instances.json` as written by `nix/manager.nix`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFile {
    version: u32,
    instances: BTreeMap<String, InstanceFile>,
}

/// One instance: the output of `nix/instance.nix`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InstanceFile {
    #[serde(default)]
    environment: BTreeMap<String, String>,
    /// systemd credential id → absolute path of the file (`LoadCredential=ID:PATH`).
    #[serde(default)]
    credentials: BTreeMap<String, String>,
    /// The command line (`ExecStart=`): the hail executable and extra arguments; absent keeps
    /// the template's.
    #[serde(default)]
    exec_start: Option<Vec<String>>,
    /// `TimeoutStartSec=` in seconds (it covers the start-up activation).
    #[serde(default)]
    timeout_start_sec: Option<u64>,
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
    /// The profile hail will deploy to, as hail itself resolves it.
    pub profile: PathBuf,
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
         build the set with the nix/manager.nix of the hail that applies it"
    )]
    Version(u32),
    #[error(
        "instance name {0:?}: use letters, digits, '.', '_' and '-', starting with a letter or \
         digit, at most 200 characters"
    )]
    Name(String),
    #[error("instance {instance}: {message}")]
    Instance { instance: String, message: String },
    #[error("instances {0} and {1} both deploy to the profile {2}; give each its own")]
    SharedProfile(String, String, PathBuf),
}

impl InstanceSet {
    /// Reads and checks the set in `path`.
    pub fn load(path: &Path) -> Result<InstanceSet, SetError> {
        let text = std::fs::read_to_string(path).map_err(|source| SetError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        InstanceSet::parse(&text, path)
    }

    /// Checks the set in `text` (read from `path`).
    pub fn parse(text: &str, path: &Path) -> Result<InstanceSet, SetError> {
        let file: SetFile = serde_json::from_str(text).map_err(|source| SetError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        if file.version != FORMAT_VERSION {
            return Err(SetError::Version(file.version));
        }
        let mut instances: BTreeMap<String, Instance> = BTreeMap::new();
        for (name, spec) in file.instances {
            if !valid_name(&name) {
                return Err(SetError::Name(name));
            }
            let instance = check_instance(&name, spec).map_err(|message| SetError::Instance {
                instance: name.clone(),
                message,
            })?;
            if let Some(other) = instances.values().find(|i| i.profile == instance.profile) {
                return Err(SetError::SharedProfile(
                    other.name.clone(),
                    name,
                    instance.profile,
                ));
            }
            instances.insert(name, instance);
        }
        Ok(InstanceSet { instances })
    }
}

/// The profile an instance's drop-in names (`None` for a drop-in without that line).
pub fn profile_in_dropin(dropin: &str) -> Option<PathBuf> {
    dropin
        .lines()
        .find_map(|l| l.strip_prefix(PROFILE_LINE))
        .map(PathBuf::from)
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

fn check_instance(name: &str, spec: InstanceFile) -> Result<Instance, String> {
    for (key, value) in &spec.environment {
        let key_ok = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err(format!("environment variable name {key:?} is not valid"));
        }
        if RESERVED_VARS.contains(&key.as_str()) {
            return Err(format!("{key} cannot be set for a managed instance"));
        }
        if value.contains('\0') {
            return Err(format!("{key}: the value contains a NUL character"));
        }
    }
    let extra_args: &[String] = match &spec.exec_start {
        None => &[],
        Some(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return Err("execStart is empty".to_string());
            };
            if !(program.starts_with('/') && is_plain(program)) {
                return Err(format!("execStart: {program:?} is not an absolute path"));
            }
            if argv.iter().any(|a| a.contains('\0')) {
                return Err("execStart: an argument contains a NUL character".to_string());
            }
            args
        }
    };
    let profile = check_agent_settings_of(name, &spec.environment, extra_args)?;

    let mut credential_files = Vec::new();
    for (id, path) in &spec.credentials {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!("credential name {id:?} is not valid"));
        }
        // systemd takes the rest of the line as the path (`%` doubled below) and ignores one
        // that is not normalized.
        let normalized = path.strip_prefix('/').is_some_and(|rest| {
            rest.split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
        });
        if !normalized || path.chars().any(|c| c.is_control()) {
            return Err(format!(
                "credential {id}: {path:?} must be a normalized absolute path on one line"
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

    let body = render_settings(&spec);
    let config_id = format!(
        "{:016x}",
        crate::hash::fnv1a64(format!("{}\n{body}", profile.display()).as_bytes())
    );
    let dropin = format!(
        "# Configuration of hail@{name}.service, written by `hail apply-instances` from the\n\
         # manager's instance set. Do not edit: the manager's next activation replaces or removes it.\n\
         {PROFILE_LINE}{}\n\
         [Service]\n{body}Environment=\"{CONFIG_VAR}={config_id}\"\n",
        profile.display()
    );
    Ok(Instance {
        name: name.to_string(),
        profile,
        credential_files,
        config_id,
        dropin,
    })
}

/// The `[Service]` settings of a managed instance (without the configuration id).
fn render_settings(spec: &InstanceFile) -> String {
    let mut out = String::new();
    if let Some(argv) = &spec.exec_start {
        // An empty assignment clears the template's command first.
        let words: Vec<String> = argv.iter().map(|a| exec_word(a)).collect();
        out.push_str(&format!("ExecStart=\nExecStart={}\n", words.join(" ")));
    }
    if let Some(secs) = spec.timeout_start_sec {
        out.push_str(&format!("TimeoutStartSec={secs}s\n"));
    }
    // The set is the whole configuration: an /etc/hail/NAME.env left from a manual install
    // would otherwise override it (EnvironmentFile= wins over Environment=).
    out.push_str("EnvironmentFile=\n");
    for (key, value) in &spec.environment {
        out.push_str(&format!(
            "Environment={}\n",
            quoted(&format!("{key}={value}"))
        ));
    }
    for (id, path) in &spec.credentials {
        out.push_str(&format!(
            "LoadCredential={id}:{}\n",
            path.replace('%', "%%")
        ));
    }
    out
}

/// A double-quoted unit-file word: backslash and quote escaped, control characters as C escapes
/// (systemd unquotes them: a multi-line NIX_CONFIG stays one line of the file), `%` doubled so it
/// is not read as a specifier.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `ExecStart=` word: quoted, and `$` doubled so it is not expanded as a variable.
fn exec_word(s: &str) -> String {
    quoted(&s.replace('$', "$$"))
}

/// Checks an instance's settings with hail's own rules, so the manager accepts exactly what
/// the instance will accept at start-up, and returns its profile. Only the instance's own
/// environment counts, not the caller's.
fn check_agent_settings_of(
    name: &str,
    env: &BTreeMap<String, String>,
    extra_args: &[String],
) -> Result<PathBuf, String> {
    // The template's default profile, unless the instance's settings name another, as in the
    // unit.
    let mut env = env.clone();
    env.entry("HAIL_PROFILE".to_string())
        .or_insert_with(|| Path::new(PROFILES_DIR).join(name).display().to_string());
    let config = check_agent_settings(&env, extra_args)?;
    if config.poll_period.is_none() {
        return Err(
            "a managed instance cannot be --oneshot (it would exit after one poll)".to_string(),
        );
    }
    Ok(config.profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(json: &str) -> Result<InstanceSet, SetError> {
        InstanceSet::parse(json, Path::new("instances.json"))
    }

    const WEB: &str = r#"{"version": 1, "instances": {
        "web": {"environment": {"HAIL_JOB_URI": "https://hydra.example.org/job/p/j/web",
                                "HAIL_POLL_PERIOD": "30s", "RUST_LOG": "debug \"x\" 50%"},
                "credentials": {"netrc": "/etc/hail/web.netrc"},
                "execStart": ["/nix/store/abc-hail/bin/hail", "--http-timeout", "2m", "--job-uri", "http://h/a$b"],
                "timeoutStartSec": 660}}}"#;

    #[test]
    fn renders_a_complete_dropin() {
        let s = set(WEB).unwrap();
        let web = &s.instances["web"];
        let expected = "# Profile: /nix/var/nix/profiles/hail/web\n\
            [Service]\n\
            ExecStart=\n\
            ExecStart=\"/nix/store/abc-hail/bin/hail\" \"--http-timeout\" \"2m\" \"--job-uri\" \"http://h/a$$b\"\n\
            TimeoutStartSec=660s\n\
            EnvironmentFile=\n\
            Environment=\"HAIL_JOB_URI=https://hydra.example.org/job/p/j/web\"\n\
            Environment=\"HAIL_POLL_PERIOD=30s\"\n\
            Environment=\"RUST_LOG=debug \\\"x\\\" 50%%\"\n\
            LoadCredential=netrc:/etc/hail/web.netrc\n";
        assert!(web.dropin.contains(expected), "{}", web.dropin);
        assert!(
            web.dropin
                .starts_with("# Configuration of hail@web.service")
        );
        assert!(web.dropin.ends_with(&format!(
            "Environment=\"HAIL_MANAGER_CONFIG={}\"\n",
            web.config_id
        )));
        assert_eq!(
            web.credential_files,
            vec![PathBuf::from("/etc/hail/web.netrc")]
        );
        assert_eq!(web.profile, PathBuf::from("/nix/var/nix/profiles/hail/web"));
        assert_eq!(profile_in_dropin(&web.dropin), Some(web.profile.clone()));
    }

    #[test]
    fn the_profile_is_resolved_as_hail_does() {
        let named = one(r#""HAIL_JOB_URI": "http://h/job/a/b/c", "HAIL_PROFILE": "web""#);
        assert_eq!(
            set(&named).unwrap().instances["a"].profile,
            PathBuf::from("/nix/var/nix/profiles/web")
        );
        let by_arg = r#"{"version": 1, "instances": {"a": {"environment": {"HAIL_JOB_URI": "http://h/j",
            "HAIL_PROFILE": "/srv/env"}, "execStart": ["/bin/hail", "--profile", "/srv/arg"]}}}"#;
        assert_eq!(
            set(by_arg).unwrap().instances["a"].profile,
            PathBuf::from("/srv/arg")
        );
        let shared = r#"{"version": 1, "instances": {
            "a": {"environment": {"HAIL_JOB_URI": "http://h/j", "HAIL_PROFILE": "/srv/p"}},
            "b": {"environment": {"HAIL_JOB_URI": "http://h/j", "HAIL_PROFILE": "/srv/p"}}}}"#;
        assert!(matches!(set(shared), Err(SetError::SharedProfile(..))));
    }

    #[test]
    fn config_id_follows_the_settings_only() {
        let id = |json: &str| set(json).unwrap().instances["web"].config_id.clone();
        let a = id(WEB);
        assert_eq!(a, id(WEB));
        assert_ne!(a, id(&WEB.replace("30s", "1m")));
        assert_ne!(a, id(&WEB.replace("abc-hail", "def-hail")));
        assert_ne!(a, id(&WEB.replace("660", "661")));
    }

    #[test]
    fn without_exec_start_the_template_command_stays() {
        let s = set(&one(r#""HAIL_JOB_URI": "http://h/job/p/j/a""#)).unwrap();
        assert!(!s.instances["a"].dropin.contains("ExecStart"));
    }

    #[test]
    fn an_empty_set_is_valid() {
        assert!(
            set(r#"{"version": 1, "instances": {}}"#)
                .unwrap()
                .instances
                .is_empty()
        );
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

    fn with_args(args: &str) -> String {
        format!(
            r#"{{"version": 1, "instances": {{"a": {{"environment": {{"HAIL_JOB_URI": "http://h/j"}},
               "execStart": ["/bin/hail", {args}]}}}}}}"#
        )
    }

    #[test]
    fn settings_are_checked_with_hails_own_rules() {
        assert!(instance_error(&one(r#""HAIL_JOB_URI": "ftp://h/x""#)).contains("--job-uri"));
        let e = instance_error(&one(
            r#""HAIL_JOB_URI": "http://h/job/a/b/c", "HAIL_POLL_PERIOD": "5x""#,
        ));
        assert!(e.contains("poll-period"), "{e}");
        let e = instance_error(&one(
            r#""HAIL_JOB_URI": "http://h/job/a/b/c", "HAIL_POLL_PERIOD": "0""#,
        ));
        assert!(e.contains("at least one second"), "{e}");
        assert!(instance_error(&one(r#""HAIL_POLL_PERIOD": "5""#)).contains("no job URI"));
        let typo = instance_error(&one(
            r#""HAIL_JOB_URI": "http://h/job/a/b/c", "HAIL_POL_PERIOD": "5""#,
        ));
        assert!(
            typo.contains("unknown hail setting HAIL_POL_PERIOD"),
            "{typo}"
        );
        assert!(typo.contains("HAIL_POLL_PERIOD"), "{typo}");
        assert!(
            instance_error(&one(
                r#""HAIL_JOB_URI": "http://h/j", "HAIL_PROFILE": "../x""#
            ))
            .contains("profile")
        );
        // Bare numbers are minutes, as everywhere in hail.
        set(&one(
            r#""HAIL_JOB_URI": "http://h/job/a/b/c", "HAIL_POLL_PERIOD": "5""#,
        ))
        .unwrap();
    }

    #[test]
    fn extra_arguments_are_checked_too() {
        set(&with_args(r#""--http-timeout", "2m""#)).unwrap();
        assert!(instance_error(&with_args(r#""--http-timeout", "2x""#)).contains("http-timeout"));
        assert!(instance_error(&with_args(r#""--bogus""#)).contains("--bogus"));
        assert!(instance_error(&with_args(r#""--oneshot""#)).contains("oneshot"));
        assert!(instance_error(&with_args(r#""apply-instances", "/x""#)).contains("subcommand"));
        let e = instance_error(
            r#"{"version": 1, "instances": {"a": {"environment": {"HAIL_JOB_URI": "http://h/j"},
            "execStart": ["hail"]}}}"#,
        );
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn reserved_and_malformed_variables_are_refused() {
        for key in ["HAIL_ONESHOT", "HAIL_MANAGER_CONFIG"] {
            let e = instance_error(&one(&format!(
                r#""HAIL_JOB_URI": "http://h/j", "{key}": "x""#
            )));
            assert!(e.contains("cannot be set"), "{e}");
        }
        assert!(
            instance_error(&one(r#""HAIL_JOB_URI": "http://h/j", "A B": "x""#))
                .contains("not valid")
        );
    }

    #[test]
    fn what_the_module_accepts_is_written_escaped() {
        // A multi-line NIX_CONFIG, as the NixOS module writes it: one line of the unit.
        let ok = set(&one(
            r#""HAIL_JOB_URI": "http://h/j", "NIX_CONFIG": "a = 1\nb\t= \"2\" 100%\u0001""#,
        ))
        .unwrap();
        let dropin = &ok.instances["a"].dropin;
        assert!(
            dropin.contains(r#"Environment="NIX_CONFIG=a = 1\nb\t= \"2\" 100%%\u0001""#),
            "{dropin}"
        );
        // A credential path with a space, a quote and a percent sign.
        let ok = set(
            r#"{"version": 1, "instances": {"a": {"environment": {"HAIL_JOB_URI": "http://h/j"},
                "credentials": {"netrc": "/etc/hail/my \"net\" 100%.netrc"}}}}"#,
        )
        .unwrap();
        let dropin = &ok.instances["a"].dropin;
        assert!(
            dropin.contains("\nLoadCredential=netrc:/etc/hail/my \"net\" 100%%.netrc\n"),
            "{dropin}"
        );
        let e = instance_error(&one(r#""HAIL_JOB_URI": "http://h/j", "A": "x\u0000y""#));
        assert!(e.contains("NUL"), "{e}");
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
        // systemd would ignore these.
        for path in [
            "/etc/./netrc",
            "/etc/../netrc",
            "/etc//netrc",
            "/etc/netrc/",
            "/etc/a\nb",
        ] {
            let e = instance_error(&format!(
                r#"{{"version": 1, "instances": {{"a": {{"environment": {{"HAIL_JOB_URI": "http://h/j"}},
                    "credentials": {{"netrc": {}}}}}}}}}"#,
                serde_json::to_string(path).unwrap()
            ));
            assert!(e.contains("normalized absolute path"), "{path}: {e}");
        }
    }

    #[test]
    fn names_version_and_unknown_fields() {
        for bad in ["", "-a", ".a", "a/b", "a@b", "a b", "a\\x2d"] {
            let json = format!(
                r#"{{"version": 1, "instances": {{"{}": {{}}}}}}"#,
                bad.replace('\\', "\\\\")
            );
            assert!(matches!(set(&json), Err(SetError::Name(_))), "{bad:?}");
        }
        assert!(valid_name("web-2.prod_x"));
        assert!(matches!(
            set(r#"{"version": 2, "instances": {}}"#),
            Err(SetError::Version(2))
        ));
        assert!(matches!(
            set(r#"{"version": 1, "instances": {}, "extra": 1}"#),
            Err(SetError::Parse { .. })
        ));
        assert!(matches!(
            set(
                r#"{"version": 1, "instances": {"a": {"environment": {"HAIL_JOB_URI": "http://h/j"}, "jobUri": "x"}}}"#
            ),
            Err(SetError::Parse { .. })
        ));
    }
}
