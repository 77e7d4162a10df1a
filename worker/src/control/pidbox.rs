//! Celery remote control: the worker's mailbox on `celery.pidbox`, so
//! `celery inspect` and Flower reach it as they reach a Python worker.
//!
//! As kombu's `Mailbox`/`Node` do with Celery's defaults: a fanout exchange
//! `celery.pidbox` (not durable), a queue `<hostname>.celery.pidbox` (not
//! durable, auto-delete, `x-message-ttl` 300 s, `x-expires` 10 s) consumed
//! without acks; requests are JSON `{method, arguments, destination,
//! pattern, matcher, ticket?, reply_to?}`, and a reply goes to `reply_to`'s
//! exchange and routing key as JSON `{hostname: reply}` with the headers
//! `ticket` and `clock`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};
use serde_json::{Value, json};
use wildmatch::WildMatch;

use broker_proto::{header, topology};

use super::events::Events;
use super::inflight::InFlight;
use super::unix_now;
use crate::broker::BrokerError;
use crate::broker::properties::json_transient;
use crate::config::WorkerConfig;

/// The control exchange (Celery's `control_exchange` = `celery`).
pub const EXCHANGE: &str = "celery.pidbox";
/// Largest request read: `celery inspect` and `celery control` send a few
/// hundred bytes; anyone who can publish on the vhost can send more.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest node pattern matched: node names are host names with a prefix,
/// far shorter; a longer pattern addresses no node. With it the matching
/// (linear, no recursion) stays microseconds on a runtime thread.
const MAX_PATTERN_CHARS: usize = 1024;
/// Celery's `control_queue_ttl` (300 s) and `control_queue_expires` (10 s), in ms.
const QUEUE_TTL_MS: i64 = 300_000;
const QUEUE_EXPIRES_MS: i64 = 10_000;

/// What runs the plugins, for `registered` and `stats`: given by the
/// worker, read at each request (hosts come and go).
pub type PluginsReport = Arc<dyn Fn() -> PluginsView + Send + Sync>;

/// The plugins as `celery inspect` shows them.
#[derive(Debug, Clone, Default)]
pub struct PluginsView {
    /// One line per version: `plugin VERSION (python: module.Class)`.
    pub registered: Vec<String>,
    /// The pool's details for `stats` (`pool.plugins`).
    pub stats: Value,
}

/// What the mailbox answers about this worker.
struct Node {
    hostname: String,
    concurrency: usize,
    prefetch: u16,
    queues: Vec<String>,
    events: Option<Arc<Events>>,
    inflight: Arc<InFlight>,
    plugins: PluginsReport,
    started: Instant,
    /// Celery's logical clock: raised past every clock seen, forwarded on each reply.
    clock: AtomicU64,
}

/// The mailbox queue's name for `hostname`.
pub fn queue_name(hostname: &str) -> String {
    format!("{hostname}.celery.pidbox")
}

/// Declares the mailbox on its own channel of `conn` and answers requests
/// until the connection ends.
pub async fn start(
    conn: &Connection,
    config: &WorkerConfig,
    prefetch: u16,
    events: Option<Arc<Events>>,
    inflight: Arc<InFlight>,
    plugins: PluginsReport,
) -> Result<tokio::task::JoinHandle<()>, BrokerError> {
    let channel = conn.create_channel().await?;
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: false, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let queue = queue_name(&config.hostname);
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(QUEUE_TTL_MS));
    args.insert("x-expires".into(), AMQPValue::LongLongInt(QUEUE_EXPIRES_MS));
    channel
        .queue_declare(
            queue.as_str().into(),
            // Exclusive, as kombu declares it now: RabbitMQ 4.3 refuses
            // transient queues that are not.
            QueueDeclareOptions { durable: false, auto_delete: true, exclusive: true, ..Default::default() },
            args,
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            format!("{}.pidbox", config.hostname).as_str().into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let node = Arc::new(Node {
        hostname: config.hostname.clone(),
        concurrency: config.concurrency,
        prefetch,
        queues: config.consumed_queues(),
        events,
        inflight,
        plugins,
        started: Instant::now(),
        clock: AtomicU64::new(0),
    });
    Ok(tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let headers = delivery.properties.headers().as_ref().map(FieldTable::inner);
            let clock = headers.and_then(|h| h.get("clock")).and_then(header::as_int);
            if let Some(seen) = clock.and_then(|c| u64::try_from(c).ok()) {
                node.clock.fetch_max(seen, Ordering::Relaxed);
            }
            let expires = headers.and_then(|h| h.get("expires")).and_then(header::as_float);
            if expires.is_some_and(|at| at > 0.0 && unix_now() > at) {
                continue;
            }
            if delivery.data.len() > MAX_REQUEST_BYTES {
                tracing::warn!(bytes = delivery.data.len(), "remote control message too large; ignored");
                continue;
            }
            match serde_json::from_slice::<Value>(&delivery.data) {
                Ok(request) => handle(&node, &channel, &request).await,
                Err(e) => tracing::warn!(error = %e, "remote control message is not JSON; ignored"),
            }
        }
    }))
}

