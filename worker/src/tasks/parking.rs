//! Parking: a message that arrives for a schedule an operator paused is
//! kept in `celerity_parked` instead of running, and acked only once that
//! row is committed. A resume sends it again as it was, due at its own eta.
//!
//! The message is stored as Celery publishes it: its properties, its
//! headers as JSON and its JSON body, so what is sent again decodes to the
//! same task (same id, retries, eta and Celerity headers).

use broker_proto::{DecodeOptions, Properties, TaskMessage, decode, encode, header};
use celerity_db::Parked;
use chrono::Utc;
use serde_json::{Value, json};

use super::headers::{LOCK_HELD_HEADER, without};
use super::{Store, Task};
use crate::broker::Publish;

impl<S: Store, P: Publish> Task<'_, S, P> {
    /// Parks this message for its paused schedule. Returns false, parking
    /// nothing, when the schedule is no longer paused.
    pub(super) async fn park(&self, trace_id: &str) -> Result<bool, celerity_db::DbError> {
        let ctx = self.ctx;
        let mut msg = self.msg.clone();
        // A callback sent again takes the lock again.
        msg.extra_headers = without(&msg.extra_headers, LOCK_HELD_HEADER);
        let now = ctx.store.now();
        let eta = msg.eta.map(|eta| now + (eta.with_timezone(&Utc) - Utc::now()));
        let parked = Parked {
            trace_id: trace_id.to_owned(),
            task_id: msg.id.clone(),
            task: msg.task.clone(),
            queue: self.origin.queue.clone(),
            eta,
            parked_at: now,
            released_at: None,
            message: to_text(&msg).map_err(celerity_db::DbError::BadData)?,
        };
        let parked_now = ctx.store.park(parked).await?;
        if parked_now {
            tracing::info!("schedule paused by an operator; message parked until it is resumed");
        }
        Ok(parked_now)
    }
}

/// The message as stored in `celerity_parked.message`.
pub fn to_text(msg: &TaskMessage) -> Result<String, String> {
    let out = encode(msg, Utc::now()).map_err(|e| e.to_string())?;
    let p = &out.properties;
    let headers: serde_json::Map<String, Value> =
        p.headers.into_iter().map(|(k, v)| (k.to_string(), header::to_json(v))).collect();
    let body = String::from_utf8(out.body).map_err(|e| format!("the message body is not UTF-8: {e}"))?;
    Ok(json!({
        "content_type": p.content_type,
        "content_encoding": p.content_encoding,
        "correlation_id": p.correlation_id,
        "reply_to": p.reply_to,
        "priority": p.priority,
        "delivery_mode": p.delivery_mode,
        "headers": headers,
        "body": body,
    })
    .to_string())
}

/// The message a `celerity_parked.message` holds.
pub fn from_text(text: &str) -> Result<TaskMessage, String> {
    let stored: Value = serde_json::from_str(text).map_err(|e| format!("parked message is not JSON: {e}"))?;
    let field = |name: &str| stored.get(name).and_then(Value::as_str).map(str::to_owned);
    let small = |name: &str| stored.get(name).and_then(Value::as_u64).and_then(|n| u8::try_from(n).ok());
    let headers = match stored.get("headers") {
        Some(Value::Object(map)) => header::table_from_json(map)?,
        _ => return Err("parked message has no headers".into()),
    };
    let props = Properties {
        content_type: field("content_type"),
        content_encoding: field("content_encoding"),
        correlation_id: field("correlation_id"),
        reply_to: field("reply_to"),
        priority: small("priority"),
        delivery_mode: small("delivery_mode"),
        expiration: None,
        headers,
    };
    let body = field("body").ok_or("parked message has no body")?;
    decode(&props, body.as_bytes(), &DecodeOptions::default()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::headers::INVOKE_COUNT_HEADER;
    use crate::tasks::messages::Sender;

    #[test]
    fn a_parked_message_comes_back_as_the_same_task() {
        let sender = Sender::new("unit");
        let mut msg = sender.schedule("abc", 7, 30);
        msg.retries = 3;
        msg.extra_headers.insert(LOCK_HELD_HEADER.into(), header::text("1"));
        let back = from_text(&to_text(&msg).unwrap()).unwrap();
        assert_eq!(back.id, msg.id);
        assert_eq!(back.task, msg.task);
        assert_eq!(back.retries, 3);
        assert_eq!(back.eta, msg.eta);
        assert_eq!(back.args, msg.args);
        assert_eq!(back.kwargs, msg.kwargs);
        assert_eq!(back.extra_headers.inner().get(INVOKE_COUNT_HEADER).and_then(header::as_int), Some(7));
    }

    #[test]
    fn a_damaged_parked_message_is_an_error_not_a_panic() {
        for text in ["", "{}", r#"{"headers": {}}"#, r#"{"headers": {}, "body": "[1,"}"#, "[]"] {
            assert!(from_text(text).is_err(), "{text}");
        }
    }
}
