//! A Hydra-compatible HTTP server: the routes hail (and a person checking on it) uses, answered
//! the way Hydra's controllers answer them.
//!
//! - `/job/<p>/<j>/<job>/latest`, `latest-for/<system>`, `latest-finished`: 302 with an absolute
//!   `Location` built from the request's `Host` (as Catalyst's `uri_for` does) to `/build/<id>`;
//!   404 `There is no successful build to redirect to.`; unknown jobset 404
//!   `Jobset ‘X’ doesn't exist.`
//! - A renamed jobset ([`HydraServer::rename_jobset`]): every `/job/<p>/<old>/…` and
//!   `/jobset/<p>/<old>/…` answers 301 to the same path under the new name, the request's query
//!   parameters carried along (Hydra's `Job.pm` and `Jobset.pm` chains).
//! - `/build/<id>`: the full build (`finished` 0/1, `buildstatus` null until finished; queued:
//!   `starttime` and `stoptime` null; running: `starttime` set, `stoptime` null; finished: both).
//! - `/eval/<id>`, `/eval/<id>/builds`, `/eval/<id>/job/<job>` (302 to the build, or 404
//!   `This evaluation has no job with the specified name.`).
//! - `/jobset/<p>/<j>/evals`: `{"evals", "first", "last", "previous"?, "next"?}`, 20 per page,
//!   newest first, only evaluations that produced new builds (`hasnewbuilds`: the evaluation is
//!   the first one of one of its builds); `last` is `?page=0` when there are none, as Hydra's
//!   `ceil(0/20)` makes it.
//! - `/jobset/<p>/<j>/latest-eval[/…]`: 302 to `/eval/<id>[/…]?name=<jobset>` (the request's
//!   query parameters carried along, as Hydra does) for the newest evaluation with new builds
//!   and none unfinished; 404 `No evaluation found.`
//! - Every answer carries `Vary: Accept`; JSON only when the request accepts
//!   `application/json`, HTML otherwise; errors are `{"error": "…"}`.
//! - Private mode: 403 `This page requires you to sign in.` without a session cookie (HTTP Basic
//!   auth is ignored, as Hydra ignores it).
//!
//! Everything can be changed while a test runs (`&self` methods), and any path's answer can be
//! overridden for fault injection ([`Override`]). Every request is recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::http::{Repeated, Reply, Request, Response, Server};

/// The project, jobset and job of [`BuildSpec::succeeded`] and friends, and of
/// [`HydraServer::default_job_uri`].
pub const DEFAULT_PROJECT: &str = "hail";
pub const DEFAULT_JOBSET: &str = "test";
pub const DEFAULT_JOB: &str = "profile";

/// Hydra's own wording for the errors it sends.
pub const NO_SUCCESSFUL_BUILD: &str = "There is no successful build to redirect to.";
pub const SIGN_IN: &str = "This page requires you to sign in.";
pub const NO_EVALUATION: &str = "No evaluation found.";

/// A build to add to the server.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub project: String,
    pub jobset: String,
    pub job: String,
    /// `buildoutputs`: output name → store path (`None` is a JSON null, as for a
    /// content-addressed output not built yet).
    pub outputs: Vec<(String, Option<String>)>,
    pub finished: bool,
    /// Running (`starttime` set) rather than queued; ignored once finished.
    pub started: bool,
    /// `None` is JSON null (what Hydra sends until the build is finished).
    pub buildstatus: Option<i64>,
    pub system: String,
    /// Evaluations to join; empty means a new evaluation holding just this build.
    pub evals: Vec<u64>,
}

impl BuildSpec {
    /// A finished, successful build of the default job whose `out` is `out_path`.
    pub fn succeeded(out_path: &str) -> BuildSpec {
        BuildSpec {
            project: DEFAULT_PROJECT.into(),
            jobset: DEFAULT_JOBSET.into(),
            job: DEFAULT_JOB.into(),
            outputs: vec![("out".into(), Some(out_path.into()))],
            finished: true,
            started: true,
            buildstatus: Some(0),
            system: "x86_64-linux".into(),
            evals: Vec::new(),
        }
    }

