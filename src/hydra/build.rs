//! Hydra's build JSON, checked: finished, succeeded, with a valid `out` store path.

use std::collections::HashMap;

use serde::Deserialize;

use super::{HydraError, one_line};
use crate::store_path::StorePath;
use crate::types::Build;

pub(super) enum BuildError {
    Malformed(String),
    Invalid(HydraError),
}

/// Hydra's build JSON. Unknown fields are ignored: Hydra adds fields over time (and a list of
/// builds skips their products and metrics without keeping them).
#[derive(Deserialize)]
pub(super) struct RawBuild {
    pub(super) id: u64,
    /// 0/1 in Hydra (an integer, though its OpenAPI file says boolean); both are accepted.
    finished: serde_json::Value,
    buildstatus: Option<i64>,
    #[serde(default)]
    stoptime: Option<i64>,
    #[serde(default)]
    buildoutputs: HashMap<String, RawOutput>,
    /// Whose build it is: needed to find a job's build among an evaluation's.
    #[serde(default)]
    pub(super) project: Option<String>,
    #[serde(default)]
    pub(super) jobset: Option<String>,
    #[serde(default)]
    pub(super) job: Option<String>,
}

/// Where a build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Not finished, or finished without a `buildstatus` yet.
    Unfinished,
    Failed(i64),
    Succeeded,
}

#[derive(Deserialize)]
struct RawOutput {
    path: Option<String>,
}

pub(super) fn parse_build(body: &[u8]) -> Result<Build, BuildError> {
    let raw: RawBuild = serde_json::from_slice(body)
        .map_err(|e| BuildError::Malformed(one_line(&e.to_string())))?;
    raw.check()
}

impl RawBuild {
    /// Finished and succeeded, failed, or not finished yet.
    pub(super) fn outcome(&self) -> Result<Outcome, BuildError> {
        let finished = match &self.finished {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Number(n) => n.as_i64() == Some(1),
            _ => {
                return Err(BuildError::Malformed(format!(
                    "build {}: \"finished\" is neither 0/1 nor a boolean",
                    self.id
                )));
            }
        };
        Ok(match (finished, self.buildstatus) {
            (true, Some(0)) => Outcome::Succeeded,
            (true, Some(status)) => Outcome::Failed(status),
            (true, None) | (false, _) => Outcome::Unfinished,
        })
    }

    /// The build to deploy: finished, succeeded, with a valid `out` store path.
    pub(super) fn check(self) -> Result<Build, BuildError> {
        let id = self.id;
        let invalid = BuildError::Invalid;
        match self.outcome()? {
            Outcome::Succeeded => {}
            Outcome::Failed(status) => return Err(invalid(HydraError::Failed { id, status })),
            Outcome::Unfinished => return Err(invalid(HydraError::Unfinished { id })),
        }
        let out = self
            .buildoutputs
            .get("out")
            .ok_or(invalid(HydraError::NoOutOutput { id }))?;
        let path = out
            .path
            .as_deref()
            .ok_or(invalid(HydraError::NoOutPath { id }))?;
        let path = StorePath::parse(path)
            .map_err(|source| invalid(HydraError::BadStorePath { id, source }))?;
        let finished_at = self
            .stoptime
            .and_then(|t| jiff::Timestamp::from_second(t).ok());
        Ok(Build {
            id,
            path,
            finished_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shapes copied from Hydra's answers (field names exact, values invented).
    const BUILD: &str = r#"{
      "id": 48213, "finished": 1, "timestamp": 1717430410, "starttime": 1717430522,
      "stoptime": 1717430587, "project": "foo", "jobset": "staging", "job": "foo",
      "nixname": "foo-profile", "system": "x86_64-linux", "priority": 100, "buildstatus": 0,
      "releasename": null, "drvpath": "/nix/store/6cp643dzvlxxpkgbg5kzmwj47sam9zs2-foo-profile.drv",
      "jobsetevals": [3122, 3121],
      "buildoutputs": { "out": { "path": "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile" } },
      "buildproducts": { "1": { "type": "nix-build", "subtype": "", "name": "foo-profile",
        "filesize": null, "sha256hash": null,
        "path": "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile", "defaultpath": "" } },
      "buildmetrics": {} }"#;

    const QUEUED: &str = r#"{
      "id": 48214, "finished": 0, "timestamp": 1717431000, "starttime": null, "stoptime": null,
      "project": "foo", "jobset": "staging", "job": "foo", "nixname": "foo-profile",
      "system": "x86_64-linux", "priority": 100, "buildstatus": null, "releasename": null,
      "drvpath": "/nix/store/1dwqq2jd1m2q0m5ib4pm0ix7wnq3bbm8-foo-profile.drv", "jobsetevals": [3123],
      "buildoutputs": { "out": { "path": "/nix/store/8w1kfj0bqdwy3a0ysqr03yx58hjx8r6q-foo-profile" } },
      "buildproducts": {}, "buildmetrics": {} }"#;

    fn parse(s: &str) -> Result<Build, String> {
        parse_build(s.as_bytes()).map_err(|e| match e {
            BuildError::Malformed(r) => format!("malformed: {r}"),
            BuildError::Invalid(e) => e.to_string(),
        })
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(BUILD).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn a_successful_build() {
        let b = parse(BUILD).unwrap();
        assert_eq!(b.id, 48213);
        assert_eq!(
            b.path.as_str(),
            "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-foo-profile"
        );
        assert!(parse(&with("finished", "true")).is_ok());
        assert!(parse(&with("extra_new_field", "[1,2]")).is_ok());
    }

    #[test]
    fn refused_builds_say_why() {
        assert_eq!(parse(QUEUED).unwrap_err(), "build 48214 has not finished");
        assert!(
            parse(&with("buildstatus", "1"))
                .unwrap_err()
                .contains("buildstatus 1")
        );
        assert!(
            parse(&with("buildstatus", "null"))
                .unwrap_err()
                .contains("not finished")
        );
        assert!(
            parse(&with("finished", "\"yes\""))
                .unwrap_err()
                .starts_with("malformed")
        );
        let no_out = with(
            "buildoutputs",
            r#"{"bin": {"path": "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-x"}}"#,
        );
        assert!(parse(&no_out).unwrap_err().contains("no \"out\" output"));
        let null_path = with("buildoutputs", r#"{"out": {"path": null}}"#);
        assert!(parse(&null_path).unwrap_err().contains("no store path"));
        let hostile = with("buildoutputs", r#"{"out": {"path": "/etc/passwd"}}"#);
        assert!(parse(&hostile).unwrap_err().contains("invalid store path"));
    }

    #[test]
    fn malformed_answers() {
        for body in [
            "",
            "<html></html>",
            "[]",
            "{\"id\": \"x\"}",
            "{\"error\": \"nope\"}",
            "null",
        ] {
            assert!(
                parse(body).unwrap_err().starts_with("malformed"),
                "{body:?}"
            );
        }
    }
}
