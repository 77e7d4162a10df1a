//! The Celery messages this worker sends of its own: next polls and
//! re-queued callbacks, as Python's `apply_async(kwargs=..., countdown=...)`
//! would send them from this worker.

use broker_proto::{AMQPValue, TaskMessage, Value, eta_after, repr, topology};
use celerity_db::HeldCallback;
use chrono::Utc;

use super::headers::INVOKE_COUNT_HEADER;

/// Who the messages say sent them.
#[derive(Debug, Clone)]
pub struct Sender {
    /// `origin`, `pid@hostname`, as Celery writes it.
    pub origin: String,
    /// `reply_to` (Celery always sets one).
    pub reply_to: String,
}

impl Sender {
    /// This process on `hostname`, with a fresh reply queue name.
    pub fn new(hostname: &str) -> Sender {
        Sender { origin: format!("{}@{hostname}", std::process::id()), reply_to: uuid::Uuid::new_v4().to_string() }
    }

    /// A `schedule` message expecting the row at `invoke_count`, due in `countdown` seconds.
    pub fn schedule(&self, trace_id: &str, invoke_count: i32, countdown: u64) -> TaskMessage {
        let countdown = countdown.min(i64::MAX as u64) as i64;
        let mut m = self.task(topology::SCHEDULE_TASK, &[("trace_id", trace_id)], countdown);
        m.extra_headers.insert(INVOKE_COUNT_HEADER.into(), AMQPValue::LongInt(invoke_count));
        m
    }

    /// A new `callback` task, due in `countdown_secs`, as the framework's
    /// callback API sends it.
    pub fn callback(&self, trace_id: &str, callback_id: &str, callback_data: &str, countdown_secs: i64) -> TaskMessage {
        let kwargs = [("trace_id", trace_id), ("callback_id", callback_id), ("callback_data", callback_data)];
        self.task(topology::CALLBACK_TASK, &kwargs, countdown_secs)
    }

    /// The callback that holds a schedule's `scheduling` lock, sent again
    /// under its own task id, so that it is recognised as the holder.
    pub fn callback_again(&self, held: &HeldCallback) -> TaskMessage {
        let mut m = self.callback(&held.trace_id, &held.callback_id, &held.callback_data, 0);
        m.id.clone_from(&held.task_id);
        m.root_id = Some(held.task_id.clone());
        m.correlation_id = Some(held.task_id.clone());
        m
    }

    /// A new task with string kwargs, due in `countdown_secs`.
    pub fn task(&self, task: &str, kwargs: &[(&str, &str)], countdown_secs: i64) -> TaskMessage {
        let mut m = TaskMessage::new(task, uuid::Uuid::new_v4().to_string());
        for (k, v) in kwargs {
            m.kwargs.insert((*k).to_owned(), Value::String((*v).to_owned()));
        }
        m.argsrepr = Some(repr::args_repr(&m.args));
        m.kwargsrepr = Some(repr::kwargs_repr(&m.kwargs));
        m.origin = Some(self.origin.clone());
        m.reply_to = Some(self.reply_to.clone());
        m.priority = Some(0);
        m.eta = eta_after(Utc::now(), chrono::Duration::seconds(countdown_secs));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::headers::expected_invoke_count;

    #[test]
    fn a_next_poll_says_what_it_expects_and_when_it_is_due() {
        let sender = Sender::new("w@h");
        assert!(sender.origin.ends_with("@w@h"));
        let m = sender.schedule("t", 4, 0);
        assert_eq!(m.task, topology::SCHEDULE_TASK);
        assert_eq!(m.kwarg_str("trace_id"), Some("t"));
        assert_eq!(expected_invoke_count(&m), Some(4));
        assert_eq!(m.eta, None, "countdown 0 gives eta null, as Celery does");
        assert_eq!(m.kwargsrepr.as_deref(), Some("{'trace_id': 't'}"));
        let later = sender.schedule("t", 4, 30);
        let due = later.eta.unwrap().with_timezone(&Utc) - Utc::now();
        assert!((29..=30).contains(&due.num_seconds()), "{due}");
        assert_ne!(m.id, later.id, "every message is a new task");
    }

    #[test]
    fn a_callback_sent_again_keeps_its_task_id() {
        let sender = Sender::new("w@h");
        let held = HeldCallback {
            trace_id: "t".into(),
            task_id: "the-holder".into(),
            callback_id: "cb".into(),
            callback_data: r#"{"n": 1}"#.into(),
        };
        let m = sender.callback_again(&held);
        assert_eq!((m.task.as_str(), m.id.as_str()), (topology::CALLBACK_TASK, "the-holder"));
        assert_eq!((m.root_id.as_deref(), m.correlation_id.as_deref()), (Some("the-holder"), Some("the-holder")));
        assert_eq!(m.kwarg_str("callback_data"), Some(r#"{"n": 1}"#));
        assert_eq!((m.kwarg_str("trace_id"), m.kwarg_str("callback_id"), m.eta), (Some("t"), Some("cb"), None));
    }
}
