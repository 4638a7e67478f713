//! Signals: SIGTERM/SIGINT stop hail, SIGHUP asks for a poll now, SIGUSR1 says an operator's
//! request waits in the state directory.

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use super::AgentError;

/// SIGHUP (poll now) and SIGUSR1 (an operator's request is waiting).
#[derive(Default)]
pub(super) struct Signals {
    pub(super) poll_now: Notify,
    pub(super) requests: Notify,
}

/// SIGTERM/SIGINT set the stop flag; SIGHUP asks for a poll now; SIGUSR1 says an operator's
/// request waits in the state directory.
pub(super) fn listen_for_signals() -> Result<(watch::Receiver<bool>, Arc<Signals>), AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(AgentError::Signals)?;
    let (tx, rx) = watch::channel(false);
    let signals = Arc::new(Signals::default());
    let notify = signals.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { let _ = tx.send(true); }
                _ = int.recv() => { let _ = tx.send(true); }
                _ = hup.recv() => notify.poll_now.notify_one(),
                _ = usr1.recv() => notify.requests.notify_one(),
            }
        }
    });
    Ok((rx, signals))
}

/// Resolves once the stop flag is set.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
