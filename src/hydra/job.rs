//! The job URI: parsed once, shown without credentials.

use reqwest::Url;

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

#[cfg(test)]
mod tests {
    use super::*;

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
    #[test]
    fn redaction() {
        let secret = Url::parse("https://u:s3cret@hydra.example/job/a").unwrap();
        assert_eq!(redact(secret.as_str()), "https://hydra.example/job/a");
        let long = Url::parse(&format!("https://h/{}", "x".repeat(5000))).unwrap();
        assert_eq!(redact(long.as_str()).chars().count(), 301);
        assert_eq!(redact("ftp://u:s3cret@h/x@y"), "ftp://h/x@y");
        assert_eq!(redact("https://h/job/a"), "https://h/job/a");
        assert_eq!(redact("no scheme"), "no scheme");
    }
}
