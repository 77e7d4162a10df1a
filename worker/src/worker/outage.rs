//! While an environment fault pauses the worker, a probe tries the database
//! every few seconds with every kind of statement a poll runs; when they all
//! pass, consumption resumes by itself. What is still wrong is logged at most
//! every [`LOG_EVERY`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use celerity_db::{Db, repo};

use crate::control::pause::{Fault, Pause};

/// How often a paused worker tries the database.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(3);
/// Least time between two error lines about one pause.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// Probes while paused and resumes when the database is usable; runs for
/// the worker's life.
pub async fn watch_over(db: Db, pause: Arc<Pause>) {
    let mut changes = pause.watch();
    loop {
        if changes.wait_for(Option::is_some).await.is_err() {
            return;
        }
        let mut logged = Instant::now();
        while pause.is_paused() {
            tokio::time::sleep(PROBE_INTERVAL).await;
            match db.call(repo::probe).await {
                Ok(()) => {
                    if let Some(lasted) = pause.resume() {
                        tracing::warn!(paused_for = ?lasted, "the database is usable again; consuming resumes");
                    }
                }
                Err(e) => {
                    if logged.elapsed() >= LOG_EVERY {
                        tracing::error!(error = %e, class = e.class().as_str(), "still paused: the database is not usable");
                        logged = Instant::now();
                    }
                    pause.update(Fault::database(&e));
                }
            }
        }
    }
}
