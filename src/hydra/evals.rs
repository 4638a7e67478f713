//! A jobset's evaluations, for gating a deployment on a whole evaluation: which evaluations
//! there are ([`HydraClient::recent_evals`]), the newest one whose builds all finished
//! ([`HydraClient::latest_finished_eval`]), and how one of them fared
//! ([`HydraClient::eval_verdict`]).
//!
//! `/eval/<id>/builds` is every build of an evaluation in full: about 100 MB for a nixpkgs one.
//! It is streamed through a parser that keeps two counters and one build, never the body; so
//! are the pages of `/jobset/…/evals`, whose evaluations each list all their build ids.

use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};

use super::build::{BuildError, Outcome, RawBuild};
use super::client::{Redirects, location};
use super::{HydraClient, HydraError, Job, one_line, redact};
use crate::types::Build;

/// Bound on one streamed answer (`/eval/<id>/builds`, a page of `/jobset/…/evals`): a nixpkgs
/// evaluation's builds are about 100 MB; five times that is not an evaluation any more.
pub const MAX_STREAMED_BODY: u64 = 512 << 20;

/// What `/jobset/P/J/latest-eval` answers when no evaluation has finished all its builds.
const NO_EVALUATION: &str = "No evaluation found.";

/// How an evaluation fared, from its builds, and this job's build in it.
///
/// A build counts as unfinished until Hydra says `finished` with a `buildstatus`; as failed when
/// finished with a `buildstatus` other than 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalVerdict {
    pub eval: u64,
    /// The job the verdict was asked for (its name, as in [`Job::job`]).
    pub job: String,
    /// Builds in the evaluation.
    pub total: u64,
    pub failed: u64,
    pub unfinished: u64,
    /// This job's build in the evaluation, checked as `/latest`'s is: finished, succeeded, with
    /// a valid `out` store path. `None` when the evaluation has no build of the job, or has one
    /// that is not deployable (then `job_build_refused` says why).
    pub job_build: Option<Build>,
    /// Why the job's build in this evaluation cannot be deployed, when it has one, e.g.
    /// `build 48213 has no "out" output`.
    pub job_build_refused: Option<String>,
}

impl EvalVerdict {
    /// The build to deploy when the evaluation passes the gate: every one of its builds
    /// finished and succeeded, and the job's build is deployable.
    pub fn passed(&self) -> Option<&Build> {
        self.job_build
            .as_ref()
            .filter(|_| self.failed == 0 && self.unfinished == 0)
    }

    /// Whether the verdict can no longer change by waiting: no build is still unfinished. (Hydra
    /// can still restart failed builds, which makes them unfinished again.)
    pub fn is_final(&self) -> bool {
        self.unfinished == 0
    }

    /// Why the evaluation does not pass the gate; `None` when it does.
    pub fn refusal(&self) -> Option<Refusal> {
        let eval = self.eval;
        let refusal = if self.failed > 0 {
            Refusal::Failed {
                eval,
                failed: self.failed,
                unfinished: self.unfinished,
                total: self.total,
            }
        } else if self.unfinished > 0 {
            Refusal::Unfinished {
                eval,
                unfinished: self.unfinished,
                total: self.total,
            }
        } else if self.job_build.is_some() {
            return None;
        } else if let Some(reason) = &self.job_build_refused {
            Refusal::JobBuildRefused {
                eval,
                reason: reason.clone(),
            }
        } else {
            Refusal::NoJobBuild {
                eval,
                job: self.job.clone(),
            }
        };
        Some(refusal)
    }
}

