//! The dispatch of a delivery against the in-process fakes: what runs, what
//! waits, what is dead-lettered or counted again, and what goes back.

use std::sync::{Arc, Mutex};

use broker_proto::{AMQPValue, TaskMessage, Value, delay, header, topology};
use celerity_db::{DbError, State};
use chrono::{Duration, SubsecRound, Utc};
use lapin::message::Delivery;
use lapin::types::DeliveryTag;
use tokio::sync::watch;

use super::{Handler, Incoming, Settle};
use crate::broker::DEAD_LETTER_QUEUE;
use crate::broker::properties::basic_properties;
use crate::delivery::dead_letter::REASON_HEADER;
use crate::delivery::poison::{DELIVERIES_HEADER, QUORUM_COUNT_HEADER};
use crate::tasks::fakes::{self, FakePublisher, FakeStore, row};
use crate::tasks::{Ctx, Handled};

const T: &str = "fedcba9876543210fedcba9876543210";

fn message(task: &str) -> TaskMessage {
    let mut m = TaskMessage::new(task, uuid::Uuid::new_v4().to_string());
    m.kwargs.insert("trace_id".into(), Value::String(T.into()));
    m
}

fn delivery(routing_key: &str, m: &TaskMessage, redelivered: bool) -> Delivery {
    let out = broker_proto::encode(m, Utc::now()).expect("encodes");
    let mut d = Delivery::mock(1, "".into(), routing_key.into(), redelivered, out.body);
    d.properties = basic_properties(&out.properties).expect("properties");
    d
}

fn with_header(mut d: Delivery, name: &str, value: AMQPValue) -> Delivery {
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(name.into(), value);
    d.properties = d.properties.clone().with_headers(headers);
    d
}

type Shared = Arc<Ctx<FakeStore, FakePublisher>>;

fn ctx(store: FakeStore) -> Shared {
    Arc::new(fakes::ctx(store))
}

async fn run(ctx: &Shared, d: &Delivery) -> Handled {
    let (_stop, stopping) = watch::channel(false);
    let handler = Handler::new(ctx.clone(), 1, stopping);
    Incoming::new(&handler, copy(d)).dispatch().await
}

/// Another delivery of the same bytes (lapin's `Delivery` is not `Clone`).
fn copy(d: &Delivery) -> Delivery {
    let mut again =
        Delivery::mock(d.delivery_tag, d.exchange.clone(), d.routing_key.clone(), d.redelivered, d.data.clone());
    again.properties = d.properties.clone();
    again
}

/// What a channel was told, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, DeliveryTag)>>);

impl Settle for Arc<Recorder> {
    async fn ack(&self, tag: DeliveryTag) -> Result<(), lapin::Error> {
        self.0.lock().unwrap().push(("ack", tag));
        Ok(())
    }

    async fn hand_back(&self, tag: DeliveryTag) -> Result<(), lapin::Error> {
        self.0.lock().unwrap().push(("hand back", tag));
        Ok(())
    }
}

#[tokio::test]
async fn acks_and_hand_backs_both_go_to_the_channel_the_delivery_came_on() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    let (_stop, stopping) = watch::channel(false);
    let handler = Arc::new(Handler::new(ctx.clone(), 1, stopping));
    let channel = Arc::new(Recorder::default());
    let mut d = delivery(topology::SCHEDULE_QUEUE.name, &message(topology::SCHEDULE_TASK), false);
    d.delivery_tag = 7;
    super::handle(handler.clone(), channel.clone(), d).await;
    assert_eq!(ctx.store.row(T).invoke_count, 2, "it ran");
    ctx.publisher.refuse_next(1);
    let garbage = Delivery::mock(8, "".into(), "plugin_schedule".into(), false, b"{".to_vec());
    super::handle(handler, channel.clone(), garbage).await;
    assert_eq!(*channel.0.lock().unwrap(), [("ack", 7), ("hand back", 8)]);
}

