//! The spans of a task run, named and attributed as OpenTelemetry's Celery
//! instrumentation names the Python worker's (`run/<task>` of kind
//! CONSUMER, a child of the context the message carries; `apply_async/<task>`
//! of kind PRODUCER for each message the run sends, whose context the
//! message carries on), so dashboards built for the Python worker keep
//! working. Celerity adds children for the plugin step and the database
//! transaction, and the outcome.
//!
//! The run's context travels with its future ([`FutureExt::with_context`]),
//! so the steps below it find their parent without passing it around.
//! Off (the default), none of this runs.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use broker_proto::TaskMessage;
use broker_proto::trace_context::{TRACEPARENT, TRACESTATE};
use opentelemetry::context::FutureExt;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};

static ON: AtomicBool = AtomicBool::new(false);

/// The instrumentation scope the spans are reported under.
const SCOPE: &str = "celerity";

/// Tracing is installed from now on.
pub(super) fn switch_on() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether tracing is installed.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// One task run's span.
pub struct Run {
    cx: Context,
}

impl Run {
    /// Starts `run/<task>` for `msg`, delivered with `routing_key`, as a
    /// child of the context the producer put in its headers (a root, when
    /// it put none). `None` when tracing is off.
    pub fn start(msg: &TaskMessage, routing_key: &str) -> Option<Run> {
        if !on() {
            return None;
        }
        let parent = global::get_text_map_propagator(|p| p.extract(&Headers(msg)));
        let tracer = global::tracer(SCOPE);
        let mut attributes = vec![
            KeyValue::new("celery.action", "run"),
            KeyValue::new("celery.task_name", msg.task.clone()),
            KeyValue::new("messaging.message.id", msg.id.clone()),
            KeyValue::new("messaging.conversation_id", msg.id.clone()),
            KeyValue::new("messaging.destination", routing_key.to_owned()),
        ];
        if let Some(origin) = &msg.origin {
            attributes.push(KeyValue::new("celery.hostname", origin.clone()));
        }
        if msg.retries > 0 {
            attributes.push(KeyValue::new("celery.retries", i64::from(msg.retries)));
        }
        if let Some(eta) = msg.eta {
            attributes.push(KeyValue::new("celery.eta", eta.to_rfc3339()));
        }
        if let Some(trace_id) = msg.kwarg_str("trace_id") {
            attributes.push(KeyValue::new("bk_plugin.trace_id", trace_id.to_owned()));
        }
        let span = tracer
            .span_builder(format!("run/{}", msg.task))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        Some(Run { cx: parent.with_span(span) })
    }

    /// The span's trace id and span id, in hex as W3C writes them.
    pub fn ids(&self) -> (String, String) {
        let span = self.cx.span();
        let ids = span.span_context();
        (ids.trace_id().to_string(), ids.span_id().to_string())
    }

    /// The context the run's steps run in.
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// Ends the span with how the run ended.
    pub fn end(self, ended: Ended) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("celery.state", ended.state));
        span.set_attribute(KeyValue::new("celerity.outcome", ended.outcome));
        if ended.error {
            span.set_status(Status::error(ended.outcome));
        }
        span.end();
    }
}

/// How a run's span ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// `celery.state`, as Celery's signals would say (`SUCCESS`, `RETRY`, `FAILURE`, `REJECTED`).
    pub state: &'static str,
    /// Whether the span's status is an error, with `outcome` as its description.
    pub error: bool,
    /// `celerity.outcome`: the `outcome` label of `celerity_tasks_total`.
    pub outcome: &'static str,
}

/// Adds attributes to the current run's span (known only once a step ran).
pub fn annotate(attributes: impl FnOnce() -> Vec<KeyValue>) {
    if on() {
        Context::map_current(|cx| cx.span().set_attributes(attributes()));
    }
}

/// Records on the current span what went wrong and its class (a database
/// error class, a retry cause, a plugin host's death).
pub fn record_error(class: &str, message: &str) {
    if !on() {
        return;
    }
    Context::map_current(|cx| {
        let span = cx.span();
        span.add_event(
            "exception",
            vec![
                KeyValue::new("exception.type", class.to_owned()),
                KeyValue::new("exception.message", message.to_owned()),
            ],
        );
        span.set_attribute(KeyValue::new("celerity.error_class", class.to_owned()));
    });
}

/// Runs `step` in a child span of the current one, named `name`.
pub async fn child<T>(name: &'static str, attributes: Vec<KeyValue>, step: impl Future<Output = T>) -> T {
    let Some(parent) = current_run() else {
        return step.await;
    };
    let tracer = global::tracer(SCOPE);
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let out = step.with_context(cx.clone()).await;
    cx.span().end();
    out
}