/// Why an evaluation does not pass the gate; its `Display` is the reason an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Some builds failed (and perhaps others are still unfinished).
    Failed {
        eval: u64,
        failed: u64,
        unfinished: u64,
        total: u64,
    },
    /// None failed so far, but some have not finished.
    Unfinished {
        eval: u64,
        unfinished: u64,
        total: u64,
    },
    /// Every build succeeded, but none is of this job (it may have failed to evaluate).
    NoJobBuild { eval: u64, job: String },
    /// Every build succeeded, but the job's cannot be deployed.
    JobBuildRefused { eval: u64, reason: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: &u64| if *n == 1 { "build" } else { "builds" };
        match self {
            Refusal::Failed {
                eval,
                failed,
                unfinished,
                total,
            } => {
                write!(
                    f,
                    "evaluation {eval}: {failed} of {total} {} failed",
                    plural(total)
                )?;
                if *unfinished > 0 {
                    write!(f, ", {unfinished} unfinished")?;
                }
                Ok(())
            }
            Refusal::Unfinished {
                eval,
                unfinished,
                total,
            } => write!(
                f,
                "evaluation {eval}: {unfinished} of {total} {} unfinished",
                plural(total)
            ),
            Refusal::NoJobBuild { eval, job } => {
                write!(f, "evaluation {eval} has no build of job {job}")
            }
            Refusal::JobBuildRefused { eval, reason } => write!(f, "evaluation {eval}: {reason}"),
        }
    }
}

impl HydraClient {
    /// The newest evaluation of the job's jobset that has no unfinished builds (finished, not
    /// necessarily successful), from `/jobset/P/J/latest-eval`: one small request whose 302
    /// names the evaluation. The redirect is read, not followed. `None`: no such evaluation.
    pub async fn latest_finished_eval(&self, job: &Job) -> Result<Option<u64>, HydraError> {
        let url = job.jobset_url("latest-eval")?;
        self.bounded(&url.clone(), async {
            let (url, resp) = self.send(url, Redirects::Return).await?;
            if resp.status() == reqwest::StatusCode::MOVED_PERMANENTLY {
                // A renamed jobset. Its builds now carry the new name, so the job's build could
                // not be told from the others under the old one: the operator is told instead.
                return Err(HydraError::Moved {
                    url: redact(url.as_str()),
                    location: one_line(location(&resp).unwrap_or_default()),
                });
            }
            if resp.status().is_redirection() {
                let target = location(&resp).unwrap_or_default();
                return eval_id_in(&url, target)
                    .map(Some)
                    .ok_or_else(|| HydraError::BadRedirect {
                        url: redact(url.as_str()),
                        location: one_line(target),
                    });
            }
            match self.check_json(&url, resp).await {
                Err(HydraError::Status {
                    status: reqwest::StatusCode::NOT_FOUND,
                    message: Some(m),
                    ..
                }) if m == NO_EVALUATION => Ok(None),
                Err(e) => Err(e),
                Ok(resp) => Err(HydraError::Malformed {
                    url: redact(url.as_str()),
                    expected: "a redirect to an evaluation",
                    reason: format!("status {}", resp.status()),
                }),
            }
        })
        .await
    }

    /// The ids of the newest `depth` evaluations of the job's jobset (those that produced new
    /// builds, as Hydra lists them), newest first: `/jobset/P/J/evals`, then `?page=2` and on
    /// only as far as needed.
    pub async fn recent_evals(&self, job: &Job, depth: usize) -> Result<Vec<u64>, HydraError> {
        let first = job.jobset_url("evals")?;
        let mut ids: Vec<u64> = Vec::new();
        let mut page = 1u64;
        while ids.len() < depth {
            let mut url = first.clone();
            if page > 1 {
                url.set_query(Some(&format!("page={page}")));
            }
            let found = self
                .get_streamed(url, MAX_STREAMED_BODY, "a page of evaluations", |r| {
                    parse_evals_page(r)
                })
                .await?;
            let before = ids.len();
            // A new evaluation between two pages shifts them: what was last on one page is
            // first on the next. Only older evaluations are new here.
            for id in found.evals {
                if ids.len() < depth && ids.last().is_none_or(|last| id.id < *last) {
                    ids.push(id.id);
                }
            }
            // A page that brought nothing ends it too, so this stops however Hydra pages.
            if found.next.is_none() || ids.len() == before {
                break;
            }
            page += 1;
        }
        Ok(ids)
    }

