//! Reading a delivery (properties + body) into a [`TaskMessage`].
//!
//! The protocol is told apart the way Celery's consumer does: a `task` header
//! means v2, unless the body is a dict with `args` (the hybrid form); no `task`
//! header means v1, where everything is in the body dict.

use amq_protocol_types::{AMQPValue, FieldTable};
use chrono::{DateTime, FixedOffset};
use chrono_tz::Tz;
use indexmap::IndexMap;

use crate::budget::{self, DEFAULT_MAX_VALUES};
use crate::compression;
use crate::error::DecodeError;
use crate::header::{self, as_float, as_int, as_text};
use crate::message::{Embed, Properties, Protocol, TaskMessage, TimeLimit};
use crate::repr;
use crate::time;
use crate::value::{Value, truncate};

/// Largest body accepted, before and after inflating: far above any task the
/// framework sends (a trace id and a callback payload), low enough that a
/// hostile or broken producer cannot exhaust a worker's memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Settings for [`decode`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeOptions {
    /// Bodies above this many bytes (compressed or inflated) are refused.
    pub max_body_bytes: usize,
    /// Bodies holding more JSON values than this are refused unparsed.
    pub max_values: usize,
    /// Zone for `eta`/`expires` written without an offset (Celery with `enable_utc = False`).
    pub naive_zone: Tz,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_body_bytes: DEFAULT_MAX_BODY_BYTES, max_values: DEFAULT_MAX_VALUES, naive_zone: Tz::UTC }
    }
}

/// Header names Celery defines; everything else is kept in `extra_headers`.
const KNOWN_HEADERS: [&str; 19] = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

/// The header saying how the body was compressed; consumed by decoding.
const COMPRESSION_HEADER: &str = "compression";

/// Decodes one delivery. Never panics; every refusal says what is wrong.
pub fn decode(props: &Properties, body: &[u8], opts: &DecodeOptions) -> Result<TaskMessage, DecodeError> {
    if body.len() > opts.max_body_bytes {
        return Err(DecodeError::TooLarge { limit: opts.max_body_bytes });
    }
    check_content_type(props)?;
    let inflated;
    let body = match props.headers.inner().get(COMPRESSION_HEADER) {
        None | Some(AMQPValue::Void) => body,
        Some(codec) => {
            let codec = as_text(codec).ok_or_else(|| DecodeError::invalid(COMPRESSION_HEADER, "expected a string"))?;
            inflated = compression::inflate(codec, body, opts.max_body_bytes)?;
            &inflated
        }
    };
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
    if budget::values_at_most(text) > opts.max_values {
        return Err(DecodeError::TooManyValues { limit: opts.max_values });
    }
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;

    let has_task_header = props.headers.contains_key("task");
    match json {
        serde_json::Value::Object(dict) if !has_task_header || dict.contains_key("args") => {
            let protocol = if has_task_header { Protocol::Hybrid } else { Protocol::V1 };
            decode_dict_body(protocol, props, dict, opts)
        }
        _ if !has_task_header => {
            Err(DecodeError::BodyShape("no 'task' header, and the body is not a protocol v1 dict".into()))
        }
        serde_json::Value::Array(parts) => decode_v2_body(props, parts, opts),
        other => Err(DecodeError::BodyShape(format!(
            "protocol v2 body must be [args, kwargs, embed], got {}",
            truncate(&other.to_string())
        ))),
    }
}

fn check_content_type(props: &Properties) -> Result<(), DecodeError> {
    let content_type = props.content_type.as_deref().unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(DecodeError::UnsupportedContentType(content_type.to_owned()));
    }
    match props.content_encoding.as_deref() {
        None => Ok(()),
        Some(enc) if enc.eq_ignore_ascii_case("utf-8") || enc.eq_ignore_ascii_case("utf8") => Ok(()),
        Some(enc) => Err(DecodeError::UnsupportedContentEncoding(enc.to_owned())),
    }
}

fn decode_v2_body(
    props: &Properties,
    parts: Vec<serde_json::Value>,
    opts: &DecodeOptions,
) -> Result<TaskMessage, DecodeError> {
    let [args, kwargs, embed]: [serde_json::Value; 3] = parts.try_into().map_err(|parts: Vec<_>| {
        DecodeError::BodyShape(format!("protocol v2 body must have 3 items [args, kwargs, embed], got {}", parts.len()))
    })?;
    let args = read_args(args)?;
    let kwargs = read_kwargs(kwargs)?;
    let embed = match embed {
        serde_json::Value::Null => Embed::default(),
        serde_json::Value::Object(mut map) => Embed {
            callbacks: take_value(&mut map, "callbacks")?,
            errbacks: take_value(&mut map, "errbacks")?,
            chain: take_value(&mut map, "chain")?,
            chord: take_value(&mut map, "chord")?,
        },
        other => {
            return Err(DecodeError::BodyShape(format!("embed must be a dict, got {}", truncate(&other.to_string()))));
        }
    };
    from_meta(Protocol::V2, props, &props.headers, args, kwargs, embed, opts.naive_zone)
}

