//! What operators see of one delivery, recorded in one guard: the in-flight
//! view, the Celery task events, and the metrics. Every path records,
//! including a handler dropped mid-task (shutdown past its grace, a lost
//! connection), so the in-flight gauge and the view never drift.

use std::sync::Arc;
use std::time::Instant;

use broker_proto::TaskMessage;
use chrono::{DateTime, FixedOffset, Utc};

use crate::control::events::Events;
use crate::control::inflight::{Held, InFlight};
use crate::meters;
use crate::tasks::Handled;

/// One delivery routed to a task, from `task-received` to its outcome.
pub struct Tracked {
    task: &'static str,
    msg: Arc<TaskMessage>,
    events: Option<Arc<Events>>,
    held: Held,
    /// When it took a concurrency slot, once it has.
    started: Option<Instant>,
    finished: bool,
}

impl Tracked {
    /// A delivery of `msg` for `task` has arrived: it is reserved in the
    /// in-flight view and `task-received` is sent.
    pub async fn received(
        task: &'static str,
        msg: &Arc<TaskMessage>,
        events: Option<&Arc<Events>>,
        inflight: &Arc<InFlight>,
        (exchange, routing_key, redelivered): (&str, &str, bool),
    ) -> Tracked {
        if let Some(events) = events {
            events.received(msg).await;
        }
        let held = inflight.hold(msg.clone(), exchange, routing_key, redelivered);
        Tracked { task, msg: msg.clone(), events: events.cloned(), held, started: None, finished: false }
    }

    /// Waiting for its eta.
    pub fn scheduled(&self, eta: DateTime<FixedOffset>) {
        self.held.scheduled(eta);
    }

    /// Its eta came; waiting for a slot again.
    pub fn reserved(&self) {
        self.held.reserved();
    }

    /// It holds a concurrency slot and its task starts now.
    pub async fn start(&mut self) {
        self.held.active();
        if let Some(eta) = self.msg.eta {
            let late = (Utc::now() - eta.with_timezone(&Utc)).to_std().unwrap_or_default();
            metrics::histogram!(meters::ETA_LATENESS).record(late);
        }
        metrics::gauge!(meters::IN_FLIGHT).increment(1.0);
        self.started = Some(Instant::now());
        if let Some(events) = &self.events {
            events.started(&self.msg.id).await;
        }
    }

    /// Records how it was handled; a task that ran also gets its duration
    /// and its ending event.
    pub async fn finish(mut self, handled: &Handled) {
        self.finished = true;
        self.record(handled.label());
        if let (Some(started), Some(events)) = (self.started, &self.events) {
            events.ended(&self.msg.id, handled.event(), started.elapsed()).await;
        }
    }

    fn record(&self, outcome: &'static str) {
        metrics::counter!(meters::TASKS, "task" => self.task, "outcome" => outcome).increment(1);
        if let Some(started) = self.started {
            metrics::gauge!(meters::IN_FLIGHT).decrement(1.0);
            metrics::histogram!(meters::POLL_SECONDS, "task" => self.task).record(started.elapsed());
        }
    }
}

impl Drop for Tracked {
    /// A handler stopped before its outcome: counted as interrupted, and the
    /// broker delivers its message again.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.record(Handled::Interrupted.label());
        if let (Some(_), Some(events)) = (self.started, &self.events) {
            events.task_ended();
        }
    }
}
