//! Sending parked messages again: each is published with confirms, due at
//! its own eta (now if that has passed), and only then removed from
//! `celerity_parked`. A crash in between sends it twice; the copy that
//! finds the schedule moved on is dropped as stale.

use celerity_db::{Db, Parked, operator};

use crate::broker::Publish;
use crate::tasks::parking;

/// How a resend went.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sent {
    /// Messages sent and removed.
    pub sent: usize,
    /// What went wrong with the others.
    pub failed: Vec<String>,
}

impl Sent {
    /// One line on what was not sent, if anything.
    pub fn problem(&self) -> Option<String> {
        match self.failed.as_slice() {
            [] => None,
            [one] => Some(format!("1 parked message not sent yet: {one}")),
            [first, ..] => Some(format!("{} parked messages not sent yet; the first: {first}", self.failed.len())),
        }
    }
}

/// Sends `parked` again and removes each one sent.
pub async fn resend(db: &Db, publisher: &impl Publish, parked: &[Parked]) -> Sent {
    let mut out = Sent::default();
    for p in parked {
        let msg = match parking::from_text(&p.message) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::error!(trace_id = %p.trace_id, task_id = %p.task_id, error = %e, "a parked message cannot be read; it stays parked");
                out.failed.push(format!("{}: {e}", p.task_id));
                continue;
            }
        };
        if let Err(e) = publisher.publish_task_to_queue(&p.queue, &msg).await {
            out.failed.push(format!("{}: {e}", p.task_id));
            continue;
        }
        let (trace_id, task_id) = (p.trace_id.clone(), p.task_id.clone());
        match db.call(move |c| operator::unpark(c, &trace_id, &task_id)).await {
            Ok(()) => out.sent += 1,
            // Sent: a later resend makes a duplicate, which is dropped as stale.
            Err(e) => out.failed.push(format!("{}: sent, but not removed from the table: {e}", p.task_id)),
        }
    }
    out
}