#[tokio::test]
async fn the_delivery_counters_stop_at_the_delivery_a_retry_is_a_fresh_message() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    ctx.store.fail_next("load_for_poll", DbError::Deadline(std::time::Duration::from_secs(1)));
    let d = with_header(
        with_header(
            delivery("plugin_schedule", &message(topology::SCHEDULE_TASK), true),
            QUORUM_COUNT_HEADER,
            AMQPValue::LongLongInt(1),
        ),
        DELIVERIES_HEADER,
        AMQPValue::LongInt(1),
    );
    assert!(matches!(run(&ctx, &d).await, Handled::Retried));
    let retried = ctx.publisher.sent()[0].message();
    assert_eq!(retried.retries, 1);
    for name in [DELIVERIES_HEADER, QUORUM_COUNT_HEADER] {
        assert!(!retried.extra_headers.contains_key(name), "{name}: a retry is a fresh message");
    }
}

#[tokio::test]
async fn a_schedule_message_runs_and_leaves_nothing_in_the_in_flight_view() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    let d = delivery(topology::SCHEDULE_QUEUE.name, &message(topology::SCHEDULE_TASK), false);
    assert!(matches!(run(&ctx, &d).await, Handled::Polled(State::Poll)));
    assert_eq!(ctx.store.row(T).invoke_count, 2);
    for kind in ["active", "reserved", "scheduled"] {
        assert!(ctx.inflight.list(kind).is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn what_no_task_can_run_is_dead_lettered_with_the_reason() {
    let ctx = ctx(FakeStore::default());
    let garbage = Delivery::mock(1, "".into(), "plugin_schedule".into(), false, b"not json".to_vec());
    assert!(matches!(run(&ctx, &garbage).await, Handled::DeadLettered));
    let unknown = delivery("plugin_schedule", &message("no.such.task"), false);
    assert!(matches!(run(&ctx, &unknown).await, Handled::DeadLettered));
    let sent = ctx.publisher.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|s| s.queue == DEAD_LETTER_QUEUE));
    let reason = |s: &crate::tasks::fakes::Sent| {
        let headers = s.properties.headers().clone().unwrap_or_default();
        headers.inner().get(REASON_HEADER).and_then(header::as_text).map(str::to_owned).unwrap_or_default()
    };
    assert!(reason(&sent[0]).starts_with("cannot decode: "), "{}", reason(&sent[0]));
    assert_eq!(reason(&sent[1]), r#"unknown task "no.such.task""#);
    assert_eq!(sent[1].body, unknown.data, "the body is kept as it came");
}

#[tokio::test]
async fn an_expired_message_is_dropped_without_running() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    let mut m = message(topology::SCHEDULE_TASK);
    m.expires = Some((Utc::now() - Duration::seconds(5)).fixed_offset());
    assert!(matches!(run(&ctx, &delivery("plugin_schedule", &m, false)).await, Handled::Expired));
    assert_eq!(ctx.store.row(T).invoke_count, 1);
}

#[tokio::test]
async fn a_message_due_beyond_the_eta_window_waits_in_the_broker_unchanged() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    let mut m = message(topology::SCHEDULE_TASK);
    // Celery writes etas to the microsecond.
    m.eta = Some((Utc::now() + Duration::seconds(90)).trunc_subsecs(6).fixed_offset());
    let d = delivery("plugin_schedule", &m, false);
    assert!(matches!(run(&ctx, &d).await, Handled::MovedToDelay));
    let sent = ctx.publisher.sent();
    // A schedule task waits where Celerity's next polls wait.
    assert_eq!((sent[0].queue.as_str(), sent[0].eta), (topology::NEXT_POLL_QUEUE, m.eta));
    assert_eq!(sent[0].body, d.data);
    assert_eq!(ctx.store.row(T).invoke_count, 1, "not run yet");
}

#[tokio::test]
async fn a_message_due_soon_waits_in_memory_then_runs_unless_shutdown_comes() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    let mut m = message(topology::SCHEDULE_TASK);
    m.eta = Some((Utc::now() + Duration::milliseconds(300)).fixed_offset());
    let d = delivery("plugin_schedule", &m, false);
    assert!(matches!(run(&ctx, &d).await, Handled::Polled(State::Poll)));
    assert!(ctx.publisher.sent().iter().all(|s| s.queue != "plugin_schedule"), "it stayed in memory");

    m.eta = Some((Utc::now() + Duration::milliseconds(900)).fixed_offset());
    let d = delivery("plugin_schedule", &m, false);
    let (stop, stopping) = watch::channel(false);
    let handler = Handler::new(ctx.clone(), 1, stopping);
    let incoming = Incoming::new(&handler, d);
    let handled = incoming.dispatch();
    let stopper = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let _ = stop.send(true);
    };
    let (handled, ()) = tokio::join!(handled, stopper);
    assert!(matches!(handled, Handled::Interrupted));
    assert_eq!(ctx.store.row(T).invoke_count, 2, "the interrupted one did not run");
}

