//! Hydra's HTTP API as hail uses it: the job URI ([`job`]), a client that follows Hydra's
//! redirects with credentials for the job's origin only ([`client`]), the build JSON it
//! answers ([`build`]), and a jobset's evaluations, for gating on a whole one ([`evals`]).

mod build;
mod client;
mod evals;
mod job;
mod tls;

pub use client::{HydraClient, MAX_BODY, MAX_REDIRECTS};
pub use evals::{EvalVerdict, MAX_STREAMED_BODY, Refusal};
pub use job::{Job, NotAJobPath, redact};
pub use tls::ClientError;

use std::time::Duration;

use reqwest::StatusCode;

use crate::store_path::StorePathError;

#[derive(Debug, thiserror::Error)]
pub enum HydraError {
    #[error("cannot reach Hydra at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Hydra did not answer {url} within {}", crate::format::duration(*.timeout))]
    Timeout { url: String, timeout: Duration },
    #[error("Hydra answered {status} for {url}{}", detail(.message))]
    Status {
        url: String,
        status: StatusCode,
        message: Option<String>,
    },
    #[error("Hydra redirected {url} to an invalid location {location:?}")]
    BadRedirect { url: String, location: String },
    #[error(
        "Hydra moved {url} for good to {location:?} (301, as for a renamed jobset): give hail \
         the job URI under its new name"
    )]
    Moved { url: String, location: String },
    #[error("Hydra redirected more than {MAX_REDIRECTS} times, starting at {url}")]
    TooManyRedirects { url: String },
    #[error("Hydra answered {content_type:?} instead of JSON for {url}; is the job URI right?")]
    NotJson { url: String, content_type: String },
    #[error("Hydra's answer for {url} is larger than {limit} bytes; refusing it")]
    TooLarge { url: String, limit: u64 },
    #[error("Hydra's answer for {url} is not {expected}: {reason}")]
    Malformed {
        url: String,
        /// What was expected, e.g. "a build".
        expected: &'static str,
        reason: String,
    },
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
    #[error(transparent)]
    NotAJobPath(#[from] NotAJobPath),
}

fn detail(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// Keeps what Hydra says to one printable line of bounded length (it ends up in STATUS=).
pub(crate) fn one_line(s: &str) -> String {
    crate::systemd::one_line(s).chars().take(200).collect()
}
