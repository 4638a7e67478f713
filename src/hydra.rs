//! Hydra's HTTP API as hail uses it: the job URI, and the latest successful build of a job.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{StatusCode, Url, header};
use serde::Deserialize;

use crate::netrc::Credentials;
use crate::store_path::{StorePath, StorePathError};
use crate::types::Build;

/// Bound on a response body: a build is a few KiB; anything this large is not one.
pub const MAX_BODY: usize = 4 << 20;
/// Hydra answers `/latest` with one redirect; a few more are tolerated, loops are not.
const MAX_REDIRECTS: usize = 5;

/// The HTTP client could not be built: in practice, the CA certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot set up HTTPS: the system's CA certificates could not be loaded ({0}); install them \
     (e.g. the ca-certificates package) or point SSL_CERT_FILE at a bundle"
)]
pub struct ClientError(String);

/// Redirects are followed by hand (credentials go to the job's origin only); every request and
/// its connection are bounded.
fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .timeout(timeout)
        .user_agent(concat!("hail/", env!("CARGO_PKG_VERSION")))
}

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

/// A Hydra job, parsed once from `--job-uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    latest: Url,
    display: String,
}

impl Job {
    /// An `http://` or `https://` job URL; `Err` holds the URI as messages may show it.
    pub fn parse(job_uri: &str) -> Result<Job, String> {
        let latest = (job_uri.starts_with("http://") || job_uri.starts_with("https://"))
            .then_some(job_uri)
            .filter(|u| !u.contains(char::is_whitespace))
            .and_then(|u| latest_url(u).ok())
            .ok_or_else(|| redact(job_uri))?;
        let display = redact(latest.as_str())
            .trim_end_matches("/latest")
            .to_owned();
        Ok(Job { latest, display })
    }

    /// `<job-uri>/latest`, which Hydra redirects to the latest successful build.
    pub fn latest(&self) -> &Url {
        &self.latest
    }

    /// The job URI as logs show it: normalised, without any `user:password@`.
    pub fn display(&self) -> &str {
        &self.display
    }
}

/// `<job-uri>/latest`, without a doubled `/` when the job URI ends in one.
fn latest_url(job_uri: &str) -> Result<Url, url::ParseError> {
    Url::parse(&format!("{}/latest", job_uri.trim_end_matches('/')))
}

