//! The deliveries this worker holds, as `celery inspect active`, `reserved`
//! and `scheduled` list them: each entry lives from decoding to settlement
//! and goes away when its guard drops, whatever path the delivery takes.
//! Holding costs a map entry; the request fields are rendered only when a
//! command asks for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use broker_proto::{TaskMessage, repr};
use chrono::{DateTime, FixedOffset};
use serde_json::{Value, json};

/// Where a held delivery is.
#[derive(Clone)]
enum Phase {
    /// Waiting for a concurrency slot.
    Reserved,
    /// Waiting for its eta.
    Scheduled(DateTime<FixedOffset>),
    /// Running since this UNIX time.
    Active(f64),
}

/// One held delivery; its request dict is rendered only when asked for.
struct Entry {
    msg: Arc<TaskMessage>,
    exchange: String,
    routing_key: String,
    redelivered: bool,
    phase: Phase,
}

/// The deliveries held now, by task id.
pub struct InFlight {
    hostname: String,
    tasks: Mutex<HashMap<String, Entry>>,
}

/// Removes its entry when dropped.
pub struct Held {
    inflight: Arc<InFlight>,
    id: String,
}

impl InFlight {
    /// No deliveries yet, for the worker called `hostname`.
    pub fn new(hostname: &str) -> InFlight {
        InFlight { hostname: hostname.to_owned(), tasks: Mutex::default() }
    }

    /// Records a delivery as reserved.
    pub fn hold(self: &Arc<Self>, msg: Arc<TaskMessage>, exchange: &str, routing_key: &str, redelivered: bool) -> Held {
        let id = msg.id.clone();
        let entry = Entry {
            msg,
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            redelivered,
            phase: Phase::Reserved,
        };
        self.lock().insert(id.clone(), entry);
        Held { inflight: self.clone(), id }
    }

    /// The entries in `kind` (`active`, `reserved` or `scheduled`), as Celery shows them.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let tasks = self.lock();
        let mut out: Vec<Value> = tasks
            .values()
            .filter_map(|entry| match (kind, &entry.phase) {
                ("reserved", Phase::Reserved) => Some(self.info(entry, None)),
                ("active", Phase::Active(since)) => Some(self.info(entry, Some(*since))),
                ("scheduled", Phase::Scheduled(eta)) => {
                    Some(json!({"eta": eta.to_rfc3339(), "priority": 0, "request": self.info(entry, None)}))
                }
                _ => None,
            })
            .collect();
        out.sort_by_key(|a| a.to_string());
        out
    }

    /// Celery's request fields (`Request.info()`) for one entry.
    fn info(&self, entry: &Entry, time_start: Option<f64>) -> Value {
        let msg = &entry.msg;
        json!({
            "id": msg.id,
            "name": msg.task,
            "args": msg.argsrepr.clone().unwrap_or_else(|| repr::args_repr(&msg.args)),
            "kwargs": msg.kwargsrepr.clone().unwrap_or_else(|| repr::kwargs_repr(&msg.kwargs)),
            "type": msg.task,
            "hostname": self.hostname,
            "time_start": time_start,
            "acknowledged": false,
            "delivery_info": {
                "exchange": entry.exchange,
                "routing_key": entry.routing_key,
                "priority": 0,
                "redelivered": entry.redelivered,
            },
            "worker_pid": std::process::id(),
        })
    }

    fn set(&self, id: &str, phase: Phase) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.phase = phase;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Held {
    /// Waiting for `eta`.
    pub fn scheduled(&self, eta: DateTime<FixedOffset>) {
        self.inflight.set(&self.id, Phase::Scheduled(eta));
    }

    /// Waiting for a slot again (its eta came).
    pub fn reserved(&self) {
        self.inflight.set(&self.id, Phase::Reserved);
    }

    /// Running from now.
    pub fn active(&self) {
        self.inflight.set(&self.id, Phase::Active(super::unix_now()));
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.inflight.lock().remove(&self.id);
    }
}