/// Runs one request addressed to this node and sends the reply it asks for.
async fn handle(node: &Node, channel: &Channel, request: &Value) {
    if !addressed_to(&node.hostname, request) {
        return;
    }
    let method = request.get("method").and_then(Value::as_str).unwrap_or_default();
    if method == "heartbeat"
        && let Some(events) = &node.events
    {
        events.worker("worker-heartbeat").await;
    }
    let Some(reply) = answer(node, method) else {
        tracing::info!(method, "unknown remote control command; ignored");
        return;
    };
    let (Some(to), Some(ticket)) = (request.get("reply_to"), request.get("ticket").and_then(Value::as_str)) else {
        return;
    };
    let exchange = to.get("exchange").and_then(Value::as_str).unwrap_or_default();
    let routing_key = to.get("routing_key").and_then(Value::as_str).unwrap_or_default();
    let body = json!({ node.hostname.clone(): reply }).to_string();
    let mut headers = FieldTable::default();
    headers.insert("ticket".into(), AMQPValue::LongString(LongString::from(ticket)));
    let clock = node.clock.fetch_add(1, Ordering::Relaxed) + 1;
    headers.insert("clock".into(), AMQPValue::LongLongInt(i64::try_from(clock).unwrap_or(i64::MAX)));
    let sent = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            json_transient(headers),
        )
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, method, "remote control reply not sent");
    }
}

/// kombu's rule: a destination list names the node, or a pattern matches
/// it, or the request is for every node.
fn addressed_to(hostname: &str, request: &Value) -> bool {
    match request.get("destination").and_then(Value::as_array) {
        Some(names) if !names.is_empty() => names.iter().any(|n| n.as_str() == Some(hostname)),
        _ => match (request.get("pattern").and_then(Value::as_str), request.get("matcher").and_then(Value::as_str)) {
            (Some(pattern), Some("glob")) => glob(pattern, hostname),
            (Some(_), Some(_)) => false,
            _ => true,
        },
    }
}

/// `*` and `?` globbing, enough for node names, as Celery's `fnmatch`
/// without character classes; a pattern past [`MAX_PATTERN_CHARS`] matches
/// nothing.
fn glob(pattern: &str, text: &str) -> bool {
    pattern.chars().count() <= MAX_PATTERN_CHARS && WildMatch::new(pattern).matches(text)
}