/// v1 and hybrid: args, kwargs and links from the body dict; metadata from the
/// dict overlaid by the AMQP headers, as Celery's `hybrid_to_proto2` does.
fn decode_dict_body(
    protocol: Protocol,
    props: &Properties,
    mut dict: serde_json::Map<String, serde_json::Value>,
    opts: &DecodeOptions,
) -> Result<TaskMessage, DecodeError> {
    let args = read_args(dict.remove("args").unwrap_or(serde_json::Value::Array(Vec::new())))?;
    let kwargs = read_kwargs(dict.remove("kwargs").unwrap_or(serde_json::Value::Object(Default::default())))?;
    let embed = Embed {
        callbacks: take_value(&mut dict, "callbacks")?,
        errbacks: take_value(&mut dict, "errbacks")?,
        chain: None,
        chord: take_value(&mut dict, "chord")?,
    };
    // v1's `utc` flag (default true) says naive times are UTC; otherwise they
    // are the producer's local time, which is the configured zone.
    let zone = match dict.get("utc") {
        Some(serde_json::Value::Bool(false)) => opts.naive_zone,
        _ => Tz::UTC,
    };
    if let Some(taskset) = dict.remove("taskset") {
        dict.entry("group").or_insert(taskset);
    }
    let mut meta = FieldTable::default();
    for name in KNOWN_HEADERS {
        if let Some(v) = dict.get(name) {
            let value = header::from_json(unwrap_datetime_marker(v)).map_err(|e| DecodeError::invalid(name, e))?;
            meta.insert(name.into(), value);
        }
    }
    for (k, v) in &props.headers {
        meta.insert(k.clone(), v.clone());
    }
    let mut msg = from_meta(protocol, props, &meta, args, kwargs, embed, zone)?;
    if protocol == Protocol::V1 {
        // Celery's proto1_to_proto2 fills these for monitors; v1 bodies lack them.
        msg.argsrepr.get_or_insert_with(|| repr::value_repr(&Value::Array(msg.args.clone())));
        msg.kwargsrepr.get_or_insert_with(|| repr::kwargs_repr(&msg.kwargs));
    }
    Ok(msg)
}

/// A v1 body decoded by kombu may hold `eta` as a datetime marker rather than text.
fn unwrap_datetime_marker(v: &serde_json::Value) -> &serde_json::Value {
    match (v.get("__type__").and_then(|t| t.as_str()), v.get("__value__")) {
        (Some("datetime"), Some(inner)) if v.as_object().is_some_and(|m| m.len() == 2) => inner,
        _ => v,
    }
}

fn read_args(v: serde_json::Value) -> Result<Vec<Value>, DecodeError> {
    match v {
        serde_json::Value::Array(items) => items.into_iter().map(Value::from_json).collect(),
        other => Err(DecodeError::BodyShape(format!("args must be a list, got {}", truncate(&other.to_string())))),
    }
}

fn read_kwargs(v: serde_json::Value) -> Result<IndexMap<String, Value>, DecodeError> {
    match v {
        serde_json::Value::Object(map) => map.into_iter().map(|(k, v)| Ok((k, Value::from_json(v)?))).collect(),
        other => Err(DecodeError::BodyShape(format!("kwargs must be a dict, got {}", truncate(&other.to_string())))),
    }
}

fn take_value(map: &mut serde_json::Map<String, serde_json::Value>, key: &str) -> Result<Option<Value>, DecodeError> {
    match map.remove(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => Value::from_json(v).map(Some),
    }
}

