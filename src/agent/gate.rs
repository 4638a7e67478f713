//! Which build Hydra offers: the job's latest successful build (`--gate latest`), or the job's
//! build of the newest evaluation whose builds all succeeded (`--gate evaluation`). The choice
//! among evaluations is [`decide::pick`]; this asks Hydra what it needs, and remembers verdicts
//! on finished evaluations so that a poll in steady state is one small request.

use std::future::Future;
use std::time::Duration;

use crate::decide::{self, Known, Pick};
use crate::hydra::{EvalVerdict, HydraClient, HydraError, Job, redact};
use crate::record::{GateBuild, GateMemory, GateVerdict};
use crate::store_path::StorePath;
use crate::systemd::Watchdog;
use crate::types::{Build, Gate};

/// What Hydra offers now.
pub enum Offer {
    /// This build, the newer evaluations passed over for these reasons.
    Build {
        build: Build,
        passed_over: Vec<String>,
    },
    /// No evaluation passes, for these reasons.
    Nothing(Vec<String>),
}

/// Asks Hydra, each request bounded by a little more than `timeout` (the client's own bound; the
/// watchdog is fed meanwhile). `memory` is what the gate learnt at earlier polls; it is updated.
pub async fn offer(
    hydra: &HydraClient,
    job: &Job,
    gate: Gate,
    memory: &mut GateMemory,
    watchdog: &Watchdog,
    timeout: Duration,
) -> Result<Offer, HydraError> {
    let call = |what: &str| Call {
        watchdog,
        timeout,
        what: redact(what),
    };
    let depth = match gate {
        Gate::Latest => {
            let build = call(hydra.latest_url().as_str())
                .run(hydra.latest())
                .await?;
            return Ok(Offer::Build {
                build,
                passed_over: Vec::new(),
            });
        }
        Gate::Evaluation { depth } => depth,
    };
    let finished = call(job.display())
        .run(hydra.latest_finished_eval(job))
        .await?;
    // A new finished evaluation (or none read yet, or another depth): the list may have changed.
    if finished != memory.finished_upto || memory.evals.is_empty() || memory.depth != depth {
        memory.evals = call(job.display())
            .run(hydra.recent_evals(job, depth))
            .await?;
        memory.finished_upto = finished;
        memory.depth = depth;
        let evals = &memory.evals;
        memory.verdicts.retain(|v| evals.contains(&v.eval));
    }
    // Verdicts on evaluations that may still change (a build restarted): not remembered.
    let mut passing = Vec::new();
    loop {
        let known = |eval: u64| {
            memory
                .verdicts
                .iter()
                .chain(&passing)
                .find(|v| v.eval == eval)
                .map(known)
        };
        match decide::pick(&memory.evals, finished, known) {
            Pick::Fetch(eval) => {
                let verdict = call(job.display())
                    .run(hydra.eval_verdict(job, eval))
                    .await?;
                let remembered = gate_verdict(&verdict);
                if verdict.is_final() {
                    memory.verdicts.push(remembered);
                } else {
                    passing.push(remembered);
                }
            }
            Pick::Deploy {
                build, passed_over, ..
            } => return Ok(Offer::Build { build, passed_over }),
            Pick::Nothing(why) => return Ok(Offer::Nothing(why)),
        }
    }
}

/// One request to Hydra, bounded, named for the timeout's message.
struct Call<'a> {
    watchdog: &'a Watchdog,
    timeout: Duration,
    what: String,
}

impl Call<'_> {
    async fn run<T>(
        self,
        request: impl Future<Output = Result<T, HydraError>>,
    ) -> Result<T, HydraError> {
        // The client bounds each request itself; this only catches what slips past it.
        let bound = self.timeout + Duration::from_secs(5);
        self.watchdog
            .bounded(bound, request)
            .await
            .unwrap_or_else(|()| {
                Err(HydraError::Timeout {
                    url: self.what,
                    timeout: self.timeout,
                })
            })
    }
}

fn gate_verdict(v: &EvalVerdict) -> GateVerdict {
    GateVerdict {
        eval: v.eval,
        build: v.passed().map(|b| GateBuild {
            build_id: b.id,
            store_path: b.path.to_string(),
            finished_at: b.finished_at,
        }),
        refusal: v.refusal().map(|r| r.to_string()),
    }
}

fn known(v: &GateVerdict) -> Known {
    let build = v.build.as_ref().and_then(|b| {
        Some(Build {
            id: b.build_id,
            path: StorePath::parse(&b.store_path).ok()?,
            finished_at: b.finished_at,
        })
    });
    match build {
        Some(b) => Known::Passed(b),
        None => Known::Refused(
            v.refusal
                .clone()
                .unwrap_or_else(|| format!("evaluation {} does not pass", v.eval)),
        ),
    }
}
