//! Hydra's HTTP API as hail uses it: the latest successful build of a job.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{StatusCode, Url, header};
use serde::Deserialize;

use crate::netrc::Credentials;
use crate::store_path::{StorePath, StorePathError};

/// Bound on a response body: a build is a few KiB; anything this large is not one.
pub const MAX_BODY: usize = 4 << 20;
/// Hydra answers `/latest` with one redirect; a few more are tolerated, loops are not.
const MAX_REDIRECTS: usize = 5;

/// The part of a build hail acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub id: u64,
    pub path: StorePath,
}

/// The HTTP client could not be built: in practice, the CA certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot set up HTTPS: the system's CA certificates could not be loaded ({0}); install them \
     (e.g. the ca-certificates package) or point SSL_CERT_FILE at a bundle"
)]
pub struct ClientError(String);

/// The innermost cause of an error (reqwest's own message is generic).
fn cause(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

#[derive(Debug, thiserror::Error)]
pub enum HydraError {
    #[error("cannot reach Hydra at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Hydra did not answer {url} within {0:?}", .timeout)]
    Timeout { url: String, timeout: Duration },
    #[error("Hydra answered {status} for {url}{}", detail(.message))]
    Status {
        url: String,
        status: StatusCode,
        message: Option<String>,
    },
    #[error("Hydra redirected {url} to an invalid location {location:?}")]
    BadRedirect { url: String, location: String },
    #[error("Hydra redirected more than {MAX_REDIRECTS} times, starting at {url}")]
    TooManyRedirects { url: String },
    #[error("Hydra answered {content_type:?} instead of JSON for {url}; is the job URI right?")]
    NotJson { url: String, content_type: String },
    #[error("Hydra's answer for {url} is larger than {MAX_BODY} bytes; refusing it")]
    TooLarge { url: String },
    #[error("Hydra's answer for {url} is not a build: {reason}")]
    Malformed { url: String, reason: String },
    #[error("build {id} has not finished")]
    Unfinished { id: u64 },
    #[error("build {id} did not succeed (buildstatus {status})")]
    Failed { id: u64, status: i64 },
    #[error("build {id} has no \"out\" output")]
    NoOutOutput { id: u64 },
    #[error("build {id}'s \"out\" output has no store path (not built yet?)")]
    NoOutPath { id: u64 },
    #[error("build {id} names an invalid store path: {source}")]
    BadStorePath { id: u64, source: StorePathError },
}

fn detail(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// `<job-uri>/latest`, without a doubled `/` when the job URI ends in one.
pub fn latest_url(job_uri: &str) -> Result<Url, url::ParseError> {
    Url::parse(&format!("{}/latest", job_uri.trim_end_matches('/')))
}

/// The job URI as logs show it: normalised, without any `user:password@`.
pub fn job_display(job_uri: &str) -> Option<String> {
    let latest = latest_url(job_uri).ok()?;
    Some(redact(&latest).trim_end_matches("/latest").to_owned())
}

/// A URL for messages and logs: any `user:password@` is removed, and a URL longer than 300
/// characters (a hostile redirect) is cut short, as everything that reaches `STATUS=` is.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let s = u.to_string();
    if s.chars().count() > 300 {
        s.chars().take(300).chain("…".chars()).collect()
    } else {
        s
    }
}

/// Whether credentials meant for `origin` may be sent to `url`: same scheme, host and port.
fn same_origin(origin: &Url, url: &Url) -> bool {
    origin.scheme() == url.scheme()
        && origin.host_str() == url.host_str()
        && origin.port_or_known_default() == url.port_or_known_default()
}

/// A client for one job, built once (TLS roots are loaded once, not per poll).
pub struct HydraClient {
    http: reqwest::Client,
    latest: Url,
    credentials: Option<Credentials>,
    timeout: Duration,
}

impl HydraClient {
    /// The system's CA certificates are needed for https only: a plain-http job (a Hydra on a
    /// private network) works on a host without them.
    pub fn new(
        latest: Url,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(timeout.min(Duration::from_secs(30)))
                .timeout(timeout)
                .user_agent(concat!("hail/", env!("CARGO_PKG_VERSION")))
        };
        let http = match builder().build() {
            Ok(c) => c,
            Err(_) if latest.scheme() == "http" => builder()
                .tls_certs_only([])
                .build()
                .map_err(|e| ClientError(cause(&e)))?,
            Err(e) => return Err(ClientError(cause(&e))),
        };
        Ok(HydraClient {
            http,
            latest,
            credentials,
            timeout,
        })
    }

    pub fn latest_url(&self) -> &Url {
        &self.latest
    }

    /// The job's latest successful build, checked: finished, succeeded, with a valid `out` path.
    pub async fn latest(&self) -> Result<Build, HydraError> {
        let (url, body) = self.get_json(self.latest.clone()).await?;
        parse_build(&body).map_err(|e| match e {
            BuildError::Malformed(reason) => HydraError::Malformed {
                url: redact(&url),
                reason,
            },
            BuildError::Invalid(e) => e,
        })
    }

    /// GETs `url` as JSON, following redirects by hand so credentials go to the job's origin only.
    async fn get_json(&self, mut url: Url) -> Result<(Url, Vec<u8>), HydraError> {
        let fut = async {
            for _ in 0..=MAX_REDIRECTS {
                let mut req = self
                    .http
                    .get(url.clone())
                    .header(header::ACCEPT, "application/json");
                if let Some(c) = self
                    .credentials
                    .as_ref()
                    .filter(|_| same_origin(&self.latest, &url))
                {
                    req = req.basic_auth(&c.login, Some(&c.password));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| self.transport_error(&url, e))?;
                let status = resp.status();
                if status.is_redirection() {
                    let location = resp
                        .headers()
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    url = url
                        .join(&location)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"))
                        .ok_or_else(|| HydraError::BadRedirect {
                            url: redact(&url),
                            location: one_line(&location),
                        })?;
                    continue;
                }
                let content_type = resp
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                // Media types are case-insensitive; parameters (`; charset=…`) do not matter.
                let is_json = content_type
                    .split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
                let body = self.read_body(&url, resp).await?;
                if !status.is_success() {
                    let message = is_json.then(|| error_message(&body)).flatten();
                    return Err(HydraError::Status {
                        url: redact(&url),
                        status,
                        message,
                    });
                }
                if !is_json {
                    return Err(HydraError::NotJson {
                        url: redact(&url),
                        content_type: one_line(&content_type),
                    });
                }
                return Ok((url, body));
            }
            Err(HydraError::TooManyRedirects {
                url: redact(&self.latest),
            })
        };
        // The client's own timeout covers each request; this bounds the whole redirect chain.
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(HydraError::Timeout {
                    url: redact(&self.latest),
                    timeout: self.timeout,
                })
            })
    }

    async fn read_body(
        &self,
        url: &Url,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, HydraError> {
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(HydraError::TooLarge { url: redact(url) });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(url, e))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HydraError::TooLarge { url: redact(url) });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, url: &Url, e: reqwest::Error) -> HydraError {
        if e.is_timeout() {
            return HydraError::Timeout {
                url: redact(url),
                timeout: self.timeout,
            };
        }
        // reqwest's Display names the URL (with any userinfo); describe the cause chain instead.
        let mut reason = String::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        if reason.is_empty() {
            reason = if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            }
            .into();
        }
        HydraError::Unreachable {
            url: redact(url),
            reason,
        }
    }
}

