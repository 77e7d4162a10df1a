//! The typed Celery task message, whatever protocol version it arrived in.

use amq_protocol_types::FieldTable;
use chrono::{DateTime, FixedOffset};
use indexmap::IndexMap;

use crate::value::Value;

/// Which layout of Celery's message protocol a delivery used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Everything in the body dict; no `task` header.
    V1,
    /// Metadata in headers, body `[args, kwargs, embed]` (Celery >= 4 default).
    V2,
    /// v2 headers with a v1-style dict body, which Celery also accepts.
    Hybrid,
}

/// Workflow links carried with a task (`embed` in protocol v2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Embed {
    /// Signatures to apply on success.
    pub callbacks: Option<Value>,
    /// Signatures to apply on failure.
    pub errbacks: Option<Value>,
    /// Remaining chain, innermost last.
    pub chain: Option<Value>,
    /// Chord body to trigger.
    pub chord: Option<Value>,
}

/// Celery's `timelimit` header: `[hard, soft]` seconds, each optional.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TimeLimit {
    /// Seconds before the task is killed.
    pub hard: Option<f64>,
    /// Seconds before `SoftTimeLimitExceeded` is raised.
    pub soft: Option<f64>,
}

/// The AMQP properties of a delivery that Celery sets or reads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    /// MIME type of the body; only `application/json` is decoded.
    pub content_type: Option<String>,
    /// Text encoding of the body; only `utf-8` is decoded.
    pub content_encoding: Option<String>,
    /// Celery sets this to the task id.
    pub correlation_id: Option<String>,
    /// Result reply queue; `send_task` always sets it.
    pub reply_to: Option<String>,
    /// 0..=255 on the framework's priority queues.
    pub priority: Option<u8>,
    /// 2 = persistent.
    pub delivery_mode: Option<u8>,
    /// Per-message TTL in milliseconds, as text (set from `expires`).
    pub expiration: Option<String>,
    /// The header table.
    pub headers: FieldTable,
}

/// One Celery task request.
///
/// Header fields that Celery defines are typed; anything else a producer put in
/// the headers is kept verbatim in [`TaskMessage::extra_headers`] and sent on
/// again when the task is re-published.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// The layout the message arrived in (encoding always writes v2).
    pub protocol: Protocol,
    /// Registered task name, e.g. [`crate::topology::SCHEDULE_TASK`].
    pub task: String,
    /// Task id; a retry keeps it.
    pub id: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, in the producer's order.
    pub kwargs: IndexMap<String, Value>,
    /// Callbacks, errbacks, chain and chord.
    pub embed: Embed,
    /// How many times this task has been retried.
    pub retries: u32,
    /// Not to be run before this instant.
    pub eta: Option<DateTime<FixedOffset>>,
    /// Not to be run after this instant.
    pub expires: Option<DateTime<FixedOffset>>,
    /// Id of the first task of the workflow.
    pub root_id: Option<String>,
    /// Id of the task that sent this one.
    pub parent_id: Option<String>,
    /// Group id, when part of a group.
    pub group: Option<String>,
    /// Position inside the group.
    pub group_index: Option<i64>,
    /// Name to show instead of the task name.
    pub shadow: Option<String>,
    /// Producer language (`py`).
    pub lang: Option<String>,
    /// `[hard, soft]` time limits.
    pub timelimit: TimeLimit,
    /// Printable form of the args, for monitors.
    pub argsrepr: Option<String>,
    /// Printable form of the kwargs, for monitors.
    pub kwargsrepr: Option<String>,
    /// `pid@hostname` of the producer.
    pub origin: Option<String>,
    /// Whether to store no result; null means false.
    pub ignore_result: bool,
    /// How many times the task was replaced (Celery >= 5.3).
    pub replaced_task_nesting: i64,
    /// Names of stamped headers (Celery >= 5.3 stamping).
    pub stamped_headers: Option<Vec<String>>,
    /// Stamp values (Celery >= 5.3 stamping).
    pub stamps: FieldTable,
    /// AMQP priority property.
    pub priority: Option<u8>,
    /// AMQP `reply_to` property.
    pub reply_to: Option<String>,
    /// AMQP `correlation_id` property (Celery sets it to the id).
    pub correlation_id: Option<String>,
    /// Every header Celery does not define, kept verbatim.
    pub extra_headers: FieldTable,
}

impl TaskMessage {
    /// A new v2 task with Celery's defaults, as `send_task(name, kwargs=...)` builds it.
    pub fn new(task: impl Into<String>, id: impl Into<String>) -> Self {
        let id = id.into();
        TaskMessage {
            protocol: Protocol::V2,
            task: task.into(),
            root_id: Some(id.clone()),
            correlation_id: Some(id.clone()),
            id,
            args: Vec::new(),
            kwargs: IndexMap::new(),
            embed: Embed::default(),
            retries: 0,
            eta: None,
            expires: None,
            parent_id: None,
            group: None,
            group_index: None,
            shadow: None,
            lang: Some("py".into()),
            timelimit: TimeLimit::default(),
            argsrepr: None,
            kwargsrepr: None,
            origin: None,
            ignore_result: false,
            replaced_task_nesting: 0,
            stamped_headers: None,
            stamps: FieldTable::default(),
            priority: None,
            reply_to: None,
            extra_headers: FieldTable::default(),
        }
    }

    /// The keyword argument `name` as a string, if present and a string.
    pub fn kwarg_str(&self, name: &str) -> Option<&str> {
        self.kwargs.get(name).and_then(Value::as_str)
    }
}