    /// A build that has not run yet (`finished: 0`, `buildstatus: null`, no `starttime`).
    pub fn queued(out_path: &str) -> BuildSpec {
        BuildSpec {
            finished: false,
            started: false,
            buildstatus: None,
            ..BuildSpec::succeeded(out_path)
        }
    }

    /// A build being built now: `finished: 0`, `buildstatus: null`, `starttime` set (by Hydra's
    /// clock, when it is added), `stoptime` null.
    pub fn running(out_path: &str) -> BuildSpec {
        BuildSpec {
            started: true,
            ..BuildSpec::queued(out_path)
        }
    }

    /// A finished build with a non-zero `buildstatus` (1 failed, 2 dependency failed, …).
    pub fn failed(out_path: &str, buildstatus: i64) -> BuildSpec {
        BuildSpec {
            buildstatus: Some(buildstatus),
            ..BuildSpec::succeeded(out_path)
        }
    }

    pub fn job(mut self, project: &str, jobset: &str, job: &str) -> BuildSpec {
        (self.project, self.jobset, self.job) = (project.into(), jobset.into(), job.into());
        self
    }

    /// Replaces `buildoutputs` entirely (e.g. to leave out `out`).
    pub fn outputs(mut self, outputs: &[(&str, Option<&str>)]) -> BuildSpec {
        self.outputs = outputs
            .iter()
            .map(|(n, p)| (n.to_string(), p.map(str::to_string)))
            .collect();
        self
    }

    pub fn in_evals(mut self, evals: &[u64]) -> BuildSpec {
        self.evals = evals.to_vec();
        self
    }
}

/// A replacement answer for one path, for fault injection.
#[derive(Debug, Clone)]
pub struct Override {
    /// Waited before answering (or before closing, or before the normal answer).
    pub delay: Duration,
    pub answer: Answer,
    /// How many requests it applies to; `None` = until removed.
    pub times: Option<usize>,
}

#[derive(Debug, Clone)]
pub enum Answer {
    /// The server's normal answer (useful with a delay).
    Normal,
    Respond(Response),
    /// A body made on the fly and written in pieces (see [`Override::streamed_json`]).
    Stream {
        response: Response,
        body: Repeated,
        chunked: bool,
    },
    /// Close the connection without answering.
    Close,
}