/// A URL for messages and logs: whatever stands between `://` and an `@` (a login and
/// password) is removed, and a URL longer than 300 characters (a hostile redirect) is cut
/// short, as everything that reaches `STATUS=` is.
pub fn redact(url: &str) -> String {
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    if shown.chars().count() > 300 {
        shown.chars().take(300).chain("…".chars()).collect()
    } else {
        shown
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
    /// Speaks plain http only, with no CA certificates loaded: all a plain-http job needs.
    plain: reqwest::Client,
    /// Speaks https: built at start for an https job, else when a redirect first leads there.
    tls: std::sync::OnceLock<reqwest::Client>,
    latest: Url,
    credentials: Option<Credentials>,
    timeout: Duration,
}

/// Where distributions keep their CA bundle (Debian and NixOS, Fedora, openSUSE, Alpine and
/// others): one file to read instead of a directory of certificates.
const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

impl HydraClient {
    /// The system's CA certificates are loaded for an https job only: a plain-http job (a Hydra
    /// on a private network) starts faster and works on a host without them.
    pub fn new(
        job: &Job,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let plain = client_builder(timeout)
            .tls_certs_only([])
            .build()
            .map_err(|e| ClientError(cause(&e)))?;
        let client = HydraClient {
            plain,
            tls: std::sync::OnceLock::new(),
            latest: job.latest().clone(),
            credentials,
            timeout,
        };
        if client.latest.scheme() == "https" {
            client.tls_client()?;
        }
        Ok(client)
    }

    /// The https client, built on first use: roots from `SSL_CERT_FILE`, else (unless
    /// `SSL_CERT_DIR` asks for a directory) from the distribution's bundle file, else as the
    /// platform finds them.
    fn tls_client(&self) -> Result<&reqwest::Client, ClientError> {
        if let Some(c) = self.tls.get() {
            return Ok(c);
        }
        let bundle = match std::env::var_os("SSL_CERT_FILE") {
            Some(file) => Some(std::path::PathBuf::from(file)),
            None if std::env::var_os("SSL_CERT_DIR").is_some() => None,
            None => CA_BUNDLES
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.is_file()),
        };
        let builder = client_builder(self.timeout);
        let builder = match bundle {
            Some(file) => {
                let pem = std::fs::read(&file)
                    .map_err(|e| ClientError(format!("{}: {e}", file.display())))?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| ClientError(format!("{}: {}", file.display(), cause(&e))))?;
                if roots.is_empty() {
                    return Err(ClientError(format!(
                        "{} holds no certificates",
                        file.display()
                    )));
                }
                builder.tls_certs_only(roots)
            }
            None => builder,
        };
        let client = builder.build().map_err(|e| ClientError(cause(&e)))?;
        Ok(self.tls.get_or_init(|| client))
    }

    /// The client for `url`: https needs the one with CA certificates.
    fn client_for(&self, url: &Url) -> Result<&reqwest::Client, HydraError> {
        if url.scheme() == "https" {
            self.tls_client().map_err(|e| HydraError::Unreachable {
                url: redact(url.as_str()),
                reason: e.to_string(),
            })
        } else {
            Ok(&self.plain)
        }
    }

    pub fn latest_url(&self) -> &Url {
        &self.latest
    }

    /// The job's latest successful build, checked: finished, succeeded, with a valid `out` path.
    pub async fn latest(&self) -> Result<Build, HydraError> {
        let (url, body) = self.get_json(self.latest.clone()).await?;
        parse_build(&body).map_err(|e| match e {
            BuildError::Malformed(reason) => HydraError::Malformed {
                url: redact(url.as_str()),
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
                    .client_for(&url)?
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
                            url: redact(url.as_str()),
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
                        url: redact(url.as_str()),
                        status,
                        message,
                    });
                }
                if !is_json {
                    return Err(HydraError::NotJson {
                        url: redact(url.as_str()),
                        content_type: one_line(&content_type),
                    });
                }
                return Ok((url, body));
            }
            Err(HydraError::TooManyRedirects {
                url: redact(self.latest.as_str()),
            })
        };
        // The client's own timeout covers each request; this bounds the whole redirect chain.
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(HydraError::Timeout {
                    url: redact(self.latest.as_str()),
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
            return Err(HydraError::TooLarge {
                url: redact(url.as_str()),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(url, e))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HydraError::TooLarge {
                    url: redact(url.as_str()),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, url: &Url, e: reqwest::Error) -> HydraError {
        if e.is_timeout() {
            return HydraError::Timeout {
                url: redact(url.as_str()),
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
            url: redact(url.as_str()),
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
        assert_eq!(redact(secret.as_str()), "https://hydra.example/job/a");
        let long = Url::parse(&format!("https://h/{}", "x".repeat(5000))).unwrap();
        assert_eq!(redact(long.as_str()).chars().count(), 301);
        assert_eq!(redact("ftp://u:s3cret@h/x@y"), "ftp://h/x@y");
        assert_eq!(redact("https://h/job/a"), "https://h/job/a");
        assert_eq!(redact("no scheme"), "no scheme");
    }

    #[test]
    fn job_uris() {
        let job = Job::parse("https://u:s3cret@hydra.example/job/p/j/x/").unwrap();
        assert_eq!(
            job.latest().as_str(),
            "https://u:s3cret@hydra.example/job/p/j/x/latest"
        );
        assert_eq!(job.display(), "https://hydra.example/job/p/j/x");
        for refused in [
            "ftp://h/x",
            "hydra.example/job/p/j/x",
            "http://h/job/a b",
            "",
        ] {
            assert!(Job::parse(refused).is_err(), "{refused}");
        }
        let err = Job::parse("ftp://u:s3cret@h/x").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