/// Hydra's JSON error body: `{"error": "…"}`.
fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let e: ErrorBody = serde_json::from_slice(body).ok()?;
    Some(one_line(&e.error))
}

/// Keeps what Hydra says to one printable line of bounded length (it ends up in STATUS=).
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(200).collect()
}

enum BuildError {
    Malformed(String),
    Invalid(HydraError),
}

/// Hydra's build JSON. Unknown fields are ignored: Hydra adds fields over time.
#[derive(Deserialize)]
struct RawBuild {
    id: u64,
    /// 0/1 in Hydra (an integer, though its OpenAPI file says boolean); both are accepted.
    finished: serde_json::Value,
    buildstatus: Option<i64>,
    #[serde(default)]
    buildoutputs: HashMap<String, RawOutput>,
}

#[derive(Deserialize)]
struct RawOutput {
    path: Option<String>,
}

fn parse_build(body: &[u8]) -> Result<Build, BuildError> {
    let raw: RawBuild = serde_json::from_slice(body)
        .map_err(|e| BuildError::Malformed(one_line(&e.to_string())))?;
    let id = raw.id;
    let invalid = BuildError::Invalid;
    let finished = match raw.finished {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::Number(n) => n.as_i64() == Some(1),
        _ => {
            return Err(BuildError::Malformed(
                "\"finished\" is neither 0/1 nor a boolean".into(),
            ));
        }
    };
    if !finished {
        return Err(invalid(HydraError::Unfinished { id }));
    }
    match raw.buildstatus {
        Some(0) => {}
        Some(status) => return Err(invalid(HydraError::Failed { id, status })),
        None => return Err(invalid(HydraError::Unfinished { id })),
    }
    let out = raw
        .buildoutputs
        .get("out")
        .ok_or(invalid(HydraError::NoOutOutput { id }))?;
    let path = out
        .path
        .as_deref()
        .ok_or(invalid(HydraError::NoOutPath { id }))?;
    let path = StorePath::parse(path)
        .map_err(|source| invalid(HydraError::BadStorePath { id, source }))?;
    Ok(Build { id, path })
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

    #[test]
    fn latest_url_joins_without_double_slash() {
        for uri in [
            "https://h/job/p/j/x",
            "https://h/job/p/j/x/",
            "https://h/job/p/j/x//",
        ] {
            assert_eq!(
                latest_url(uri).unwrap().as_str(),
                "https://h/job/p/j/x/latest"
            );
        }
        assert_eq!(
            latest_url("http://h:3000/hydra/job/p/j/x")
                .unwrap()
                .as_str(),
            "http://h:3000/hydra/job/p/j/x/latest"
        );
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(br#"{"error": "There is no successful build to redirect to."}"#)
                .as_deref(),
            Some("There is no successful build to redirect to.")
        );
        assert_eq!(error_message(b"<html>"), None);
        assert_eq!(
            error_message(b"{\"error\": \"a\\nb\"}").as_deref(),
            Some("a b")
        );
    }

    #[test]
    fn origins_and_redaction() {
        let job = Url::parse("https://hydra.example/job/a/b/c/latest").unwrap();
        let ok = Url::parse("https://hydra.example/build/1").unwrap();
        assert!(same_origin(&job, &ok));
        for other in [
            "http://hydra.example/build/1",
            "https://evil.example/build/1",
            "https://hydra.example:8443/build/1",
            "https://hydra.example.evil/build/1",
        ] {
            assert!(!same_origin(&job, &Url::parse(other).unwrap()), "{other}");
        }
        let secret = Url::parse("https://u:s3cret@hydra.example/job/a").unwrap();
        assert_eq!(redact(&secret), "https://hydra.example/job/a");
        let long = Url::parse(&format!("https://h/{}", "x".repeat(5000))).unwrap();
        assert_eq!(redact(&long).chars().count(), 301);
    }
}