/// The current span's W3C trace context as a propagator writes it
/// (`traceparent`, `tracestate`); empty when tracing is off or no span is current.
pub fn current_context() -> Vec<(String, String)> {
    current_run().map(|cx| carried(&cx)).unwrap_or_default()
}

/// The current context, when tracing is on and a run's span is current.
fn current_run() -> Option<Context> {
    if !on() {
        return None;
    }
    let cx = Context::current();
    cx.span().span_context().is_valid().then_some(cx)
}

/// `cx`'s trace context as the propagator writes it into headers.
fn carried(cx: &Context) -> Vec<(String, String)> {
    let mut carried = Carried::default();
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut carried));
    carried.0
}

/// A message being sent from inside a run: its `apply_async/<task>` span,
/// a child of the run's, whose context the message carries.
pub struct Publishing {
    /// The message with the new span's context in its headers.
    pub msg: TaskMessage,
    cx: Context,
}

impl Publishing {
    /// `msg` carrying a new producer span's context, when tracing is on and
    /// a run's span is current; `None` otherwise (the message goes as it is).
    pub fn start(msg: &TaskMessage, queue: &str) -> Option<Publishing> {
        let parent = current_run()?;
        let tracer = global::tracer(SCOPE);
        let span = tracer
            .span_builder(format!("apply_async/{}", msg.task))
            .with_kind(SpanKind::Producer)
            .with_attributes(vec![
                KeyValue::new("celery.action", "apply_async"),
                KeyValue::new("messaging.message.id", msg.id.clone()),
                KeyValue::new("celery.task_name", msg.task.clone()),
                KeyValue::new("messaging.destination", queue.to_owned()),
            ])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(span);
        let mut msg = msg.clone();
        msg.set_trace_headers(carried(&cx).iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Some(Publishing { msg, cx })
    }

    /// The publish is over (confirmed, or not: then it says why).
    pub fn end(self, failed: Option<&str>) {
        let span = self.cx.span();
        if let Some(why) = failed {
            span.set_status(Status::error(why.to_owned()));
        }
        span.end();
    }
}

/// The trace-context headers of a message, for the propagator.
struct Headers<'m>(&'m TaskMessage);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT | TRACESTATE => self.0.trace_header(key),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE].into_iter().filter(|k| self.0.trace_header(k).is_some()).collect()
    }
}

/// What the propagator writes, to be put in a message's headers.
#[derive(Default)]
struct Carried(Vec<(String, String)>);

impl Injector for Carried {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use broker_proto::{AMQPValue, LongString};
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    fn parent_of(value: AMQPValue) -> opentelemetry::trace::SpanContext {
        let mut msg = TaskMessage::new("t", "id");
        msg.extra_headers.insert(TRACEPARENT.into(), value);
        msg.extra_headers.insert(TRACESTATE.into(), AMQPValue::LongString(LongString::from("k=v")));
        TraceContextPropagator::new().extract(&Headers(&msg)).span().span_context().clone()
    }

    #[test]
    fn a_producers_context_is_read_from_the_headers() {
        let sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03";
        let parent = parent_of(AMQPValue::LongString(LongString::from(sent)));
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(parent.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(parent.trace_state().header(), "k=v");
    }

    #[test]
    fn a_header_that_is_no_trace_context_starts_a_new_trace() {
        for bad in [
            AMQPValue::LongString(LongString::from("00-zz-yy-01")),
            AMQPValue::LongString(LongString::from(format!("00-{}-b7ad6b7169203331-01", "a".repeat(100_000)))),
            AMQPValue::LongString(LongString::from(vec![0xff; 55])),
            AMQPValue::LongString(LongString::from("00-00000000000000000000000000000000-b7ad6b7169203331-01")),
            AMQPValue::LongInt(7),
            AMQPValue::FieldTable(Default::default()),
        ] {
            assert!(!parent_of(bad.clone()).is_valid(), "{bad:?} read as a context");
        }
    }

    #[test]
    fn written_context_replaces_the_one_received() {
        let mut carried = Carried::default();
        let parent = parent_of(AMQPValue::LongString(LongString::from(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )));
        TraceContextPropagator::new().inject_context(&Context::new().with_remote_span_context(parent), &mut carried);
        let mut msg = TaskMessage::new("t", "id");
        msg.set_trace_headers([(TRACEPARENT, "00-11111111111111111111111111111111-2222222222222222-01")]);
        msg.set_trace_headers(carried.0.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(msg.trace_header(TRACEPARENT), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert_eq!(msg.trace_header(TRACESTATE), Some("k=v"));
    }
}
