//! W3C trace context in a task message: OpenTelemetry's Celery
//! instrumentation injects `traceparent` (and `tracestate`, when there is
//! one) into the headers it publishes with (protocol 2: the AMQP message
//! headers, next to Celery's own), and the worker reads them back from the
//! task's request. Here they are read and written as the strings they are;
//! what they mean is the tracing layer's business.

use amq_protocol_types::{AMQPValue, FieldTable, LongString};

use crate::message::TaskMessage;

/// The W3C `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// Longest trace-context header read: a `traceparent` is 55 bytes and the
/// W3C spec bounds `tracestate` at 32 members of 256; anything longer is
/// not a trace context and is ignored.
const MAX_HEADER: usize = 8192;

impl TaskMessage {
    /// The trace-context header `name` as the producer wrote it: a string,
    /// not too long. Anything else reads as absent.
    pub fn trace_header(&self, name: &str) -> Option<&str> {
        let bytes = match self.extra_headers.inner().get(name)? {
            AMQPValue::LongString(s) => s.as_bytes(),
            AMQPValue::ShortString(s) => s.as_str().as_bytes(),
            _ => return None,
        };
        if bytes.len() > MAX_HEADER {
            return None;
        }
        std::str::from_utf8(bytes).ok()
    }

    /// Replaces the message's trace context with `headers` (name and value
    /// pairs, as a propagator writes them); with none, the message carries
    /// no trace context.
    pub fn set_trace_headers<'a>(&mut self, headers: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut table: FieldTable = self
            .extra_headers
            .inner()
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), TRACEPARENT | TRACESTATE))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into();
        for (name, value) in headers {
            table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
        }
        self.extra_headers = table;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn written_and_read_back_replacing_what_was_there() {
        let mut m = TaskMessage::new("t", "id");
        assert_eq!(m.trace_header(TRACEPARENT), None);
        m.extra_headers.insert("x-other".into(), AMQPValue::LongInt(3));
        m.set_trace_headers([(TRACEPARENT, "00-old-old-00"), (TRACESTATE, "a=1")]);
        m.set_trace_headers([(TRACEPARENT, PARENT)]);
        assert_eq!(m.trace_header(TRACEPARENT), Some(PARENT));
        assert_eq!(m.trace_header(TRACESTATE), None, "a replaced context drops the old tracestate");
        assert!(m.extra_headers.contains_key("x-other"), "other headers stay");
        m.set_trace_headers([]);
        assert_eq!(m.extra_headers.inner().len(), 1);
    }

    #[test]
    fn a_header_that_is_not_a_short_string_reads_as_absent() {
        let mut m = TaskMessage::new("t", "id");
        m.extra_headers.insert(TRACEPARENT.into(), AMQPValue::LongInt(1));
        assert_eq!(m.trace_header(TRACEPARENT), None);
        m.extra_headers.insert(TRACEPARENT.into(), AMQPValue::LongString(LongString::from(vec![0xff, 0xfe])));
        assert_eq!(m.trace_header(TRACEPARENT), None, "not UTF-8");
        m.extra_headers.insert(TRACESTATE.into(), AMQPValue::LongString(LongString::from("k=".repeat(MAX_HEADER))));
        assert_eq!(m.trace_header(TRACESTATE), None, "too long");
    }
}
