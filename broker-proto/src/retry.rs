//! Re-publishing a task the way Celery's `Task.retry` does: the same id, one
//! more retry, a new eta, everything else as it was.

use chrono::{DateTime, Duration, FixedOffset, SubsecRound, Utc};

use crate::message::{Protocol, TaskMessage};

/// The eta for a countdown, as Celery computes it: `now + countdown`, or no
/// eta at all for a zero countdown. Kept to microseconds, the precision
/// Python's datetime carries, so the eta sent is the eta held.
pub fn eta_after(now: DateTime<Utc>, countdown: Duration) -> Option<DateTime<FixedOffset>> {
    (countdown > Duration::zero()).then(|| (now + countdown).trunc_subsecs(6).fixed_offset())
}

impl TaskMessage {
    /// The retry of this task: same id, `retries + 1`, the given eta.
    ///
    /// Like Celery's `Task.retry`, the retry's `parent_id` is the task's own id
    /// (the run that asked for it); everything else is kept. It is always
    /// written as protocol v2, whatever the original used.
    pub fn retried(&self, eta: Option<DateTime<FixedOffset>>) -> TaskMessage {
        TaskMessage {
            protocol: Protocol::V2,
            retries: self.retries.saturating_add(1),
            eta,
            parent_id: Some(self.id.clone()),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_keeps_identity_and_bumps_count() {
        let mut m = TaskMessage::new("t", "id-1");
        m.retries = 2;
        let now = Utc::now();
        let r = m.retried(eta_after(now, Duration::seconds(20)));
        assert_eq!(r.id, "id-1");
        assert_eq!(r.retries, 3);
        assert_eq!(r.eta.unwrap(), (now + Duration::seconds(20)).trunc_subsecs(6));
        assert_eq!(r.parent_id.as_deref(), Some("id-1"));
        assert_eq!(TaskMessage { retries: 2, eta: None, parent_id: None, ..r }, m);
        assert_eq!(eta_after(now, Duration::zero()), None);
    }
}
