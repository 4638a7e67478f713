//! The HTTP client: redirects followed by hand, bounded bodies (read whole, or streamed to a
//! parser), TLS roots loaded only for https.

use std::io::Read;
use std::time::Duration;

use jiff::SignedDuration;

use reqwest::{Url, header};
use serde::Deserialize;

use super::build::{BuildError, parse_build};
use super::tls::{self, ClientError};
use super::{HydraError, Job, one_line, redact};
use crate::netrc::Credentials;
use crate::types::Build;

/// Bound on a response body: a build is a few KiB; anything this large is not one.
pub const MAX_BODY: usize = 4 << 20;
/// Hydra answers `/latest` with one redirect; a few more are tolerated, loops are not.
pub const MAX_REDIRECTS: usize = 5;

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
    /// How far Hydra's clock runs ahead of this host's (negative: behind), from the `Date:` of
    /// its last answer that had one.
    clock_ahead: std::sync::Mutex<Option<SignedDuration>>,
}

impl HydraClient {
    /// The system's CA certificates are loaded for an https job only: a plain-http job (a Hydra
    /// on a private network) starts faster and works on a host without them.
    pub fn new(
        job: &Job,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let plain = tls::plain_client(timeout)?;
        let client = HydraClient {
            plain,
            tls: std::sync::OnceLock::new(),
            latest: job.latest().clone(),
            credentials,
            timeout,
            clock_ahead: std::sync::Mutex::new(None),
        };
        if client.latest.scheme() == "https" {
            client.tls_client()?;
        }
        Ok(client)
    }