    /// How evaluation `eval_id` fared, and the job's build in it, from `/eval/<id>/builds`,
    /// streamed and bounded at [`MAX_STREAMED_BODY`]. An invalid job build is part of the
    /// verdict ([`EvalVerdict::job_build_refused`]), not an error: it is a fact about the
    /// evaluation, not a failure to learn it.
    pub async fn eval_verdict(&self, job: &Job, eval_id: u64) -> Result<EvalVerdict, HydraError> {
        let url = job.eval_url(eval_id, "builds")?;
        let wanted = Wanted {
            project: job.project()?.to_owned(),
            jobset: job.jobset()?.to_owned(),
            job: job.job()?.to_owned(),
        };
        self.get_streamed(url, MAX_STREAMED_BODY, "a list of builds", move |r| {
            parse_eval_builds(r, eval_id, wanted)
        })
        .await
    }
}

/// The evaluation id in `latest-eval`'s `Location` (`…/eval/<id>?name=<jobset>`). Only the id
/// is taken, so a proxy naming the wrong scheme or host in it does not matter.
fn eval_id_in(base: &reqwest::Url, location: &str) -> Option<u64> {
    let url = base.join(location).ok()?;
    let mut segments = url.path_segments()?.rev();
    let id = segments.next()?;
    (segments.next()? == "eval" && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.parse().ok())
        .flatten()
}

#[derive(Deserialize)]
struct EvalsPage {
    evals: Vec<EvalId>,
    next: Option<String>,
}

/// An evaluation of the list, of which only the id is kept: its `builds` (every build id) and
/// inputs are skipped as they are read.
#[derive(Deserialize)]
struct EvalId {
    id: u64,
}

fn parse_evals_page(r: &mut dyn Read) -> Result<EvalsPage, String> {
    let mut de = serde_json::Deserializer::from_reader(r);
    let page = EvalsPage::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(page)
}

/// The job whose build is looked for, as builds name it.
struct Wanted {
    project: String,
    jobset: String,
    job: String,
}

/// Reads a JSON array of builds element by element: each is looked at, counted and dropped.
fn parse_eval_builds(r: &mut dyn Read, eval: u64, wanted: Wanted) -> Result<EvalVerdict, String> {
    let mut verdict = EvalVerdict {
        eval,
        job: wanted.job.clone(),
        total: 0,
        failed: 0,
        unfinished: 0,
        job_build: None,
        job_build_refused: None,
    };
    let mut de = serde_json::Deserializer::from_reader(r);
    BuildsSeed {
        verdict: &mut verdict,
        wanted: &wanted,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(verdict)
}

struct BuildsSeed<'a> {
    verdict: &'a mut EvalVerdict,
    wanted: &'a Wanted,
}