/// The reply to `method`, or `None` for a command this worker does not know.
fn answer(node: &Node, method: &str) -> Option<Value> {
    Some(match method {
        "ping" => json!({"ok": "pong"}),
        "active" | "reserved" | "scheduled" => Value::Array(node.inflight.list(method)),
        // The settings a Celery operator looks for, without any URL (credentials).
        "conf" => json!({
            "worker_concurrency": node.concurrency,
            "worker_prefetch_multiplier": 1,
            "task_queues": node.queues,
            "worker_send_task_events": node.events.as_ref().is_some_and(|e| e.enabled()),
        }),
        // Celery's `heartbeat` command: the event is sent by `handle`; no reply value.
        "heartbeat" => Value::Null,
        "enable_events" | "disable_events" => {
            let on = method == "enable_events";
            if let Some(events) = &node.events {
                events.set_enabled(on);
            }
            json!({"ok": if on { "task events enabled" } else { "task events disabled" }})
        }
        // Celery lists task names; the plugin versions follow, one line each.
        "registered" => {
            let mut names: Vec<Value> =
                [topology::CALLBACK_TASK, topology::DELETE_TASK, topology::SCHEDULE_TASK].map(Value::from).to_vec();
            names.extend((node.plugins)().registered.into_iter().map(Value::from));
            Value::Array(names)
        }
        // Queues as kombu's `Queue.as_dict` shows them, the fields Flower reads.
        "active_queues" => Value::Array(
            node.queues
                .iter()
                .map(|q| {
                    let own = q.starts_with("celerity.");
                    json!({
                        "name": q,
                        "exchange": {"name": if own { "" } else { topology::EXCHANGE }, "type": "direct"},
                        "routing_key": q,
                        "durable": true,
                        "exclusive": false,
                        "auto_delete": false,
                        "no_ack": false,
                    })
                })
                .collect(),
        ),
        "stats" => json!({
            "pid": std::process::id(),
            "clock": node.clock.load(Ordering::Relaxed).to_string(),
            "uptime": node.started.elapsed().as_secs(),
            "prefetch_count": node.prefetch,
            "pool": {
                "implementation": "celerity (tokio)",
                "max-concurrency": node.concurrency,
                "plugins": (node.plugins)().stats,
            },
            "broker": {"transport": "amqp"},
            "sw_ident": "celerity",
            "sw_ver": env!("CARGO_PKG_VERSION"),
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_reach_the_nodes_kombu_would_dispatch_to() {
        let me = "celerity@host";
        assert!(addressed_to(me, &json!({"destination": null})));
        assert!(addressed_to(me, &json!({"destination": ["a@b", me]})));
        assert!(!addressed_to(me, &json!({"destination": ["a@b"]})));
        assert!(addressed_to(me, &json!({"destination": null, "pattern": "celerity@*", "matcher": "glob"})));
        assert!(!addressed_to(me, &json!({"destination": null, "pattern": "python@*", "matcher": "glob"})));
    }

    #[test]
    fn hostile_patterns_address_no_node_and_cost_nothing() {
        let me = "celerity@worker-1";
        // A recursive matcher overflowed the stack on this one.
        let stars = "*".repeat(200_000);
        assert!(!addressed_to(me, &json!({"pattern": stars, "matcher": "glob"})), "too long to be a node pattern");
        // And backtracked exponentially on this one.
        let long_name = format!("celerity@{}", "a".repeat(200));
        let backtracking = format!("{}b", "*a".repeat(400));
        assert!(!glob(&backtracking, &long_name));
        assert!(glob(&"*a".repeat(200), &long_name), "still a glob");
        assert!(glob("celerity@worker-?", me));
        assert!(glob(&format!("{}celerity@worker-1", "*".repeat(1000)), me), "a long but allowed pattern");
    }

    #[test]
    fn ping_pongs_and_unknown_commands_have_no_answer() {
        let node = Node {
            hostname: "n@h".into(),
            concurrency: 4,
            prefetch: 8,
            queues: vec!["plugin_schedule".into(), "celerity.schedule".into()],
            events: None,
            inflight: Arc::new(InFlight::new("n@h")),
            plugins: Arc::new(|| PluginsView {
                registered: vec!["plugin 1.0.0 (rust: example)".into()],
                stats: json!({"versions": 1}),
            }),
            started: Instant::now(),
            clock: 0.into(),
        };
        assert_eq!(answer(&node, "ping"), Some(json!({"ok": "pong"})));
        assert_eq!(answer(&node, "stats").unwrap()["pool"]["max-concurrency"], json!(4));
        let registered = answer(&node, "registered").unwrap();
        assert_eq!(registered.as_array().unwrap().len(), 4);
        assert_eq!(registered[3], "plugin 1.0.0 (rust: example)");
        assert_eq!(answer(&node, "stats").unwrap()["pool"]["plugins"]["versions"], 1);
        let queues = answer(&node, "active_queues").unwrap();
        assert_eq!(queues[0]["name"], "plugin_schedule");
        assert_eq!(queues[0]["exchange"]["name"], "default");
        assert_eq!(queues[1]["exchange"]["name"], "");
        assert_eq!(answer(&node, "active"), Some(json!([])));
        assert_eq!(answer(&node, "conf").unwrap()["worker_concurrency"], 4);
        assert_eq!(answer(&node, "shutdown"), None);
    }
}
