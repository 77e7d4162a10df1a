//! What a plugin app's process supervisor does for its workers: one that
//! exits on its own (not killed by the nemesis) is started again, and the
//! exit is recorded. A Celerity worker must never exit on its own; the
//! framework's Celery worker does (an unrecoverable broker error), and its
//! run goes on, as in production, only because it is restarted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::checker::Verdict;
use super::inject::now_s;
use super::stack::{Stack, WorkerShape};

/// A worker that exited on its own.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Which worker.
    pub worker: usize,
    /// When it was seen gone, epoch seconds.
    pub at: f64,
    /// Its exit status.
    pub status: String,
    /// The last lines it printed.
    pub last_words: String,
}

/// Watches the workers until `stop`, restarting each that exits on its own.
pub fn watch(stack: &Stack, shape: WorkerShape, stop: &AtomicBool) -> Vec<Exit> {
    let mut exits = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for i in 0..stack.workers.len() {
            // Held across the check: a fault's kill holds the same lock
            // until it has reaped its process, so that is never taken for
            // an exit.
            let mut slot = stack.workers[i].lock().expect("worker slot");
            let Some(child) = slot.child.as_mut() else { continue };
            let Some(status) = child.exited() else { continue };
            let log = child.log();
            let last_words = log.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>();
            exits.push(Exit { worker: i, at: now_s(), status: status.to_string(), last_words: last_words.join(" | ") });
            drop(slot);
            stack.start_worker(i, shape);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    exits
}

/// The verdict on the workers' own exits: none passes.
pub fn verdict(exits: &[Exit]) -> Verdict {
    Verdict {
        check: "exits",
        pass: Some(exits.is_empty()),
        detail: format!("{} worker exits on their own (each restarted, as a supervisor would)", exits.len()),
        examples: exits
            .iter()
            .take(5)
            .map(|e| format!("worker {} at {:.0}: {}; {}", e.worker, e.at, e.status, e.last_words))
            .collect(),
        figures: serde_json::json!({
            "count": exits.len(),
            "exits": exits.iter().map(|e| serde_json::json!({"worker": e.worker, "at": e.at, "status": e.status})).collect::<Vec<_>>(),
        }),
    }
}