impl Override {
    /// A fixed answer: status, content type and body (`Vary: Accept` is added).
    pub fn respond(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Override {
        let response = Response::with_body(status, content_type, body).header("Vary", "Accept");
        Override {
            delay: Duration::ZERO,
            answer: Answer::Respond(response),
            times: None,
        }
    }

    /// A 302 to an arbitrary URL.
    pub fn redirect(location: &str) -> Override {
        let mut o = Override::respond(302, "text/html; charset=utf-8", "");
        if let Answer::Respond(r) = &mut o.answer {
            r.headers.push(("Location".into(), location.into()));
        }
        o
    }

    /// A 200 JSON answer of exactly `len` bytes: `json` padded with trailing spaces (still valid
    /// JSON, so only a size limit can make a client refuse it). `len` below the document's size
    /// gives the document alone.
    pub fn huge_json(json: &Value, len: usize) -> Override {
        let mut body = json.to_string().into_bytes();
        body.resize(len.max(body.len()), b' ');
        Override::respond(200, JSON, body)
    }

    /// A 200 JSON answer made on the fly, never held whole: `head`, `item` `count` times
    /// separated by commas, then `tail` (e.g. `[`, a build, 100 000, `]`). With
    /// `Content-Length` unless `chunked`, when a client learns the size only by reading.
    pub fn streamed_json(
        head: &str,
        item: &Value,
        count: u64,
        tail: &str,
        chunked: bool,
    ) -> Override {
        Override {
            delay: Duration::ZERO,
            answer: Answer::Stream {
                response: Response::with_body(200, JSON, "").header("Vary", "Accept"),
                body: Repeated {
                    head: head.into(),
                    item: item.to_string().into_bytes(),
                    sep: b",".to_vec(),
                    count,
                    tail: tail.into(),
                },
                chunked,
            },
            times: None,
        }
    }

    /// Close the connection without a word.
    pub fn close() -> Override {
        Override {
            delay: Duration::ZERO,
            answer: Answer::Close,
            times: None,
        }
    }

    /// The normal answer, late.
    pub fn delayed(delay: Duration) -> Override {
        Override {
            delay,
            answer: Answer::Normal,
            times: None,
        }
    }

    /// Apply to the next `n` requests only.
    pub fn times(mut self, n: usize) -> Override {
        self.times = Some(n);
        self
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
    /// Bytes of the answer's head and body (chunk framing and `Connection: close` aside);
    /// `None` when the connection was closed without one.
    pub response_bytes: Option<u64>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::find_header(&self.headers, name)
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

const JSON: &str = "application/json; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const PER_PAGE: usize = 20;

#[derive(Debug, Clone)]
struct Build {
    id: u64,
    spec: BuildSpec,
    timestamp: u64,
    starttime: Option<u64>,
    stoptime: Option<u64>,
}

#[derive(Debug, Clone)]
struct Eval {
    id: u64,
    project: String,
    jobset: String,
    timestamp: u64,
    builds: Vec<u64>,
}

#[derive(Default)]
struct State {
    builds: BTreeMap<u64, Build>,
    evals: BTreeMap<u64, Eval>,
    jobsets: BTreeSet<(String, String)>,
    /// (project, old jobset name) → new name, as Hydra's `JobsetRenames` table.
    renames: BTreeMap<(String, String), String>,
    private: bool,
    overrides: HashMap<String, Override>,
    requests: Vec<RecordedRequest>,
    /// `http://127.0.0.1:PORT`, for a `Location` when a request has no `Host`.
    url: String,
    /// How far this Hydra's clock runs ahead of the host's, in seconds (negative: behind). It
    /// dates builds and evaluations, and every answer's `Date:`, as Hydra's web server does.
    clock_ahead: i64,
}

impl State {
    /// This Hydra's clock: seconds since the epoch.
    fn now(&self) -> u64 {
        now().saturating_add_signed(self.clock_ahead)
    }
}

/// The server. Cheap to share: all state sits behind one mutex.
pub struct HydraServer {
    state: Arc<Mutex<State>>,
    session: String,
    server: Server,
}

impl HydraServer {
    /// Starts on `127.0.0.1:0` with the default project and jobset existing and no builds.
    pub fn start() -> HydraServer {
        let session = format!("{:032x}", unique());
        let state = Arc::new(Mutex::new(State::default()));
        state
            .lock()
            .unwrap()
            .jobsets
            .insert((DEFAULT_PROJECT.into(), DEFAULT_JOBSET.into()));
        let server = {
            let (state, session) = (state.clone(), session.clone());
            Server::start(move |r| handle(&state, &session, r)).expect("start the Hydra server")
        };
        state.lock().unwrap().url = server.url();
        HydraServer {
            state,
            session,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// `http://127.0.0.1:PORT/job/<project>/<jobset>/<job>`.
    pub fn job_uri(&self, project: &str, jobset: &str, job: &str) -> String {
        format!("{}/job/{project}/{jobset}/{job}", self.url())
    }

    /// The job URI of the default project, jobset and job.
    pub fn default_job_uri(&self) -> String {
        self.job_uri(DEFAULT_PROJECT, DEFAULT_JOBSET, DEFAULT_JOB)
    }

    /// Makes a (possibly empty) jobset exist.
    pub fn add_jobset(&self, project: &str, jobset: &str) {
        self.lock().jobsets.insert((project.into(), jobset.into()));
    }

    /// Adds a build (its jobset is created when needed) and returns its id; ids only grow.
    pub fn add_build(&self, spec: BuildSpec) -> u64 {
        let mut st = self.lock();
        let id = st.builds.keys().next_back().map_or(48_213, |i| i + 1);
        let now = st.now();
        st.jobsets
            .insert((spec.project.clone(), spec.jobset.clone()));
        let mut evals = spec.evals.clone();
        if evals.is_empty() {
            let eval_id = st.evals.keys().next_back().map_or(3_122, |i| i + 1);
            let eval = Eval {
                id: eval_id,
                project: spec.project.clone(),
                jobset: spec.jobset.clone(),
                timestamp: now,
                builds: Vec::new(),
            };
            st.evals.insert(eval_id, eval);
            evals.push(eval_id);
        }
        for e in &evals {
            let eval = st
                .evals
                .get_mut(e)
                .unwrap_or_else(|| panic!("no evaluation {e}"));
            eval.builds.push(id);
        }
        let starttime = (spec.finished || spec.started).then_some(now);
        let stoptime = spec.finished.then_some(now);
        st.builds.insert(
            id,
            Build {
                id,
                spec: BuildSpec { evals, ..spec },
                timestamp: now,
                starttime,
                stoptime,
            },
        );
        id
    }

    /// Adds an evaluation of the default jobset holding no builds yet (builds join it with
    /// [`BuildSpec::in_evals`]); returns its id.
    pub fn add_eval(&self, project: &str, jobset: &str) -> u64 {
        let mut st = self.lock();
        let id = st.evals.keys().next_back().map_or(3_122, |i| i + 1);
        st.jobsets.insert((project.into(), jobset.into()));
        let eval = Eval {
            id,
            project: project.into(),
            jobset: jobset.into(),
            timestamp: st.now(),
            builds: Vec::new(),
        };
        st.evals.insert(id, eval);
        id
    }

    /// Adds `n` builds of other jobs (`other-0`, `other-1`, …) to evaluation `eval`, made from
    /// `template` (its project, jobset and job are replaced by the evaluation's and those
    /// names); returns their ids. For evaluations of realistic size around the job's build.
    pub fn add_other_builds(&self, eval: u64, n: usize, template: &BuildSpec) -> Vec<u64> {
        let (project, jobset) = {
            let st = self.lock();
            let e = st
                .evals
                .get(&eval)
                .unwrap_or_else(|| panic!("no evaluation {eval}"));
            (e.project.clone(), e.jobset.clone())
        };
        (0..n)
            .map(|i| {
                let spec = template
                    .clone()
                    .job(&project, &jobset, &format!("other-{i}"))
                    .in_evals(&[eval]);
                self.add_build(spec)
            })
            .collect()
    }

    /// Finishes a build with that `buildstatus` (0 success).
    pub fn finish(&self, id: u64, buildstatus: i64) {
        let mut st = self.lock();
        let now = st.now();
        let b = st
            .builds
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no build {id}"));
        b.spec.finished = true;
        b.spec.buildstatus = Some(buildstatus);
        b.starttime = b.starttime.or(Some(now));
        b.stoptime = Some(now);
    }

    /// A queued build starts running: `starttime` now (by Hydra's clock), still `finished: 0`,
    /// `stoptime` null.
    pub fn mark_running(&self, id: u64) {
        let mut st = self.lock();
        let now = st.now();
        let b = st
            .builds
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no build {id}"));
        assert!(!b.spec.finished, "build {id} is finished");
        b.spec.started = true;
        b.starttime = Some(now);
    }

    /// Renames a jobset as Hydra's jobset settings do: its builds and evaluations move to the new
    /// name, and requests naming the old one are answered 301 to the same path under the new one.
    pub fn rename_jobset(&self, project: &str, from: &str, to: &str) {
        let mut st = self.lock();
        let old = (project.to_string(), from.to_string());
        assert!(st.jobsets.remove(&old), "no jobset {project}/{from}");
        st.jobsets.insert((project.into(), to.into()));
        for b in st.builds.values_mut() {
            if b.spec.project == project && b.spec.jobset == from {
                b.spec.jobset = to.into();
            }
        }
        for e in st.evals.values_mut() {
            if e.project == project && e.jobset == from {
                e.jobset = to.into();
            }
        }
        // Older names of this jobset lead to the newest one.
        for (key, name) in st.renames.iter_mut() {
            if key.0 == project && name == from {
                *name = to.into();
            }
        }
        st.renames.insert(old, to.into());
    }

    /// Sets a finished build's `stoptime` (seconds since the epoch, by Hydra's clock): a build
    /// finished in the past, or a Hydra whose clock runs ahead of the host's.
    pub fn set_stoptime(&self, id: u64, stoptime: u64) {
        let mut st = self.lock();
        let b = st
            .builds
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no build {id}"));
        assert!(b.spec.finished, "build {id} is not finished");
        b.stoptime = Some(stoptime);
        // Hydra's builds start before they stop.
        b.starttime = b.starttime.map(|s| s.min(stoptime));
    }

    /// Sets how far this Hydra's clock runs ahead of the host's (negative: behind): the
    /// `stoptime` of builds finished from now on and every answer's `Date:` follow it.
    pub fn set_clock_ahead(&self, seconds: i64) {
        self.lock().clock_ahead = seconds;
    }

    /// Finishes a build successfully.
    pub fn mark_finished(&self, id: u64) {
        self.finish(id, 0);
    }

    /// Private instance: anonymous requests get 403.
    pub fn set_private(&self, private: bool) {
        self.lock().private = private;
    }

    /// A `Cookie` header value that counts as signed in on a private instance.
    pub fn session_cookie(&self) -> String {
        format!("hydra_session={}", self.session)
    }

    /// Replaces the answer for requests to `path` (exact match, query ignored).
    pub fn override_path(&self, path: &str, o: Override) {
        self.lock().overrides.insert(path.into(), o);
    }

    pub fn clear_override(&self, path: &str) {
        self.lock().overrides.remove(path);
    }

    /// `/job/<p>/<j>/<job>/latest` of the default job (handy for overrides).
    pub fn default_latest_path(&self) -> String {
        format!("/job/{DEFAULT_PROJECT}/{DEFAULT_JOBSET}/{DEFAULT_JOB}/latest")
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Bytes answered so far (see [`RecordedRequest::response_bytes`]).
    pub fn bytes_served(&self) -> u64 {
        self.lock()
            .requests
            .iter()
            .filter_map(|r| r.response_bytes)
            .sum()
    }

    /// Requests whose path (query ignored) is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path() == path)
            .cloned()
            .collect()
    }

    /// The build as `/build/<id>` would answer it in JSON.
    pub fn build_json(&self, id: u64) -> Value {
        let st = self.lock();
        build_json(&st.builds[&id])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn handle(state: &Mutex<State>, session: &str, req: &Request) -> Reply {
    let (index, reply) = answer(state, session, req);
    let bytes = match &reply {
        Reply::Send(r) => Some(r.wire_len()),
        Reply::Stream { response, body, .. } => Some(response.wire_len() + body.len()),
        Reply::Close => None,
    };
    state.lock().unwrap().requests[index].response_bytes = bytes;
    reply
}

/// The reply to `req`, and where it was recorded.
fn answer(state: &Mutex<State>, session: &str, req: &Request) -> (usize, Reply) {
    let (index, pending) = {
        let mut st = state.lock().unwrap();
        st.requests.push(RecordedRequest {
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.clone(),
            at: Instant::now(),
            response_bytes: None,
        });
        let index = st.requests.len() - 1;
        let path = req.path().to_string();
        let o = st.overrides.get_mut(&path).map(|o| {
            if let Some(n) = &mut o.times {
                *n = n.saturating_sub(1);
            }
            o.clone()
        });
        if matches!(o, Some(Override { times: Some(0), .. })) {
            st.overrides.remove(&path);
        }
        (index, o)
    };
    // Sleep without holding the lock, so other connections are served meanwhile.
    if let Some(o) = pending {
        thread::sleep(o.delay);
        match o.answer {
            Answer::Close => return (index, Reply::Close),
            Answer::Respond(r) => return (index, Reply::Send(r)),
            Answer::Stream {
                response,
                body,
                chunked,
            } => {
                let reply = Reply::Stream {
                    response,
                    body,
                    chunked,
                };
                return (index, reply);
            }
            Answer::Normal => {}
        }
    }
    let st = state.lock().unwrap();
    let wants_json = req
        .header("Accept")
        .is_some_and(|a| a.contains("application/json"));
    let base = match req.header("Host") {
        Some(h) => format!("http://{h}"),
        None => st.url.clone(),
    };
    let outcome = if st.private && !signed_in(req, session) {
        Outcome::Error(403, SIGN_IN.into())
    } else {
        route(&st, req)
    };
    let response = match outcome {
        Outcome::Redirect(location) => {
            Response::with_body(302, HTML, "").header("Location", &format!("{base}{location}"))
        }
        Outcome::Moved(location) => {
            Response::with_body(301, HTML, "").header("Location", &format!("{base}{location}"))
        }
        Outcome::Json(v) if wants_json => Response::with_body(200, JSON, v.to_string()),
        Outcome::Json(v) => Response::with_body(200, HTML, html(&format!("{:#}", v))),
        Outcome::Error(status, msg) if wants_json => {
            Response::with_body(status, JSON, json!({ "error": msg }).to_string())
        }
        Outcome::Error(status, msg) => Response::with_body(status, HTML, html(&msg)),
    };
    let date = http_date(st.now());
    let response = response.header("Vary", "Accept").header("Date", &date);
    (index, Reply::Send(response))
}

/// An HTTP `Date:` value (RFC 9110's IMF-fixdate) for `seconds` since the epoch.
fn http_date(seconds: u64) -> String {
    let t = jiff::Timestamp::from_second(seconds as i64).expect("a time within jiff's range");
    jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&t)
        .expect("a time within the format's range")
}

enum Outcome {
    Json(Value),
    /// A path on this server (made absolute from the request's `Host`).
    Redirect(String),
    /// 301: a path (and query) on this server, as for a renamed jobset.
    Moved(String),
    Error(u16, String),
}

fn signed_in(req: &Request, session: &str) -> bool {
    let want = format!("hydra_session={session}");
    req.header("Cookie")
        .is_some_and(|c| c.split(';').any(|p| p.trim() == want))
}

fn route(st: &State, req: &Request) -> Outcome {
    if req.method != "GET" && req.method != "HEAD" {
        return Outcome::Error(405, format!("Method {} is not allowed here.", req.method));
    }
    let segs: Vec<&str> = req.path().trim_start_matches('/').split('/').collect();
    if let ["job" | "jobset", project, jobset, ..] = segs.as_slice()
        && let Some(to) = st.renames.get(&(project.to_string(), jobset.to_string()))
        && !st
            .jobsets
            .contains(&(project.to_string(), jobset.to_string()))
    {
        let mut moved = segs.clone();
        moved[2] = to;
        let query = req.query().map(|q| format!("?{q}")).unwrap_or_default();
        return Outcome::Moved(format!("/{}{query}", moved.join("/")));
    }
    match segs.as_slice() {
        ["job", project, jobset, job, action, rest @ ..] => {
            if !st
                .jobsets
                .contains(&(project.to_string(), jobset.to_string()))
            {
                return Outcome::Error(404, format!("Jobset ‘{jobset}’ doesn't exist."));
            }
            job_action(st, (project, jobset, job), action, rest)
        }
        ["job", project, jobset, _job] => {
            if !st
                .jobsets
                .contains(&(project.to_string(), jobset.to_string()))
            {
                return Outcome::Error(404, format!("Jobset ‘{jobset}’ doesn't exist."));
            }
            Outcome::Json(json!({}))
        }
        ["build", id, rest @ ..] => {
            let Some(b) = id.parse::<u64>().ok().and_then(|i| st.builds.get(&i)) else {
                return Outcome::Error(404, format!("Build with ID {id} doesn't exist."));
            };
            match rest {
                [] | [""] => Outcome::Json(build_json(b)),
                ["constituents"] => Outcome::Json(json!([])),
                _ => Outcome::Error(404, "Page not found.".into()),
            }
        }
        ["eval", id, rest @ ..] => {
            let Some(e) = id.parse::<u64>().ok().and_then(|i| st.evals.get(&i)) else {
                return Outcome::Error(404, format!("Evaluation {id} doesn't exist."));
            };
            match rest {
                [] | [""] => Outcome::Json(eval_json(st, e)),
                ["builds"] => {
                    Outcome::Json(e.builds.iter().map(|b| build_json(&st.builds[b])).collect())
                }
                ["job", job] => match e.builds.iter().find(|b| st.builds[b].spec.job == *job) {
                    Some(b) => Outcome::Redirect(format!("/build/{b}")),
                    None => Outcome::Error(
                        404,
                        "This evaluation has no job with the specified name.".into(),
                    ),
                },
                _ => Outcome::Error(404, "Page not found.".into()),
            }
        }
        ["jobset", project, jobset, action, rest @ ..] => {
            if !st.jobsets.iter().any(|(p, _)| p == project) {
                return Outcome::Error(404, format!("Project ‘{project}’ doesn't exist."));
            }
            if !st
                .jobsets
                .contains(&(project.to_string(), jobset.to_string()))
            {
                return Outcome::Error(404, format!("Jobset ‘{jobset}’ doesn't exist."));
            }
            jobset_action(st, req, (project, jobset), action, rest)
        }
        _ => Outcome::Error(404, "Page not found.".into()),
    }
}

fn job_action(st: &State, (p, j, job): (&str, &str, &str), action: &str, rest: &[&str]) -> Outcome {
    let ok = |b: &&Build| {
        b.spec.project == p
            && b.spec.jobset == j
            && b.spec.job == job
            && b.spec.finished
            && b.spec.buildstatus == Some(0)
    };
    let (latest, rest) = match action {
        "latest" => (st.builds.values().rev().find(ok), rest),
        "latest-for" => {
            let Some((system, rest)) = rest.split_first() else {
                return Outcome::Error(
                    404,
                    "You need to specify a platform type in the URL.".into(),
                );
            };
            match st
                .builds
                .values()
                .rev()
                .filter(ok)
                .find(|b| b.spec.system == *system)
            {
                Some(b) => (Some(b), rest),
                None => {
                    return Outcome::Error(
                        404,
                        format!(
                            "There is no successful build for platform `{system}' to redirect to."
                        ),
                    );
                }
            }
        }
        // A build of an evaluation with no unfinished builds.
        "latest-finished" => {
            let eval_done = |e: &u64| {
                st.evals[e]
                    .builds
                    .iter()
                    .all(|b| st.builds[b].spec.finished)
            };
            (
                st.builds
                    .values()
                    .rev()
                    .filter(ok)
                    .find(|b| b.spec.evals.iter().any(eval_done)),
                rest,
            )
        }
        _ => return Outcome::Error(404, "Page not found.".into()),
    };
    match latest {
        None => Outcome::Error(404, NO_SUCCESSFUL_BUILD.into()),
        Some(b) => {
            let mut location = format!("/build/{}", b.id);
            for r in rest {
                location.push('/');
                location.push_str(r);
            }
            Outcome::Redirect(location)
        }
    }
}

fn jobset_action(
    st: &State,
    req: &Request,
    (p, j): (&str, &str),
    action: &str,
    rest: &[&str],
) -> Outcome {
    // Newest first; only evaluations that produced new builds count.
    let evals: Vec<&Eval> = st
        .evals
        .values()
        .rev()
        .filter(|e| e.project == p && e.jobset == j && has_new_builds(st, e))
        .collect();
    match (action, rest) {
        ("evals", []) => {
            let page: usize = req
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("page=")))
                .and_then(|n| n.parse().ok())
                .filter(|n| *n >= 1)
                .unwrap_or(1);
            let last = evals.len().div_ceil(PER_PAGE);
            let shown: Vec<Value> = evals
                .iter()
                .skip((page - 1) * PER_PAGE)
                .take(PER_PAGE)
                .map(|e| eval_json(st, e))
                .collect();
            let mut body =
                json!({ "evals": shown, "first": "?page=1", "last": format!("?page={last}") });
            if page < last {
                body["next"] = json!(format!("?page={}", page + 1));
            }
            if page > 1 {
                body["previous"] = json!(format!("?page={}", page - 1));
            }
            Outcome::Json(body)
        }
        // Trailing segments and the request's parameters go along, and `name` joins them.
        ("latest-eval", rest) => {
            let done = |e: &&&Eval| e.builds.iter().all(|b| st.builds[b].spec.finished);
            let Some(e) = evals.iter().find(done) else {
                return Outcome::Error(404, NO_EVALUATION.into());
            };
            let mut params: Vec<(String, String)> = req
                .query()
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter(|kv| !kv.is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv.to_string(), String::new()),
                })
                .collect();
            if !params.iter().any(|(k, _)| k == "name") {
                params.push(("name".into(), j.into()));
            }
            params.sort();
            let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let tail: String = rest.iter().map(|r| format!("/{r}")).collect();
            Outcome::Redirect(format!("/eval/{}{tail}?{}", e.id, query.join("&")))
        }
        _ => Outcome::Error(404, "Page not found.".into()),
    }
}

fn build_json(b: &Build) -> Value {
    let s = &b.spec;
    let out = s
        .outputs
        .iter()
        .find(|(n, _)| n == "out")
        .and_then(|(_, p)| p.clone());
    let nixname = out
        .as_deref()
        .and_then(|p| p.rsplit('/').next())
        .and_then(|base| base.split_once('-').map(|(_, name)| name.to_string()))
        .unwrap_or_else(|| s.job.clone());
    let outputs: serde_json::Map<String, Value> = s
        .outputs
        .iter()
        .map(|(n, p)| (n.clone(), json!({ "path": p })))
        .collect();
    let mut products = serde_json::Map::new();
    if let (true, Some(path)) = (s.finished && s.buildstatus == Some(0), &out) {
        products.insert(
            "1".into(),
            json!({
                "type": "nix-build", "subtype": "", "name": nixname, "filesize": null,
                "sha256hash": null, "path": path, "defaultpath": ""
            }),
        );
    }
    json!({
        "id": b.id,
        "finished": if s.finished { 1 } else { 0 },
        "timestamp": b.timestamp,
        "starttime": b.starttime,
        "stoptime": b.stoptime,
        "project": s.project,
        "jobset": s.jobset,
        "job": s.job,
        "nixname": nixname,
        "system": s.system,
        "priority": 100,
        "buildstatus": if s.finished { s.buildstatus.map(Value::from).unwrap_or(Value::Null) } else { Value::Null },
        "releasename": null,
        "drvpath": format!("/nix/store/{}-{nixname}.drv", fake_hash(b.id)),
        "jobsetevals": s.evals,
        "buildoutputs": outputs,
        "buildproducts": products,
        "buildmetrics": {},
    })
}

/// Whether the evaluation produced a build (was the first of a build's evaluations), as
/// Hydra's `hasnewbuilds` records; one that only shares older builds is hidden from the lists.
fn has_new_builds(st: &State, e: &Eval) -> bool {
    e.builds
        .iter()
        .any(|b| st.builds[b].spec.evals.iter().min() == Some(&e.id))
}

fn eval_json(st: &State, e: &Eval) -> Value {
    json!({
        "id": e.id,
        "timestamp": e.timestamp,
        "checkouttime": 1,
        "evaltime": 2,
        "hasnewbuilds": if has_new_builds(st, e) { 1 } else { 0 },
        "flake": null,
        "builds": e.builds,
        // One input, shaped as Hydra shows a git input (values made up).
        "jobsetevalinputs": {
            "src": {
                "type": "git",
                "uri": format!("https://git.example.com/{}.git", e.project),
                "revision": format!("{:040x}", e.id),
                "value": null,
                "dependency": null,
            }
        },
    })
}

fn html(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<!DOCTYPE html>\n<html><head><title>Hydra</title></head><body><pre>{escaped}</pre></body></html>\n"
    )
}

/// 32 characters of Nix's base-32 alphabet, derived from `n` (for made-up `.drv` paths).
fn fake_hash(n: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..32)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 32) as usize] as char
        })
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A value unique to this process and call, for session tokens and nonces.
pub(crate) fn unique() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    nanos
        ^ ((std::process::id() as u128) << 64)
        ^ (COUNTER.fetch_add(1, Ordering::SeqCst) as u128) << 100
}