impl<'de> DeserializeSeed<'de> for BuildsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BuildsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of builds")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let v = self.verdict;
        let mut found = false;
        while let Some(build) = seq.next_element::<RawBuild>()? {
            let malformed = |e: BuildError| match e {
                BuildError::Malformed(reason) => A::Error::custom(reason),
                BuildError::Invalid(e) => A::Error::custom(e),
            };
            v.total += 1;
            match build.outcome().map_err(malformed)? {
                Outcome::Succeeded => {}
                Outcome::Failed(_) => v.failed += 1,
                Outcome::Unfinished => v.unfinished += 1,
            }
            // Hydra keeps one build per job in an evaluation; should two appear, the first is
            // the job's, as `/eval/<id>/job/<job>` would pick one.
            let w = self.wanted;
            if !found
                && build.project.as_deref() == Some(&w.project)
                && build.jobset.as_deref() == Some(&w.jobset)
                && build.job.as_deref() == Some(&w.job)
            {
                found = true;
                match build.check() {
                    Ok(b) => v.job_build = Some(b),
                    Err(BuildError::Invalid(e)) => {
                        v.job_build_refused = Some(one_line(&e.to_string()))
                    }
                    Err(e) => return Err(malformed(e)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "/nix/store/l9r346p3d25vs4g5v37f3r3f28js97kb-web";

    /// A build as Hydra lists it in `/eval/<id>/builds` (field names exact, values invented).
    fn build(id: u64, job: &str, finished: u8, status: Option<i64>) -> String {
        let status = status.map_or("null".to_string(), |s| s.to_string());
        format!(
            r#"{{"id": {id}, "finished": {finished}, "timestamp": 1717430410,
            "starttime": 1717430522, "stoptime": 1717430587, "project": "p", "jobset": "j",
            "job": "{job}", "nixname": "web", "system": "x86_64-linux", "priority": 100,
            "buildstatus": {status}, "releasename": null,
            "drvpath": "/nix/store/6cp643dzvlxxpkgbg5kzmwj47sam9zs2-web.drv",
            "jobsetevals": [3122, 3121],
            "buildoutputs": {{"out": {{"path": "{OUT}"}}}},
            "buildproducts": {{"1": {{"type": "nix-build", "subtype": "", "name": "web",
              "filesize": null, "sha256hash": null, "path": "{OUT}", "defaultpath": ""}}}},
            "buildmetrics": {{}}}}"#
        )
    }

    fn wanted() -> Wanted {
        Wanted {
            project: "p".into(),
            jobset: "j".into(),
            job: "web".into(),
        }
    }

    fn verdict(body: &str) -> Result<EvalVerdict, String> {
        parse_eval_builds(&mut body.as_bytes(), 7, wanted())
    }

    #[test]
    fn counts_and_the_jobs_build() {
        let body = format!(
            "[{}, {}, {}, {}]",
            build(1, "a", 1, Some(0)),
            build(2, "web", 1, Some(0)),
            build(3, "b", 1, Some(2)),
            build(4, "c", 0, None),
        );
        let v = verdict(&body).unwrap();
        assert_eq!((v.eval, v.total, v.failed, v.unfinished), (7, 4, 1, 1));
        assert_eq!(v.job_build.as_ref().map(|b| b.id), Some(2));
        assert_eq!(v.job_build.unwrap().path.as_str(), OUT);
        // Finished without a status yet counts as unfinished; `true` as finished.
        let body = format!(
            "[{}, {}]",
            build(1, "a", 1, None),
            build(2, "web", 1, Some(0)).replace(r#""finished": 1"#, r#""finished": true"#)
        );
        let v = verdict(&body).unwrap();
        assert_eq!((v.total, v.failed, v.unfinished), (2, 0, 1));
        assert!(v.job_build.is_some());
        let v = verdict("[]").unwrap();
        assert_eq!((v.total, v.job_build, v.job_build_refused), (0, None, None));
    }

    #[test]
    fn the_job_is_matched_on_project_jobset_and_name() {
        let other_jobset =
            build(1, "web", 1, Some(0)).replace(r#""jobset": "j""#, r#""jobset": "k""#);
        let other_project =
            build(2, "web", 1, Some(0)).replace(r#""project": "p""#, r#""project": "q""#);
        let v = verdict(&format!("[{other_jobset}, {other_project}]")).unwrap();
        assert_eq!((v.total, v.job_build), (2, None));
    }

    #[test]
    fn an_undeployable_job_build_is_part_of_the_verdict() {
        let no_out = build(2, "web", 1, Some(0)).replace(r#""out": {"#, r#""bin": {"#);
        let v = verdict(&format!("[{no_out}]")).unwrap();
        assert_eq!(v.job_build, None);
        assert_eq!(
            v.job_build_refused.as_deref(),
            Some("build 2 has no \"out\" output")
        );
        assert_eq!(
            v.refusal().unwrap().to_string(),
            "evaluation 7: build 2 has no \"out\" output"
        );
        let hostile = build(2, "web", 1, Some(0)).replace(
            &format!(r#""path": "{OUT}"}}}}"#),
            r#""path": "/etc/passwd"}}"#,
        );
        let v = verdict(&format!("[{hostile}]")).unwrap();
        assert!(v.job_build_refused.unwrap().contains("invalid store path"));
        let failed = verdict(&format!("[{}]", build(2, "web", 1, Some(1)))).unwrap();
        assert_eq!(
            failed.refusal().unwrap().to_string(),
            "evaluation 7: 1 of 1 build failed"
        );
    }

    #[test]
    fn malformed_lists_are_errors() {
        for body in [
            "",
            "{}",
            r#"{"error": "nope"}"#,
            "[1, 2]",
            "[{\"id\": 1}]",
            "<html></html>",
            "[] trailing",
            &format!("[{}", build(1, "a", 1, Some(0))),
            &build(1, "a", 1, Some(0)),
            &format!(
                "[{}]",
                build(1, "a", 1, Some(0)).replace(r#""finished": 1"#, r#""finished": "yes""#)
            ),
        ] {
            assert!(verdict(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn refusals_read_as_reasons() {
        let v = EvalVerdict {
            eval: 1234,
            job: "web".into(),
            total: 120,
            failed: 3,
            unfinished: 0,
            job_build: None,
            job_build_refused: None,
        };
        let reason = |v: &EvalVerdict| v.refusal().map(|r| r.to_string());
        assert_eq!(
            reason(&v).unwrap(),
            "evaluation 1234: 3 of 120 builds failed"
        );
        assert!(v.is_final() && v.passed().is_none());
        let v = EvalVerdict { unfinished: 7, ..v };
        assert_eq!(
            reason(&v).unwrap(),
            "evaluation 1234: 3 of 120 builds failed, 7 unfinished"
        );
        assert!(!v.is_final());
        let v = EvalVerdict {
            eval: 1235,
            failed: 0,
            ..v
        };
        assert_eq!(
            reason(&v).unwrap(),
            "evaluation 1235: 7 of 120 builds unfinished"
        );
        let v = EvalVerdict {
            eval: 1236,
            unfinished: 0,
            ..v
        };
        assert_eq!(
            reason(&v).unwrap(),
            "evaluation 1236 has no build of job web"
        );
        let build = Build::new(9, crate::store_path::StorePath::parse(OUT).unwrap());
        let v = EvalVerdict {
            job_build: Some(build.clone()),
            ..v
        };
        assert_eq!((reason(&v), v.passed()), (None, Some(&build)));
    }

    #[test]
    fn latest_eval_locations() {
        let base = reqwest::Url::parse("http://h/hydra/jobset/p/j/latest-eval").unwrap();
        for (location, id) in [
            ("http://h/hydra/eval/1234?name=j", Some(1234)),
            ("/eval/1234?name=j", Some(1234)),
            // A proxy that names the wrong scheme or host: only the id is taken.
            ("https://elsewhere:8443/hydra/eval/99", Some(99)),
            ("http://h/eval/1234/builds?name=j", None),
            ("http://h/jobset/p/k/latest-eval", None),
            ("http://h/eval/", None),
            ("http://h/eval/12x", None),
            ("http://h/eval/+12", None),
            ("http://h/eval/99999999999999999999999", None),
            ("", None),
        ] {
            assert_eq!(eval_id_in(&base, location), id, "{location:?}");
        }
    }

    #[test]
    fn evals_pages_keep_only_ids() {
        let page = r#"{"evals": [
            {"id": 3122, "timestamp": 1717430400, "checkouttime": 2, "evaltime": 14,
             "hasnewbuilds": 1, "flake": null, "builds": [48213, 48214, 48215],
             "jobsetevalinputs": {"src": {"type": "git", "uri": "https://git.example.com/foo.git",
               "revision": "08f86bebb2737f6a6f0fb23c6f5da2cec255404e", "value": null,
               "dependency": null}}},
            {"id": 3121, "builds": []}],
            "first": "?page=1", "next": "?page=2", "last": "?page=3"}"#;
        let p = parse_evals_page(&mut page.as_bytes()).unwrap();
        assert_eq!(
            p.evals.iter().map(|e| e.id).collect::<Vec<_>>(),
            [3122, 3121]
        );
        assert_eq!(p.next.as_deref(), Some("?page=2"));
        let last = r#"{"evals": [], "first": "?page=1", "last": "?page=0"}"#;
        assert!(
            parse_evals_page(&mut last.as_bytes())
                .unwrap()
                .next
                .is_none()
        );
        for bad in [
            "[]",
            r#"{"evals": [{"id": "x"}]}"#,
            "<html>",
            r#"{"error": "x"}"#,
        ] {
            assert!(parse_evals_page(&mut bad.as_bytes()).is_err(), "{bad}");
        }
    }

    /// The running count refuses a body that announces no length; and a parser that gives up
    /// stops the download.
    #[test]
    fn streamed_bodies_are_bounded_while_read() {
        use hail_testkit::hydra::{HydraServer, Override};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let hydra = HydraServer::start();
        let job = Job::parse(&hydra.default_job_uri()).unwrap();
        // No time bound matters here: what ends each read is checked by its error.
        let client = HydraClient::new(&job, None, std::time::Duration::from_secs(600)).unwrap();
        let url = job.eval_url(1, "builds").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let run = |limit: u64| {
            let url = url.clone();
            let count = |r: &mut dyn Read| Ok(std::io::BufReader::new(r).bytes().count());
            rt.block_on(client.get_streamed(url, limit, "a list", count))
        };
        // 4 MiB and a byte of `[1,1,…]`, chunked.
        let item = serde_json::json!(1);
        let body = Override::streamed_json("[", &item, 2 << 20, "]", true);
        hydra.override_path("/eval/1/builds", body);
        assert_eq!(run(8 << 20).unwrap(), (4 << 20) + 1);
        let err = run(1 << 20).unwrap_err();
        assert!(
            matches!(err, HydraError::TooLarge { limit, .. } if limit == 1 << 20),
            "{err}"
        );

        // Terabytes after a bad first byte: were the download to go on after the parser gave up,
        // it would end at the bound (TooLarge), not with the parser's error.
        let endless = Override::streamed_json("{", &item, 1 << 40, "]", true);
        hydra.override_path("/eval/1/builds", endless);
        let err = rt.block_on(client.eval_verdict(&job, 1)).unwrap_err();
        assert!(err.to_string().contains("is not a list of builds"), "{err}");
    }

    /// `[b0, b1, …]` of `n` builds, made as it is read: the test's input is never whole in
    /// memory either.
    struct Builds {
        n: u64,
        next: u64,
        buf: Vec<u8>,
        at: usize,
    }

    impl Read for Builds {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.buf.len() {
                self.buf.clear();
                self.at = 0;
                match self.next {
                    n if n > self.n => return Ok(0),
                    n if n == self.n => self.buf.push(b']'),
                    n => {
                        self.buf.push(if n == 0 { b'[' } else { b',' });
                        let (job, finished, status) = match n {
                            50_000 => ("web".to_string(), 1, Some(0)),
                            n if n % 1000 == 1 => (format!("j{n}"), 1, Some(1)),
                            n if n % 5000 == 2 => (format!("j{n}"), 0, None),
                            n => (format!("j{n}"), 1, Some(0)),
                        };
                        self.buf
                            .extend_from_slice(build(n, &job, finished, status).as_bytes());
                    }
                }
                self.next += 1;
            }
            let n = (self.buf.len() - self.at).min(out.len());
            out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn a_large_list_is_read_in_constant_memory() {
        const N: u64 = 100_000;
        let mut body = Builds {
            n: N,
            next: 0,
            buf: Vec::new(),
            at: 0,
        };
        let before = hail_testkit::peak_rss_kib();
        let v = parse_eval_builds(&mut std::io::BufReader::new(&mut body), 7, wanted()).unwrap();
        let grown = hail_testkit::peak_rss_kib() - before;
        eprintln!("peak memory grew by {grown} KiB from {before} KiB");
        assert_eq!((v.total, v.failed, v.unfinished), (N, 100, 20));
        assert_eq!(v.job_build.map(|b| b.id), Some(50_000));
        // The list is about 70 MB; kept whole, it (or what it parses to) would show here.
        // Other tests of this process run meanwhile, hence the margin.
        assert!(grown < 16 << 10, "peak memory grew by {grown} KiB");
    }
}
