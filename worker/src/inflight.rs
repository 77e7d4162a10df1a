//! The deliveries this worker holds, as `celery inspect active`, `reserved`
//! and `scheduled` list them: each entry lives from decoding to settlement
//! and goes away when its guard drops, whatever path the delivery takes.

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

/// The deliveries held now, by task id.
#[derive(Default)]
pub struct InFlight {
    tasks: Mutex<HashMap<String, (Value, Phase)>>,
}

/// Removes its entry when dropped.
pub struct Held {
    inflight: Arc<InFlight>,
    id: String,
}

impl InFlight {
    /// Records a delivery as reserved, with Celery's request fields.
    pub fn hold(
        self: &Arc<Self>,
        msg: &TaskMessage,
        exchange: &str,
        routing_key: &str,
        redelivered: bool,
        hostname: &str,
    ) -> Held {
        let info = json!({
            "id": msg.id,
            "name": msg.task,
            "args": msg.argsrepr.clone().unwrap_or_else(|| repr::args_repr(&msg.args)),
            "kwargs": msg.kwargsrepr.clone().unwrap_or_else(|| repr::kwargs_repr(&msg.kwargs)),
            "type": msg.task,
            "hostname": hostname,
            "time_start": null,
            "acknowledged": false,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key, "priority": 0, "redelivered": redelivered},
            "worker_pid": std::process::id(),
        });
        self.lock().insert(msg.id.clone(), (info, Phase::Reserved));
        Held { inflight: self.clone(), id: msg.id.clone() }
    }

    /// The entries in `kind` (`active`, `reserved` or `scheduled`), as Celery shows them.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let tasks = self.lock();
        let mut out: Vec<Value> = tasks
            .values()
            .filter_map(|(info, phase)| match (kind, phase) {
                ("reserved", Phase::Reserved) => Some(info.clone()),
                ("active", Phase::Active(since)) => {
                    let mut info = info.clone();
                    info["time_start"] = json!(since);
                    Some(info)
                }
                ("scheduled", Phase::Scheduled(eta)) => {
                    Some(json!({"eta": eta.to_rfc3339(), "priority": 0, "request": info}))
                }
                _ => None,
            })
            .collect();
        out.sort_by_key(|a| a.to_string());
        out
    }

    fn set(&self, id: &str, phase: Phase) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.1 = phase;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Value, Phase)>> {
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
        self.inflight.set(&self.id, Phase::Active(crate::amqp::unix_now()));
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.inflight.lock().remove(&self.id);
    }
}