#[tokio::test]
async fn a_redelivered_classic_message_is_published_again_with_its_count() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    let routing_key = delay::routing_key(0, "plugin_schedule");
    let d = delivery(&routing_key, &message(topology::SCHEDULE_TASK), true);
    assert!(matches!(run(&ctx, &d).await, Handled::Recounted));
    let sent = ctx.publisher.sent();
    assert_eq!(sent[0].queue, "plugin_schedule", "the delay bits are not the queue");
    let headers = sent[0].properties.headers().clone().unwrap_or_default();
    assert_eq!(headers.inner().get(DELIVERIES_HEADER).and_then(header::as_int), Some(2));
    assert_eq!(ctx.store.row(T).invoke_count, 1, "the copy runs, not this one");
}

#[tokio::test]
async fn a_message_delivered_too_often_is_dead_lettered() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    let max = i32::try_from(ctx.config.max_deliveries).unwrap();
    let d = with_header(
        delivery("plugin_schedule", &message(topology::SCHEDULE_TASK), true),
        DELIVERIES_HEADER,
        AMQPValue::LongInt(max - 1),
    );
    assert!(matches!(run(&ctx, &d).await, Handled::DeadLettered));
    let quorum = with_header(
        delivery("plugin_schedule", &message(topology::SCHEDULE_TASK), true),
        QUORUM_COUNT_HEADER,
        AMQPValue::LongLongInt(i64::from(max)),
    );
    assert!(matches!(run(&ctx, &quorum).await, Handled::DeadLettered));
    let row = ctx.store.row(T);
    assert_eq!(row.invoke_count, 1, "the poison message did not run");
    assert_eq!(row.state, State::Fail.code(), "left open, the sweeper would send it again forever");
    assert!(row.err.starts_with("message dead-lettered: delivered "), "{}", row.err);
}

#[tokio::test]
async fn a_poison_messages_fail_that_must_wait_is_a_fresh_message() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    ctx.store.fail_next("fail", DbError::Deadline(std::time::Duration::from_secs(1)));
    let max = i32::try_from(ctx.config.max_deliveries).unwrap();
    let d = with_header(
        delivery("plugin_schedule", &message(topology::SCHEDULE_TASK), true),
        DELIVERIES_HEADER,
        AMQPValue::LongInt(max - 1),
    );
    assert!(matches!(run(&ctx, &d).await, Handled::DeadLettered));
    let sent = ctx.publisher.sent();
    assert_eq!(sent.len(), 2, "the dead letter and the pending FAIL");
    let pending = sent[1].message();
    assert!(crate::tasks::headers::pending_fail(&pending).is_some());
    assert!(!pending.extra_headers.contains_key(DELIVERIES_HEADER), "or it would be poison on arrival");
}

#[tokio::test]
async fn a_quorum_queue_counts_redeliveries_itself() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 0)]));
    let d = with_header(
        delivery("plugin_schedule", &message(topology::SCHEDULE_TASK), true),
        QUORUM_COUNT_HEADER,
        AMQPValue::LongLongInt(1),
    );
    assert!(matches!(run(&ctx, &d).await, Handled::Polled(State::Poll)));
    assert!(ctx.publisher.sent().iter().all(|s| s.queue != "plugin_schedule"), "no recount copy");
}

#[tokio::test]
async fn a_broker_that_refuses_the_dead_letter_gets_the_delivery_back() {
    let ctx = ctx(FakeStore::default());
    ctx.publisher.refuse_next(1);
    let d = Delivery::mock(1, "".into(), "plugin_schedule".into(), false, b"{".to_vec());
    assert!(matches!(run(&ctx, &d).await, Handled::HandedBack(_)));
}
