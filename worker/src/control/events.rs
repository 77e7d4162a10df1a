//! Celery events on the `celeryev` topic exchange, as Celery's
//! `EventDispatcher` sends them, so Flower and `celery events` see the
//! worker: JSON bodies with `type`, `hostname`, `timestamp`, `utcoffset`,
//! `pid` and `clock`, routing key = type with `-` as `.`, transient, header
//! `hostname`. Events are best effort, as in Celery: one that cannot be
//! sent is dropped.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use broker_proto::{TaskMessage, repr};
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};
use serde_json::{Map, Value, json};

use super::unix_now;
use crate::broker::BrokerError;
use crate::broker::properties::json_transient;

/// Celery's event exchange.
pub const EXCHANGE: &str = "celeryev";
/// Celery's heartbeat interval.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// The worker's event dispatcher.
pub struct Events {
    channel: Channel,
    hostname: String,
    enabled: AtomicBool,
    clock: AtomicU64,
    active: AtomicI64,
    processed: AtomicU64,
}

impl Events {
    /// Declares `celeryev` on its own channel of `conn`.
    pub async fn start(conn: &Connection, hostname: &str, enabled: bool) -> Result<Events, BrokerError> {
        let channel = conn.create_channel().await?;
        // kombu's Exchange('celeryev', type='topic'): durable, not auto-delete.
        channel
            .exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        Ok(Events {
            channel,
            hostname: hostname.to_owned(),
            enabled: AtomicBool::new(enabled),
            clock: AtomicU64::new(0),
            active: AtomicI64::new(0),
            processed: AtomicU64::new(0),
        })
    }

    /// Turns sending on or off (the `enable_events` / `disable_events` commands).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether events are being sent.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Counts a task starting (for the heartbeat's `active`).
    pub fn task_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a task ending (`active` down, `processed` up).
    pub fn task_ended(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.processed.fetch_add(1, Ordering::Relaxed);
    }

    /// A worker event (`worker-online`, `-heartbeat`, `-offline`) with the
    /// fields Celery's heartbeat carries.
    pub async fn worker(&self, kind: &str) {
        let fields = json!({
            "freq": HEARTBEAT.as_secs_f64(),
            "active": self.active.load(Ordering::Relaxed).max(0),
            "processed": self.processed.load(Ordering::Relaxed),
            "loadavg": loadavg(),
            "sw_ident": "celerity",
            "sw_ver": env!("CARGO_PKG_VERSION"),
            "sw_sys": std::env::consts::OS,
        });
        self.send(kind, fields).await;
    }

    /// Sends `kind` with `fields` unless events are off.
    pub async fn send(&self, kind: &str, fields: Value) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut event = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        event.insert("type".into(), kind.into());
        event.insert("hostname".into(), self.hostname.clone().into());
        event.insert("timestamp".into(), unix_now().into());
        event.insert("utcoffset".into(), utcoffset().into());
        event.insert("pid".into(), std::process::id().into());
        event.insert("clock".into(), (self.clock.fetch_add(1, Ordering::Relaxed) + 1).into());
        let mut headers = FieldTable::default();
        headers.insert("hostname".into(), AMQPValue::LongString(LongString::from(self.hostname.as_str())));
        let body = Value::Object(event).to_string();
        let routing_key = kind.replace('-', ".");
        let sent = self
            .channel
            .basic_publish(
                EXCHANGE.into(),
                routing_key.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                json_transient(headers),
            )
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, kind, "event not sent");
        }
    }
}

impl Events {
    /// `task-received`, with the fields Celery's consumer sends.
    pub async fn received(&self, msg: &TaskMessage) {
        // The fields cost two reprs: none of it when nobody listens.
        if !self.enabled() {
            return;
        }
        let fields = json!({
            "uuid": msg.id,
            "name": msg.task,
            "args": msg.argsrepr.clone().unwrap_or_else(|| repr::args_repr(&msg.args)),
            "kwargs": msg.kwargsrepr.clone().unwrap_or_else(|| repr::kwargs_repr(&msg.kwargs)),
            "root_id": msg.root_id,
            "parent_id": msg.parent_id,
            "retries": msg.retries,
            "eta": msg.eta.map(|t| t.to_rfc3339()),
            "expires": msg.expires.map(|t| t.to_rfc3339()),
        });
        self.send("task-received", fields).await;
    }

    /// `task-started`.
    pub async fn started(&self, id: &str) {
        self.task_started();
        self.send("task-started", json!({"uuid": id})).await;
    }

    /// The event of how a task ended.
    pub async fn ended(&self, id: &str, end: TaskEnd, runtime: Duration) {
        self.task_ended();
        let (kind, fields) = match end {
            TaskEnd::Succeeded => {
                ("task-succeeded", json!({"uuid": id, "result": "None", "runtime": runtime.as_secs_f64()}))
            }
            TaskEnd::Retried => {
                ("task-retried", json!({"uuid": id, "exception": "transient database error", "traceback": ""}))
            }
            TaskEnd::Failed(how) => ("task-failed", json!({"uuid": id, "exception": how, "traceback": ""})),
            TaskEnd::Rejected => ("task-rejected", json!({"uuid": id, "requeue": true})),
        };
        self.send(kind, fields).await;
    }
}

/// How a task ended, as Celery's events tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// `task-succeeded`: the schedule task returns nothing, whatever state
    /// the plugin left.
    Succeeded,
    /// `task-retried`: a transient database error; the message comes again.
    Retried,
    /// `task-failed`, with what failed: the Python task would have raised.
    Failed(&'static str),
    /// `task-rejected`: handed back to the broker.
    Rejected,
}

/// Celery's `utcoffset()`: hours west of UTC.
fn utcoffset() -> i64 {
    -i64::from(chrono::Local::now().offset().local_minus_utc()) / 3600
}

/// The 1, 5 and 15 minute load averages, as Celery reports them.
fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| text.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}