    /// The https client, built on first use.
    fn tls_client(&self) -> Result<&reqwest::Client, ClientError> {
        if let Some(c) = self.tls.get() {
            return Ok(c);
        }
        let client = tls::https_client(self.timeout)?;
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

    /// How far Hydra's clock ran ahead of this host's at its last answer (`Date:`), if it said:
    /// build ages are measured on Hydra's clock, which a jump of this host's clock does not move.
    pub fn clock_ahead(&self) -> Option<SignedDuration> {
        *self.clock_ahead.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes note of Hydra's clock from an answer's `Date:` (whole seconds: Hydra's time is
    /// taken as at most a second behind, never ahead).
    fn note_clock(&self, resp: &reqwest::Response) {
        let now = jiff::Timestamp::now();
        let date = resp
            .headers()
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                jiff::fmt::rfc2822::DateTimeParser::new()
                    .parse_timestamp(v)
                    .ok()
            });
        if let Some(date) = date {
            let ahead = date.duration_since(now);
            *self.clock_ahead.lock().unwrap_or_else(|e| e.into_inner()) = Some(ahead);
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
                expected: "a build",
                reason,
            },
            BuildError::Invalid(e) => e,
        })
    }

    /// GETs `url` as JSON, following redirects by hand so credentials go to the job's origin
    /// only; the body is bounded at [`MAX_BODY`].
    async fn get_json(&self, url: Url) -> Result<(Url, Vec<u8>), HydraError> {
        self.bounded(&url.clone(), async {
            let (url, resp) = self.send(url, Redirects::Follow).await?;
            let resp = self.check_json(&url, resp).await?;
            let body = self.read_body(&url, resp).await?;
            Ok((url, body))
        })
        .await
    }

    /// Bounds a whole exchange (the redirect chain and the body) by the client's timeout; the
    /// client's own timeout covers each request. `url` is the one the exchange started at.
    pub(super) async fn bounded<T>(
        &self,
        url: &Url,
        exchange: impl Future<Output = Result<T, HydraError>>,
    ) -> Result<T, HydraError> {
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(HydraError::Timeout {
                    url: redact(url.as_str()),
                    timeout: self.timeout,
                })
            })
    }

    /// GETs `url` asking for JSON, with credentials only when it is on the job's origin.
    /// Redirects are followed by hand (each hop re-checked for credentials), or handed back as
    /// they are with [`Redirects::Return`]. Returns the URL finally answered and its response,
    /// body unread.
    pub(super) async fn send(
        &self,
        mut url: Url,
        redirects: Redirects,
    ) -> Result<(Url, reqwest::Response), HydraError> {
        let start = url.clone();
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
            self.note_clock(&resp);
            if !resp.status().is_redirection() || redirects == Redirects::Return {
                return Ok((url, resp));
            }
            let location = location(&resp).unwrap_or_default().to_owned();
            url = url
                .join(&location)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| HydraError::BadRedirect {
                    url: redact(url.as_str()),
                    location: one_line(&location),
                })?;
        }
        Err(HydraError::TooManyRedirects {
            url: redact(start.as_str()),
        })
    }

    /// Passes a successful JSON answer on, body unread; turns anything else into its error
    /// (with Hydra's own message when it sent one).
    pub(super) async fn check_json(
        &self,
        url: &Url,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, HydraError> {
        let status = resp.status();
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
        if !status.is_success() {
            let body = self.read_body(url, resp).await?;
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
        Ok(resp)
    }

    /// The whole body, refused beyond [`MAX_BODY`].
    async fn read_body(
        &self,
        url: &Url,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, HydraError> {
        let too_large = || HydraError::TooLarge {
            url: redact(url.as_str()),
            limit: MAX_BODY as u64,
        };
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(url, e))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A successful JSON answer handed, as it arrives, to `parse` on a blocking thread: the
    /// body is never held whole (a chunk or a few at a time), and is refused beyond `limit`
    /// bytes. A `parse` that fails early stops the download; its reason is reported as the
    /// answer not being `expected`.
    pub(super) async fn get_streamed<T: Send + 'static>(
        &self,
        url: Url,
        limit: u64,
        expected: &'static str,
        parse: impl FnOnce(&mut dyn Read) -> Result<T, String> + Send + 'static,
    ) -> Result<T, HydraError> {
        self.bounded(&url.clone(), async {
            let (url, resp) = self.send(url, Redirects::Follow).await?;
            let mut resp = self.check_json(&url, resp).await?;
            let too_large = || HydraError::TooLarge {
                url: redact(url.as_str()),
                limit,
            };
            if resp.content_length().is_some_and(|n| n > limit) {
                return Err(too_large());
            }
            // A few chunks in flight at most: the download waits for the parser.
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let parser = tokio::task::spawn_blocking(move || {
                let mut reader = std::io::BufReader::new(ChunkReader {
                    rx,
                    chunk: None,
                    at: 0,
                });
                parse(&mut reader)
            });
            let mut received = 0u64;
            let mut failed = None;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        received += chunk.len() as u64;
                        if received > limit {
                            failed = Some(too_large());
                            break;
                        }
                        if tx.send(chunk).await.is_err() {
                            break; // the parser gave up; its error says why
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(self.transport_error(&url, e));
                        break;
                    }
                }
            }
            // The parser now sees the end of the body (cut short if the download failed).
            drop(tx);
            let parsed = parser.await.unwrap_or_else(|e| match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => Err(e.to_string()),
            });
            if let Some(e) = failed {
                return Err(e);
            }
            parsed.map_err(|reason| HydraError::Malformed {
                url: redact(url.as_str()),
                expected,
                reason: one_line(&reason),
            })
        })
        .await
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

/// Whether [`HydraClient::send`] follows redirects or hands them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Redirects {
    Follow,
    Return,
}

/// A response's `Location`, if it has a readable one.
pub(super) fn location(resp: &reqwest::Response) -> Option<&str> {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
}

/// A body arriving in chunks over a channel, read on a blocking thread.
struct ChunkReader<B> {
    rx: tokio::sync::mpsc::Receiver<B>,
    chunk: Option<B>,
    at: usize,
}

impl<B: AsRef<[u8]>> Read for ChunkReader<B> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(chunk) = &self.chunk {
                let rest = &chunk.as_ref()[self.at..];
                if !rest.is_empty() {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.at += n;
                    return Ok(n);
                }
            }
            // A closed channel is the end of the body.
            match self.rx.blocking_recv() {
                Some(chunk) => (self.chunk, self.at) = (Some(chunk), 0),
                None => return Ok(0),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
