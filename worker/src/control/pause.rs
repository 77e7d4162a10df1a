//! Whether the worker takes deliveries. An environment fault of the database
//! (access denied, a missing table or column) pauses it: no schedule can be
//! served, and none is to blame. Tasks trip the pause; the session cancels
//! its consumers; deliveries already held go back to their queue unchanged;
//! a probe resumes consumption when the database answers again.

use std::sync::Arc;
use std::time::Instant;

use celerity_db::DbError;
use tokio::sync::watch;

use crate::meters;

/// Why the worker is paused, and since when.
#[derive(Debug, Clone)]
pub struct Paused {
    /// What is wrong, in full, for the log.
    pub reason: String,
    /// The server's error number, if it gave one.
    pub code: Option<u16>,
    /// When the pause began.
    pub since: Instant,
}

impl Paused {
    /// What `/healthz` says to anyone who asks: the error's number, never
    /// the server's text (it names users, tables and hosts).
    pub fn public(&self) -> String {
        match self.code {
            Some(code) => format!("database environment fault (mysql error {code}); the worker's log has the details"),
            None => "database environment fault; the worker's log has the details".to_owned(),
        }
    }
}

/// Why to pause: the error in full, and its number.
#[derive(Debug, Clone)]
pub struct Fault {
    reason: String,
    code: Option<u16>,
}

impl Fault {
    /// The fault of a database error.
    pub fn database(err: &DbError) -> Fault {
        let code = err.mysql_code().and_then(|c| c.number()).and_then(|n| u16::try_from(n).ok());
        Fault { reason: format!("database: {err}"), code }
    }
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

    /// Pauses for `fault`; returns whether this call paused (it was running).
    pub fn trip(&self, fault: Fault) -> bool {
        let Fault { reason, code } = fault;
        let paused = self.state.send_if_modified(|state| match state {
            Some(_) => false,
            None => {
                *state = Some(Paused { reason: reason.clone(), code, since: Instant::now() });
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
    pub fn update(&self, fault: Fault) {
        self.state.send_if_modified(|state| match state {
            Some(paused) if paused.reason != fault.reason => {
                paused.reason = fault.reason;
                paused.code = fault.code;
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

    fn fault(reason: &str, code: u16) -> Fault {
        Fault { reason: reason.into(), code: Some(code) }
    }

    #[test]
    fn trips_once_keeps_its_clock_and_resumes() {
        let pause = Pause::new();
        assert!(!pause.is_paused());
        assert!(pause.trip(fault("1142: UPDATE denied", 1142)));
        let since = pause.paused().unwrap().since;
        assert!(!pause.trip(fault("another", 1)), "already paused");
        pause.update(fault("1146: no table", 1146));
        let now = pause.paused().unwrap();
        assert_eq!((now.reason.as_str(), now.code), ("1146: no table", Some(1146)));
        assert_eq!(now.since, since);
        assert!(pause.resume().is_some());
        assert!(!pause.is_paused());
        assert!(pause.resume().is_none(), "resuming twice is harmless");
    }

    #[test]
    fn what_anyone_may_read_names_the_number_not_the_servers_text() {
        let paused = Paused {
            reason: "database: UPDATE command denied to user 'celerity'@'10.0.0.7' for table 'schedule_schedule'"
                .into(),
            code: Some(1142),
            since: Instant::now(),
        };
        assert_eq!(paused.public(), "database environment fault (mysql error 1142); the worker's log has the details");
    }
}
