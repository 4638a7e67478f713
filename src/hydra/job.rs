//! The job URI: parsed once, shown without credentials; the names and the jobset's URLs it
//! implies when it has Hydra's `/job/PROJECT/JOBSET/JOB` shape.

use reqwest::Url;

/// A Hydra job, parsed once from `--job-uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    latest: Url,
    display: String,
    /// `None` when the URI lacks the `/job/P/J/JOB` shape: fine for `/latest`, which only
    /// appends to it, but nothing else can be derived from it.
    path: Option<JobPath>,
}

/// What a job URI of Hydra's shape names: `<base>/job/<project>/<jobset>/<job>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobPath {
    /// The Hydra instance: the URI up to `/job/` (with any credentials and prefix, no query).
    base: Url,
    project: String,
    jobset: String,
    job: String,
}

/// The job URI does not have the shape evaluations can be found from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the job URI {0} does not end in /job/PROJECT/JOBSET/JOB (names of letters, digits, '_', \
     '-' and '.'), so its jobset and evaluations cannot be found"
)]
pub struct NotAJobPath(String);

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
        let path = job_path(&latest);
        Ok(Job {
            latest,
            display,
            path,
        })
    }

    fn path(&self) -> Result<&JobPath, NotAJobPath> {
        self.path
            .as_ref()
            .ok_or_else(|| NotAJobPath(self.display.clone()))
    }

    /// The project the job URI names (`/job/PROJECT/…`).
    pub fn project(&self) -> Result<&str, NotAJobPath> {
        Ok(&self.path()?.project)
    }

    /// The jobset the job URI names (`/job/P/JOBSET/…`).
    pub fn jobset(&self) -> Result<&str, NotAJobPath> {
        Ok(&self.path()?.jobset)
    }

    /// The job's own name (`/job/P/J/JOB`), as builds name it in their `job` field.
    pub fn job(&self) -> Result<&str, NotAJobPath> {
        Ok(&self.path()?.job)
    }

    /// `<base>/jobset/<project>/<jobset>/<action>`, e.g. `evals` or `latest-eval`.
    pub fn jobset_url(&self, action: &str) -> Result<Url, NotAJobPath> {
        let p = self.path()?;
        Ok(p.at(&format!("jobset/{}/{}/{action}", p.project, p.jobset)))
    }

    /// `<base>/eval/<id>/<rest>` (`<base>/eval/<id>` when `rest` is empty).
    pub fn eval_url(&self, id: u64, rest: &str) -> Result<Url, NotAJobPath> {
        let p = self.path()?;
        Ok(match rest.trim_start_matches('/') {
            "" => p.at(&format!("eval/{id}")),
            rest => p.at(&format!("eval/{id}/{rest}")),
        })
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

impl JobPath {
    /// `<base>/<rest>`.
    fn at(&self, rest: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}/{rest}",
            self.base.path().trim_end_matches('/')
        ));
        url
    }
}

/// Hydra's names: projects and jobsets are `[A-Za-z_][A-Za-z0-9_-]*` (jobsets may hold '.'), jobs
/// attribute paths like `tests.web.x86_64-linux`. Nothing in them needs percent-encoding, so
/// they are compared as they stand in the URL and in Hydra's JSON.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The names and base in `<base>/job/<project>/<jobset>/<job>/latest`. The `job` segment is the
/// fourth from the end, not merely the last one (a project may itself be called `job`), and
/// Hydra may live under a prefix such as `/hydra`.
fn job_path(latest: &Url) -> Option<JobPath> {
    let segments: Vec<&str> = latest.path_segments()?.collect();
    let [prefix @ .., "job", project, jobset, job, "latest"] = segments.as_slice() else {
        return None;
    };
    if ![project, jobset, job].iter().all(|s| is_name(s)) {
        return None;
    }
    let mut base = latest.clone();
    base.set_query(None);
    base.set_fragment(None);
    base.set_path(&prefix.iter().map(|s| format!("/{s}")).collect::<String>());
    Some(JobPath {
        base,
        project: project.to_string(),
        jobset: jobset.to_string(),
        job: job.to_string(),
    })
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
    fn names_and_urls() {
        let job =
            Job::parse("http://u:pw@h:3000/hydra/job/nixos/release-24.05/tests.web.x86_64-linux/")
                .unwrap();
        assert_eq!(job.project(), Ok("nixos"));
        assert_eq!(job.jobset(), Ok("release-24.05"));
        assert_eq!(job.job(), Ok("tests.web.x86_64-linux"));
        assert_eq!(
            job.jobset_url("latest-eval").unwrap().as_str(),
            "http://u:pw@h:3000/hydra/jobset/nixos/release-24.05/latest-eval"
        );
        assert_eq!(
            job.eval_url(1234, "builds").unwrap().as_str(),
            "http://u:pw@h:3000/hydra/eval/1234/builds"
        );
        assert_eq!(
            job.eval_url(1234, "").unwrap().as_str(),
            "http://u:pw@h:3000/hydra/eval/1234"
        );

        let job = Job::parse("https://h/job/p/j/x").unwrap();
        assert_eq!(
            job.jobset_url("evals").unwrap().as_str(),
            "https://h/jobset/p/j/evals"
        );
        assert_eq!(
            job.eval_url(7, "job/x").unwrap().as_str(),
            "https://h/eval/7/job/x"
        );
        // A project called `job`: the shape is read from the end.
        let job = Job::parse("http://h/job/job/j/x").unwrap();
        assert_eq!((job.project(), job.jobset()), (Ok("job"), Ok("j")));
        let job = Job::parse("http://h/x/job/p/j/job").unwrap();
        assert_eq!(
            job.jobset_url("evals").unwrap().as_str(),
            "http://h/x/jobset/p/j/evals"
        );
    }

    #[test]
    fn other_shapes_are_accepted_but_cannot_gate() {
        for uri in [
            "https://u:s3cret@h/custom/latest-build",
            "https://h/job/p/j",
            "https://h/job/p/j/x/y",
            "https://h/job/p/j%20k/x",
            "https://h/job/p//x",
            "https://h/job/p/j/x?x=1",
        ] {
            let job = Job::parse(uri).unwrap();
            let err = job.jobset().unwrap_err();
            assert!(job.project().is_err() && job.job().is_err(), "{uri}");
            assert!(job.jobset_url("evals").is_err() && job.eval_url(1, "").is_err());
            let shown = err.to_string();
            assert!(shown.contains("/job/PROJECT/JOBSET/JOB"), "{shown}");
            assert!(!shown.contains("s3cret"), "{shown}");
        }
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
