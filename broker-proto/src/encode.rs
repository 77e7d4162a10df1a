//! Writing a [`TaskMessage`] as the protocol v2 message Celery 5.x publishes:
//! the same headers (`as_task_v2`), the same properties, a JSON body
//! `[args, kwargs, embed]`, and only header types py-amqp reads correctly.

use amq_protocol_types::{AMQPValue, FieldArray};
use chrono::{DateTime, Utc};

use crate::error::EncodeError;
use crate::header::{self, text, text_or_void};
use crate::message::{Properties, TaskMessage};
use crate::time;

/// Persistent, as Celery's default `delivery_mode`.
pub const PERSISTENT: u8 = 2;

/// A message ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// AMQP properties, headers included.
    pub properties: Properties,
    /// JSON body bytes.
    pub body: Vec<u8>,
}

/// Encodes `msg` as Celery 5.x would publish it at `now` (`now` only sets the
/// `expiration` property from `expires`, as `send_task` does).
pub fn encode(msg: &TaskMessage, now: DateTime<Utc>) -> Result<Outgoing, EncodeError> {
    // Extras first, so a stray extra can never shadow a field Celery defines.
    let mut headers = header::make_table_safe("", &msg.extra_headers)?;
    let known = [
        ("lang", text_or_void(msg.lang.as_deref())),
        ("task", text(&msg.task)),
        ("id", text(&msg.id)),
        ("shadow", text_or_void(msg.shadow.as_deref())),
        ("eta", msg.eta.as_ref().map_or(AMQPValue::Void, |t| text(&time::format_aware(t)))),
        ("expires", msg.expires.as_ref().map_or(AMQPValue::Void, |t| text(&time::format_aware(t)))),
        ("group", text_or_void(msg.group.as_deref())),
        ("group_index", msg.group_index.map(int_header("group_index")).transpose()?.unwrap_or(AMQPValue::Void)),
        ("retries", int_header("retries")(i64::from(msg.retries))?),
        (
            "timelimit",
            AMQPValue::FieldArray(FieldArray::from(vec![seconds(msg.timelimit.hard), seconds(msg.timelimit.soft)])),
        ),
        ("root_id", text_or_void(msg.root_id.as_deref())),
        ("parent_id", text_or_void(msg.parent_id.as_deref())),
        ("argsrepr", text_or_void(msg.argsrepr.as_deref())),
        ("kwargsrepr", text_or_void(msg.kwargsrepr.as_deref())),
        ("origin", text_or_void(msg.origin.as_deref())),
        ("ignore_result", AMQPValue::Boolean(msg.ignore_result)),
        ("replaced_task_nesting", int_header("replaced_task_nesting")(msg.replaced_task_nesting)?),
        (
            "stamped_headers",
            msg.stamped_headers.as_ref().map_or(AMQPValue::Void, |names| {
                AMQPValue::FieldArray(names.iter().map(|n| text(n)).collect::<Vec<_>>().into())
            }),
        ),
        ("stamps", AMQPValue::FieldTable(header::make_table_safe("stamps", &msg.stamps)?)),
    ];
    for (name, value) in known {
        headers.insert(name.into(), value);
    }

    let body = serde_json::to_vec(&serde_json::Value::Array(vec![
        serde_json::Value::Array(msg.args.iter().map(|a| a.to_json()).collect()),
        serde_json::Value::Object(msg.kwargs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        embed_json(msg),
    ]))
    .expect("serde_json::Value always serialises");

    let expiration = msg.expires.map(|exp| {
        // Celery sends the time left in ms, and 0 for an expiry already past.
        let left = (exp.with_timezone(&Utc) - now).num_milliseconds().max(0);
        left.to_string()
    });
    Ok(Outgoing {
        properties: Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            correlation_id: Some(msg.correlation_id.clone().unwrap_or_else(|| msg.id.clone())),
            reply_to: msg.reply_to.clone(),
            priority: msg.priority,
            delivery_mode: Some(PERSISTENT),
            expiration,
            headers,
        },
        body,
    })
}

fn int_header(name: &'static str) -> impl Fn(i64) -> Result<AMQPValue, EncodeError> {
    move |i| header::int(i).map_err(|reason| EncodeError::UnsafeHeader { name: name.into(), reason })
}

/// Python sends integral limits as ints (`time_limit=30`), others as floats.
fn seconds(limit: Option<f64>) -> AMQPValue {
    match limit {
        None => AMQPValue::Void,
        Some(s) if s.fract() == 0.0 && s.abs() < f64::from(i32::MAX) => AMQPValue::LongInt(s as i32),
        Some(s) => AMQPValue::Double(s),
    }
}

fn embed_json(msg: &TaskMessage) -> serde_json::Value {
    let link = |v: &Option<crate::value::Value>| v.as_ref().map_or(serde_json::Value::Null, |v| v.to_json());
    let mut embed = serde_json::Map::with_capacity(4);
    embed.insert("callbacks".into(), link(&msg.embed.callbacks));
    embed.insert("errbacks".into(), link(&msg.embed.errbacks));
    embed.insert("chain".into(), link(&msg.embed.chain));
    embed.insert("chord".into(), link(&msg.embed.chord));
    serde_json::Value::Object(embed)
}
