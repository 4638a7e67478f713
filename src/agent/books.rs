//! What the agent knows and where it keeps it: the state, its file and the metrics file; and the
//! operators' requests, applied as they come.

use std::future::Future;
use std::path::PathBuf;

use jiff::Timestamp;
use tracing::{info, warn};

use super::report;
use super::signals::Signals;
use crate::metrics;
use crate::state::{Event, Next, State};
use crate::state_file::{AgentMark, Saved, StateDir, StateError};

/// What the agent knows and where it keeps it: the state, its file and the metrics file.
pub(super) struct Books {
    pub(super) state: State,
    pub(super) dir: StateDir,
    pub(super) _mark: AgentMark,
    pub(super) metrics_file: Option<PathBuf>,
    /// `NAME` of the `hail@NAME` this agent runs as, for the metrics' `name` label.
    pub(super) instance: Option<String>,
    /// An operator asked for a poll now (`hail retry`, `hail resume`).
    pub(super) poll_now: bool,
}

impl Books {
    /// Awaits `work`, applying operators' requests as they come (a pause asked for during a
    /// deployment is recorded at once; the deployment under way completes).
    pub(super) async fn with_requests<T>(
        &mut self,
        signals: &Signals,
        work: impl Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = signals.requests.notified() => {
                    self.take_requests();
                    self.settle();
                }
            }
        }
    }

    /// Applies the requests waiting in the state directory.
    pub(super) fn take_requests(&mut self) {
        for request in self.dir.take_requests() {
            match request {
                Ok(r) => {
                    info!(hail.event = "request", "operator's request: {r}");
                    if self.state.apply(Timestamp::now(), Event::Control(r)) == Next::PollNow {
                        self.poll_now = true;
                    }
                }
                Err(e) => warn!(hail.event = "request", "{e}"),
            }
        }
    }

    /// Logs what the state noticed, saves it, and writes the metrics. A state that cannot be
    /// saved is said in the journal and saved again at the next change.
    pub(super) fn settle(&mut self) {
        let _ = self.save();
    }

    /// As [`Books::settle`], before a switch: `Err` when the state, which says that a
    /// deployment is under way, could not be saved. Nothing is switched then.
    pub(super) fn settle_before_switch(&mut self) -> Result<(), StateError> {
        self.save()
    }

    /// Logs what the state noticed, saves it, and writes the metrics. A state directory removed
    /// while hail runs is made again (with `agent.pid`, so that control commands still find
    /// this agent). `Err` when the state could not be saved (said in the journal too).
    fn save(&mut self) -> Result<(), StateError> {
        for notice in self.state.take_notices() {
            report::notice(&notice);
        }
        let record = self.state.record();
        let saved = match self.dir.save(record) {
            Ok(Saved::Written) => Ok(()),
            Ok(Saved::DirectoryMadeAgain) => {
                report::state_dir_remade(self.dir.path());
                match self.dir.mark_agent() {
                    Ok(mark) => self._mark = mark,
                    Err(e) => report::not_saved("agent.pid", &e),
                }
                Ok(())
            }
            Err(e) => {
                report::not_saved("state", &e);
                Err(e)
            }
        };
        if let Some(path) = &self.metrics_file
            && let Err(e) = metrics::write(path, record, self.instance.as_deref())
        {
            report::not_saved("metrics", &e);
        }
        saved
    }
}