/// Reads typed fields out of the metadata table (the headers, or for v1 the
/// body dict); the rest goes to `extra_headers`.
fn from_meta(
    protocol: Protocol,
    props: &Properties,
    meta: &FieldTable,
    args: Vec<Value>,
    kwargs: IndexMap<String, Value>,
    embed: Embed,
    zone: Tz,
) -> Result<TaskMessage, DecodeError> {
    let m = Meta(meta);
    let task = m.text("task")?.ok_or(DecodeError::Missing("task name"))?;
    let id = m.text("id")?.ok_or(DecodeError::Missing("task id"))?;
    if task.is_empty() {
        return Err(DecodeError::Missing("task name"));
    }
    if id.is_empty() {
        return Err(DecodeError::Missing("task id"));
    }
    let retries = match m.int("retries")? {
        None => 0,
        Some(r) => {
            u32::try_from(r).map_err(|_| DecodeError::invalid("retries", format!("{r} is not a retry count")))?
        }
    };
    let extra_headers = meta
        .into_iter()
        .filter(|(k, _)| !KNOWN_HEADERS.contains(&k.as_str()) && k.as_str() != COMPRESSION_HEADER)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    Ok(TaskMessage {
        protocol,
        task,
        id,
        args,
        kwargs,
        embed,
        retries,
        eta: m.time("eta", zone)?,
        expires: m.time("expires", zone)?,
        root_id: m.text("root_id")?,
        parent_id: m.text("parent_id")?,
        group: m.text("group")?,
        group_index: m.int("group_index")?,
        shadow: m.text("shadow")?,
        lang: m.text("lang")?,
        timelimit: m.timelimit()?,
        argsrepr: m.text("argsrepr")?,
        kwargsrepr: m.text("kwargsrepr")?,
        origin: m.text("origin")?,
        ignore_result: m.bool("ignore_result")?.unwrap_or(false),
        replaced_task_nesting: m.int("replaced_task_nesting")?.unwrap_or(0),
        stamped_headers: m.text_list("stamped_headers")?,
        stamps: m.table("stamps")?.unwrap_or_default(),
        priority: props.priority,
        reply_to: props.reply_to.clone(),
        correlation_id: props.correlation_id.clone(),
        extra_headers,
    })
}

/// Typed, null-tolerant access to a metadata table.
struct Meta<'a>(&'a FieldTable);

impl Meta<'_> {
    fn get(&self, name: &str) -> Option<&AMQPValue> {
        match self.0.inner().get(name) {
            None | Some(AMQPValue::Void) => None,
            Some(v) => Some(v),
        }
    }

    fn wrong(name: &str, expected: &str, v: &AMQPValue) -> DecodeError {
        DecodeError::invalid(name, format!("expected {expected}, got {}", truncate(&header::to_json(v).to_string())))
    }

    fn text(&self, name: &str) -> Result<Option<String>, DecodeError> {
        self.get(name)
            .map(|v| as_text(v).map(str::to_owned).ok_or_else(|| Self::wrong(name, "a string", v)))
            .transpose()
    }

    fn int(&self, name: &str) -> Result<Option<i64>, DecodeError> {
        self.get(name).map(|v| as_int(v).ok_or_else(|| Self::wrong(name, "an integer", v))).transpose()
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, DecodeError> {
        self.get(name)
            .map(|v| match v {
                AMQPValue::Boolean(b) => Ok(*b),
                other => Err(Self::wrong(name, "a boolean", other)),
            })
            .transpose()
    }

    fn table(&self, name: &str) -> Result<Option<FieldTable>, DecodeError> {
        self.get(name)
            .map(|v| match v {
                AMQPValue::FieldTable(t) => Ok(t.clone()),
                other => Err(Self::wrong(name, "a table", other)),
            })
            .transpose()
    }

    fn text_list(&self, name: &str) -> Result<Option<Vec<String>>, DecodeError> {
        self.get(name)
            .map(|v| match v {
                AMQPValue::FieldArray(items) => items
                    .as_slice()
                    .iter()
                    .map(|i| as_text(i).map(str::to_owned).ok_or_else(|| Self::wrong(name, "a list of strings", v)))
                    .collect(),
                other => Err(Self::wrong(name, "a list of strings", other)),
            })
            .transpose()
    }

    fn time(&self, name: &str, zone: Tz) -> Result<Option<DateTime<FixedOffset>>, DecodeError> {
        let Some(text) = self.text(name)? else { return Ok(None) };
        let bad = |reason: String| DecodeError::BadTime { field: name.to_owned(), value: truncate(&text), reason };
        let parsed = time::parse_iso(&text).map_err(bad)?;
        parsed.in_zone(zone).map(Some).map_err(bad)
    }

    fn timelimit(&self) -> Result<TimeLimit, DecodeError> {
        const NAME: &str = "timelimit";
        let Some(v) = self.get(NAME) else { return Ok(TimeLimit::default()) };
        let AMQPValue::FieldArray(items) = v else { return Err(Self::wrong(NAME, "[hard, soft]", v)) };
        let limit = |item: Option<&AMQPValue>| match item {
            None | Some(AMQPValue::Void) => Ok(None),
            Some(x) => as_float(x).map(Some).ok_or_else(|| Self::wrong(NAME, "[hard, soft] seconds", v)),
        };
        match items.as_slice() {
            [hard, soft] => Ok(TimeLimit { hard: limit(Some(hard))?, soft: limit(Some(soft))? }),
            _ => Err(Self::wrong(NAME, "[hard, soft]", v)),
        }
    }
}
