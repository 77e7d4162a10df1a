//! Whether the worker takes deliveries. An environment fault of the database
//! (access denied, a missing table or column) pauses it: no schedule can be
//! served, and none is to blame. Tasks trip the pause; the session cancels
//! its consumers; deliveries already held go back to their queue unchanged;
//! a probe resumes consumption when the database answers again.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::meters;

/// Why the worker is paused, and since when.
#[derive(Debug, Clone)]
pub struct Paused {
    /// What is wrong, for `/healthz` and the log.
    pub reason: String,
    /// When the pause began.
    pub since: Instant,
}

/// The pause switch every task and the session share.
#[derive(Debug)]
pub struct Pause {
    state: watch::Sender<Option<Paused>>,
}

impl Pause {
    /// A switch that lets deliveries through.
    pub fn new() -> Arc<Pause> {
        metrics::gauge!(meters::PAUSED).set(0.0);
        Arc::new(Pause { state: watch::Sender::new(None) })
    }

    /// Pauses for `reason`; returns whether this call paused (it was running).
    pub fn trip(&self, reason: String) -> bool {
        let paused = self.state.send_if_modified(|state| match state {
            Some(_) => false,
            None => {
                *state = Some(Paused { reason: reason.clone(), since: Instant::now() });
                true
            }
        });
        if paused {
            metrics::gauge!(meters::PAUSED).set(1.0);
            tracing::error!(%reason, "environment fault: no delivery is taken until the database is usable again");
        }
        paused
    }

    /// Records a newer reason without restarting the pause's clock.
    pub fn update(&self, reason: String) {
        self.state.send_if_modified(|state| match state {
            Some(paused) if paused.reason != reason => {
                paused.reason = reason;
                true
            }
            _ => false,
        });
    }

    /// Lets deliveries through again; returns how long the pause lasted.
    pub fn resume(&self) -> Option<std::time::Duration> {
        let mut lasted = None;
        self.state.send_if_modified(|state| {
            lasted = state.take().map(|p| p.since.elapsed());
            lasted.is_some()
        });
        if lasted.is_some() {
            metrics::gauge!(meters::PAUSED).set(0.0);
        }
        lasted
    }

    /// Why it is paused, or `None` while deliveries go through.
    pub fn paused(&self) -> Option<Paused> {
        self.state.borrow().clone()
    }

    /// Whether it is paused now.
    pub fn is_paused(&self) -> bool {
        self.state.borrow().is_some()
    }

    /// A receiver that sees every change.
    pub fn watch(&self) -> watch::Receiver<Option<Paused>> {
        self.state.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_once_keeps_its_clock_and_resumes() {
        let pause = Pause::new();
        assert!(!pause.is_paused());
        assert!(pause.trip("1142: UPDATE denied".into()));
        let since = pause.paused().unwrap().since;
        assert!(!pause.trip("another".into()), "already paused");
        pause.update("1146: no table".into());
        let now = pause.paused().unwrap();
        assert_eq!(now.reason, "1146: no table");
        assert_eq!(now.since, since);
        assert!(pause.resume().is_some());
        assert!(!pause.is_paused());
        assert!(pause.resume().is_none(), "resuming twice is harmless");
    }
}
