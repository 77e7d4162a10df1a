//! Every branch of the tasks, against the in-process fakes: the poll and its
//! stale, duplicate and own-landed messages, the callback lock, each retry
//! path and the FAIL fallback.

use broker_proto::{AMQPValue, TaskMessage, Value, header, topology};
use celerity_db::{Attempt, DbError, State};
use chrono::Utc;

use super::callback::CallbackArgs;
use super::fakes::{FakePublisher, FakeStore, Sent, ctx, from_plugin_schedule, now, row};
use super::headers::{INVOKE_COUNT_HEADER, LOCK_HELD_HEADER, PENDING_FAIL_HEADER, expected_invoke_count, pending_fail};
use super::{Ctx, Handled, Origin, Task};
use crate::broker::BrokerError;

const T: &str = "0123456789abcdef0123456789abcdef";

fn schedule_message() -> TaskMessage {
    let mut m = TaskMessage::new(topology::SCHEDULE_TASK, uuid::Uuid::new_v4().to_string());
    m.kwargs.insert("trace_id".into(), Value::String(T.into()));
    m
}

fn expecting(invoke_count: i32) -> TaskMessage {
    let mut m = schedule_message();
    m.extra_headers.insert(INVOKE_COUNT_HEADER.into(), AMQPValue::LongInt(invoke_count));
    m
}

fn transient() -> DbError {
    DbError::Deadline(std::time::Duration::from_secs(30))
}

fn fatal() -> DbError {
    DbError::BadData("an update refused for its values".into())
}

/// An environment fault as the fakes can make one (the real ones come from
/// MariaDB in the integration tests).
fn environment() -> DbError {
    DbError::Config("stand-in for mysql error 1142, UPDATE denied".into())
}

async fn schedule(ctx: &Ctx<FakeStore, FakePublisher>, origin: &Origin, msg: &TaskMessage) -> Handled {
    Task { ctx, origin, msg }.schedule(T).await.into()
}

fn sent(ctx: &Ctx<FakeStore, FakePublisher>) -> Vec<Sent> {
    ctx.publisher.sent()
}

fn seconds_until(sent: &Sent) -> i64 {
    sent.eta.map_or(0, |eta| (eta.with_timezone(&Utc) - Utc::now()).num_seconds())
}

fn landed_attempt(invoke_count: i32, task_id: &str) -> Attempt {
    Attempt {
        trace_id: T.into(),
        attempt: invoke_count,
        started_at: now(),
        ended_at: now(),
        outcome: State::Poll.name().into(),
        error: String::new(),
        hostname: "other".into(),
        next_poll_at: Some(now() + chrono::Duration::seconds(7)),
        task_id: Some(task_id.into()),
    }
}

#[tokio::test]
async fn a_poll_that_polls_again_lands_with_its_attempt_and_publishes_the_next_poll() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 3, 30)]));
    let msg = schedule_message();
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &msg).await, Handled::Polled(State::Poll)));
    let row = ctx.store.row(T);
    assert_eq!((row.state, row.invoke_count), (State::Poll.code(), 2));
    assert!(row.data.contains(r#""executions": 2"#), "{}", row.data);
    let attempt = ctx.store.tables().attempts[&(T.to_owned(), 2)].clone();
    assert_eq!(attempt.task_id.as_deref(), Some(msg.id.as_str()));
    assert_eq!(attempt.next_poll_at, Some(now() + chrono::Duration::seconds(30)));
    let sent = sent(&ctx);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue, topology::NEXT_POLL_QUEUE);
    let next = sent[0].message();
    assert_eq!((next.task.as_str(), next.kwarg_str("trace_id")), (topology::SCHEDULE_TASK, Some(T)));
    assert_eq!(expected_invoke_count(&next), Some(2));
    assert!((29..=30).contains(&seconds_until(&sent[0])));
}

#[tokio::test]
async fn a_poll_that_succeeds_finishes_the_schedule_and_publishes_nothing() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 1, 0)]));
    assert!(matches!(
        schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await,
        Handled::Polled(State::Success)
    ));
    let row = ctx.store.row(T);
    assert_eq!((row.state, row.invoke_count, row.finish_at), (State::Success.code(), 2, Some(now())));
    assert!(sent(&ctx).is_empty());
}

#[tokio::test]
async fn a_message_for_no_schedule_does_nothing() {
    let ctx = ctx(FakeStore::default());
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await, Handled::NoSuchSchedule));
    assert!(sent(&ctx).is_empty());
}

#[tokio::test]
async fn a_final_schedule_is_left_alone() {
    let ctx = ctx(FakeStore::with([row(T, State::Success, 4, 3, 0)]));
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &expecting(4)).await, Handled::AlreadyFinal));
    assert_eq!(ctx.store.row(T).invoke_count, 4);
}

#[tokio::test]
async fn a_next_poll_for_a_count_the_schedule_left_behind_is_dropped() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 3, 5, 0)]));
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &expecting(1)).await, Handled::Stale));
    assert_eq!(ctx.store.row(T).invoke_count, 3);
    assert!(sent(&ctx).is_empty());
    assert!(!ctx.store.tables().calls.contains(&"apply_poll"));
}

#[tokio::test]
async fn a_headerless_copy_after_celeritys_own_poll_landed_is_dropped() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 2, 5, 0)]));
    ctx.store.tables().attempts.insert((T.into(), 2), landed_attempt(2, "some other task"));
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await, Handled::Stale));
    assert_eq!(ctx.store.row(T).invoke_count, 2);
}

#[tokio::test]
async fn a_headerless_poll_from_a_python_worker_runs() {
    // No attempt of Celerity's made invoke_count 2: a Python worker polled.
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 2, 5, 0)]));
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await, Handled::Polled(State::Poll)));
    assert_eq!(ctx.store.row(T).invoke_count, 3);
}

#[tokio::test]
async fn a_redelivery_whose_own_poll_landed_publishes_that_polls_next_poll_again() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 2, 5, 0)]));
    let msg = expecting(1);
    ctx.store.tables().attempts.insert((T.into(), 2), landed_attempt(2, &msg.id));
    let redelivered = Origin { redelivered: true, ..from_plugin_schedule() };
    assert!(matches!(schedule(&ctx, &redelivered, &msg).await, Handled::NextPollRepublished));
    assert_eq!(ctx.store.row(T).invoke_count, 2, "nothing polled twice");
    let sent = sent(&ctx);
    assert_eq!(sent.len(), 1);
    assert_eq!(expected_invoke_count(&sent[0].message()), Some(2));
}

#[tokio::test]
async fn a_fresh_duplicate_is_not_its_own_earlier_try() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 2, 5, 0)]));
    let msg = expecting(1);
    ctx.store.tables().attempts.insert((T.into(), 2), landed_attempt(2, &msg.id));
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &msg).await, Handled::Stale));
    assert!(sent(&ctx).is_empty());
}

#[tokio::test]
async fn a_poll_whose_guarded_update_lost_is_dropped() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    // Another delivery polls first, while this one runs the plugin.
    ctx.store.before_apply(|tables| tables.rows.get_mut(T).expect("row").invoke_count = 2);
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &expecting(1)).await, Handled::Stale));
    assert!(sent(&ctx).is_empty());
    assert!(ctx.store.tables().attempts.is_empty(), "the losing poll logs no attempt");
}

#[tokio::test]
async fn a_retry_whose_own_commit_landed_late_publishes_the_next_poll_again() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    let mut msg = expecting(1);
    msg.retries = 1;
    let id = msg.id.clone();
    // The first try's commit landed after its deadline (a frozen server).
    ctx.store.before_apply(move |tables| {
        tables.rows.get_mut(T).expect("row").invoke_count = 2;
        tables.attempts.insert((T.into(), 2), landed_attempt(2, &id));
    });
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &msg).await, Handled::NextPollRepublished));
    assert_eq!(expected_invoke_count(&sent(&ctx)[0].message()), Some(2));
}

#[tokio::test]
async fn a_transient_error_publishes_the_same_task_again_with_a_countdown() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    ctx.store.fail_next("load_for_poll", transient());
    let msg = schedule_message();
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &msg).await, Handled::Retried));
    let sent = sent(&ctx);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue, topology::SCHEDULE_QUEUE.name, "back to the queue it came from");
    let retried = sent[0].message();
    assert_eq!((retried.id.as_str(), retried.retries), (msg.id.as_str(), 1));
    assert!((4..=5).contains(&seconds_until(&sent[0])), "the first countdown is 5 s");
    let bookkeeping = ctx.store.tables().retries.clone();
    assert_eq!(bookkeeping.len(), 1);
    assert_eq!((bookkeeping[0].retries, bookkeeping[0].last_error_class.as_str()), (1, "transient"));
    assert_eq!(ctx.store.row(T).invoke_count, 1, "nothing polled");
}

#[tokio::test]
async fn every_database_step_of_a_poll_is_retried() {
    for step in ["load_for_poll", "apply_poll"] {
        let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
        ctx.store.fail_next(step, transient());
        assert!(
            matches!(schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await, Handled::Retried),
            "{step}"
        );
    }
    // The headerless check of a row past its first poll.
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 2, 5, 0)]));
    ctx.store.fail_next("attempt", transient());
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await, Handled::Retried));
}

#[tokio::test]
async fn retries_spent_fail_the_schedule_with_the_last_error() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    ctx.store.fail_next("load_for_poll", transient());
    let mut msg = schedule_message();
    msg.retries = 6;
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &msg).await, Handled::Failed));
    let row = ctx.store.row(T);
    assert_eq!(row.state, State::Fail.code());
    assert_eq!(row.finish_at, Some(now()));
    assert!(row.err.starts_with("gave up after 6 retries of transient database errors; last error: "), "{}", row.err);
    assert!(sent(&ctx).is_empty());
}

#[tokio::test]
async fn a_fatal_error_fails_the_schedule_at_once() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    ctx.store.fail_next("load_for_poll", fatal());
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await, Handled::Failed));
    let row = ctx.store.row(T);
    assert_eq!(row.state, State::Fail.code());
    assert_eq!(row.err, "database error: bad data in the database: an update refused for its values");
    assert!(sent(&ctx).is_empty(), "no retry");
}

#[tokio::test]
async fn a_fail_the_database_cannot_take_yet_stays_in_flight() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    ctx.store.fail_next("load_for_poll", fatal());
    ctx.store.fail_next("fail", transient());
    let msg = schedule_message();
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &msg).await, Handled::FailPending));
    assert_eq!(ctx.store.row(T).state, State::Poll.code());
    let sent = sent(&ctx);
    let pending = sent[0].message();
    assert_eq!(pending.id, msg.id);
    assert_eq!(
        pending_fail(&pending).as_deref(),
        Some("database error: bad data in the database: an update refused for its values")
    );
    assert!((59..=60).contains(&seconds_until(&sent[0])), "due after the longest countdown");

    // When it comes back, it writes the FAIL and polls nothing.
    let ctx2 = super::fakes::ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    assert!(matches!(schedule(&ctx2, &from_plugin_schedule(), &pending).await, Handled::Failed));
    let row = ctx2.store.row(T);
    assert_eq!((row.state, row.invoke_count), (State::Fail.code(), 1));
    assert!(row.err.starts_with("database error: bad data"));
}

#[tokio::test]
async fn a_fail_refused_for_any_reason_stays_in_flight() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    ctx.store.fail_next("load_for_poll", fatal());
    ctx.store.fail_next("fail", fatal());
    let handled = schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await;
    assert!(matches!(handled, Handled::FailPending), "{handled:?}");
    assert!(pending_fail(&sent(&ctx)[0].message()).is_some());
    assert!(!ctx.pause.is_paused(), "this schedule's fault pauses nothing");

    // An environment fault writing it pauses the worker, and still keeps it.
    let ctx = super::fakes::ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    ctx.store.fail_next("load_for_poll", fatal());
    ctx.store.fail_next("fail", environment());
    let handled = schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await;
    assert!(matches!(handled, Handled::FailPending), "{handled:?}");
    assert!(ctx.pause.is_paused());
}

#[tokio::test]
async fn an_environment_fault_pauses_and_sets_the_message_aside_unchanged() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    ctx.store.fail_next("load_for_poll", environment());
    let mut msg = schedule_message();
    msg.retries = 2;
    let handled = schedule(&ctx, &from_plugin_schedule(), &msg).await;
    assert!(matches!(handled, Handled::SetAside), "{handled:?}");
    assert_eq!(handled.settlement(), super::Settlement::Ack);
    let paused = ctx.pause.paused().expect("paused");
    assert!(paused.reason.contains("1142"), "{}", paused.reason);
    let sent = sent(&ctx);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue, topology::SCHEDULE_QUEUE.name);
    let again = sent[0].message();
    assert_eq!((again.id.as_str(), again.retries, again.eta), (msg.id.as_str(), 2, msg.eta), "retries unspent");
    let row = ctx.store.row(T);
    assert_eq!((row.state, row.invoke_count), (State::Poll.code(), 1), "the schedule is untouched");
    assert!(ctx.store.tables().retries.is_empty(), "no retry bookkeeping");
}

#[tokio::test]
async fn a_broker_that_refuses_the_next_poll_gets_the_delivery_back() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 0)]));
    ctx.publisher.refuse_next(1);
    let handled = schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await;
    assert!(matches!(handled, Handled::HandedBack(BrokerError::Nacked(_))), "{handled:?}");
    assert_eq!(handled.settlement(), super::Settlement::Requeue);
}

fn callback_args(data: &str) -> CallbackArgs {
    CallbackArgs { trace_id: T.into(), callback_id: "cb".into(), callback_data: data.into() }
}

fn callback_message() -> TaskMessage {
    TaskMessage::new(topology::CALLBACK_TASK, uuid::Uuid::new_v4().to_string())
}

async fn callback(ctx: &Ctx<FakeStore, FakePublisher>, msg: &TaskMessage, args: &CallbackArgs) -> Handled {
    let origin = Origin { queue: topology::CALLBACK_QUEUE.name.into(), redelivered: false };
    Task { ctx, origin: &origin, msg }.callback(args).await.into()
}

#[tokio::test]
async fn a_callback_takes_the_lock_polls_and_releases_the_lock_in_the_same_update() {
    let ctx = ctx(FakeStore::with([row(T, State::Callback, 2, 1, 0)]));
    let handled = callback(&ctx, &callback_message(), &callback_args(r#"{"ok": true}"#)).await;
    assert!(matches!(handled, Handled::Polled(State::Success)), "{handled:?}");
    let row = ctx.store.row(T);
    assert_eq!((row.invoke_count, row.scheduling), (3, false));
    let calls = ctx.store.tables().calls.clone();
    assert_eq!(calls, ["try_lock", "load", "load_for_poll", "apply_poll"], "no separate unlock");
}

#[tokio::test]
async fn a_callback_whose_lock_is_held_elsewhere_comes_again_in_1_to_5_s() {
    let mut locked = row(T, State::Callback, 2, 1, 0);
    locked.scheduling = true;
    let ctx = ctx(FakeStore::with([locked]));
    let args = callback_args("{}");
    assert!(matches!(callback(&ctx, &callback_message(), &args).await, Handled::LockBusy));
    let sent = sent(&ctx);
    assert_eq!(sent[0].queue, topology::CALLBACK_QUEUE.name);
    let again = sent[0].message();
    assert_eq!(again.task, topology::CALLBACK_TASK);
    assert_eq!(again.kwarg_str("callback_data"), Some("{}"));
    assert!((0..=5).contains(&seconds_until(&sent[0])));
    assert!(ctx.store.row(T).scheduling, "the other holder keeps its lock");
}

/// The lock's first taker died mid-step: its redelivered copy (same task
/// id, no header) goes on; a different callback still waits.
#[tokio::test]
async fn a_redelivered_callback_holds_the_lock_its_first_delivery_took() {
    let mut locked = row(T, State::Callback, 2, 1, 0);
    locked.scheduling = true;
    let ctx = ctx(FakeStore::with([locked]));
    let msg = callback_message();
    ctx.store.tables().lock_owners.insert(T.into(), msg.id.clone());
    let args = callback_args(r#"{"ok": true}"#);
    assert!(matches!(callback(&ctx, &callback_message(), &args).await, Handled::LockBusy));
    let handled = callback(&ctx, &msg, &args).await;
    assert!(matches!(handled, Handled::Polled(State::Success)), "{handled:?}");
    let row = ctx.store.row(T);
    assert_eq!((row.invoke_count, row.scheduling), (3, false));
}

#[tokio::test]
async fn a_callback_for_a_schedule_not_waiting_for_one_releases_the_lock() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 2, 5, 0)]));
    assert!(matches!(callback(&ctx, &callback_message(), &callback_args("{}")).await, Handled::NotInCallback));
    let row = ctx.store.row(T);
    assert_eq!((row.invoke_count, row.scheduling), (2, false));
}

#[tokio::test]
async fn a_callback_whose_data_is_not_json_fails_the_schedule() {
    let ctx = ctx(FakeStore::with([row(T, State::Callback, 2, 5, 0)]));
    assert!(matches!(callback(&ctx, &callback_message(), &callback_args("{nope")).await, Handled::Failed));
    let row = ctx.store.row(T);
    assert_eq!((row.state, row.scheduling), (State::Fail.code(), false));
    assert!(row.err.starts_with("callback data is not JSON: "), "{}", row.err);
}

#[tokio::test]
async fn a_callback_retry_says_it_holds_the_lock_and_does_not_wait_for_itself() {
    let ctx = ctx(FakeStore::with([row(T, State::Callback, 2, 1, 0)]));
    ctx.store.fail_next("load", transient());
    assert!(matches!(callback(&ctx, &callback_message(), &callback_args("{}")).await, Handled::Retried));
    let retry = sent(&ctx)[0].message();
    assert!(retry.extra_headers.contains_key(LOCK_HELD_HEADER));
    assert!(ctx.store.row(T).scheduling, "the lock stays with the retry");

    let handled = callback(&ctx, &retry, &callback_args("{}")).await;
    assert!(matches!(handled, Handled::Polled(State::Success)), "{handled:?}");
    assert!(!ctx.store.row(T).scheduling);
    assert_eq!(ctx.store.tables().calls.iter().filter(|c| **c == "try_lock").count(), 1);
}

#[tokio::test]
async fn a_stale_poll_that_held_the_lock_releases_it() {
    let mut locked = row(T, State::Callback, 2, 5, 0);
    locked.scheduling = true;
    let ctx = ctx(FakeStore::with([locked]));
    let mut msg = callback_message();
    msg.extra_headers.insert(LOCK_HELD_HEADER.into(), header::text("1"));
    // Another delivery lands a poll while this one runs the plugin.
    ctx.store.before_apply(|tables| tables.rows.get_mut(T).expect("row").invoke_count = 3);
    assert!(matches!(callback(&ctx, &msg, &callback_args("{}")).await, Handled::Stale));
    assert!(!ctx.store.row(T).scheduling);
}

/// Overtaken by its own redelivered copy, which landed and released the
/// lock, a callback finds the lock taken since by another callback: it is
/// that one's, and stays taken.
#[tokio::test]
async fn an_overtaken_callback_leaves_a_lock_another_callback_took_since() {
    let mut locked = row(T, State::Callback, 2, 5, 0);
    locked.scheduling = true;
    let ctx = ctx(FakeStore::with([locked]));
    let mut msg = callback_message();
    msg.extra_headers.insert(LOCK_HELD_HEADER.into(), header::text("1"));
    ctx.store.before_apply(|tables| {
        tables.rows.get_mut(T).expect("row").invoke_count = 3;
        tables.lock_owners.insert(T.into(), "another-callback".into());
    });
    assert!(matches!(callback(&ctx, &msg, &callback_args("{}")).await, Handled::Stale));
    assert!(ctx.store.row(T).scheduling);
    assert_eq!(ctx.store.tables().lock_owners.get(T).map(String::as_str), Some("another-callback"));
}

#[tokio::test]
async fn a_pending_fail_on_a_callback_is_written_without_the_lock() {
    let ctx = ctx(FakeStore::with([row(T, State::Callback, 2, 5, 0)]));
    let mut msg = callback_message();
    msg.extra_headers.insert(PENDING_FAIL_HEADER.into(), header::text("gave up"));
    assert!(matches!(callback(&ctx, &msg, &callback_args("{}")).await, Handled::Failed));
    assert_eq!(ctx.store.row(T).err, "gave up");
    assert_eq!(ctx.store.tables().calls, ["fail"]);
}

async fn delete(ctx: &Ctx<FakeStore, FakePublisher>, msg: &TaskMessage) -> Handled {
    let origin = Origin { queue: topology::DELETE_QUEUE.name.into(), redelivered: false };
    Task { ctx, origin: &origin, msg }.delete_expired().await.into()
}

#[tokio::test]
async fn the_delete_task_removes_schedules_finished_before_the_cutoff_and_retries_or_gives_up() {
    let mut old = row("old", State::Success, 4, 3, 0);
    old.finish_at = Some(now() - chrono::Duration::days(31));
    let mut recent = row("recent", State::Fail, 2, 3, 0);
    recent.finish_at = Some(now() - chrono::Duration::days(29));
    let ctx = ctx(FakeStore::with([old, recent, row("open", State::Poll, 1, 3, 0)]));
    let msg = TaskMessage::new(topology::DELETE_TASK, "d");
    assert!(matches!(delete(&ctx, &msg).await, Handled::Deleted));
    let left: std::collections::BTreeSet<String> = ctx.store.tables().rows.keys().cloned().collect();
    assert_eq!(left, ["open".to_owned(), "recent".to_owned()].into());

    ctx.store.fail_next("delete_finished_before", transient());
    assert!(matches!(delete(&ctx, &msg).await, Handled::Retried));
    assert!(ctx.store.tables().retries.is_empty(), "no schedule to keep bookkeeping for");
    let mut spent = msg.clone();
    spent.retries = 6;
    ctx.store.fail_next("delete_finished_before", transient());
    assert!(matches!(delete(&ctx, &spent).await, Handled::GaveUp));
    ctx.store.fail_next("delete_finished_before", fatal());
    assert!(matches!(delete(&ctx, &msg).await, Handled::Fatal));
}

#[tokio::test]
async fn a_message_for_a_paused_schedule_is_parked_and_writes_nothing_else() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 3, 5, 30)]));
    ctx.store.tables().paused.insert(T.into());
    ctx.store.tables().retrying.insert(T.into());
    let mut msg = expecting(3);
    msg.retries = 2;
    let handled = schedule(&ctx, &from_plugin_schedule(), &msg).await;
    assert!(matches!(handled, Handled::Parked), "{handled:?}");
    assert_eq!(handled.settlement(), super::Settlement::Ack);
    let row = ctx.store.row(T);
    assert_eq!((row.state, row.invoke_count), (State::Poll.code(), 3), "the row keeps POLL");
    assert!(ctx.store.tables().attempts.is_empty(), "nothing in the attempt log");
    assert!(sent(&ctx).is_empty(), "nothing published");
    let parked = ctx.store.tables().parked.clone();
    assert_eq!(parked.len(), 1);
    let back = super::parking::from_text(&parked[0].message).unwrap();
    assert_eq!((back.id.as_str(), back.retries), (msg.id.as_str(), 2), "the retry keeps its count");
    assert_eq!(expected_invoke_count(&back), Some(3));
    // The same message delivered again parks nothing more.
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &msg).await, Handled::Parked));
    assert_eq!(ctx.store.tables().parked.len(), 1);
}

#[tokio::test]
async fn a_callback_for_a_paused_schedule_is_parked_without_its_lock_and_releases_it() {
    let ctx = ctx(FakeStore::with([row(T, State::Callback, 2, 1, 0)]));
    ctx.store.tables().paused.insert(T.into());
    let handled = callback(&ctx, &callback_message(), &callback_args(r#"{"ok": true}"#)).await;
    assert!(matches!(handled, Handled::Parked), "{handled:?}");
    let row = ctx.store.row(T);
    assert_eq!((row.state, row.invoke_count, row.scheduling), (State::Callback.code(), 2, false));
    let parked = ctx.store.tables().parked.clone();
    let back = super::parking::from_text(&parked[0].message).unwrap();
    assert!(!back.extra_headers.contains_key(LOCK_HELD_HEADER), "sent again, it takes the lock again");
    assert_eq!(back.task, topology::CALLBACK_TASK);
}

#[tokio::test]
async fn a_stale_message_or_a_final_schedule_is_not_parked_even_when_paused() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 4, 5, 30)]));
    ctx.store.tables().paused.insert(T.into());
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &expecting(3)).await, Handled::Stale));
    // A poll that was running when the pause landed finished the schedule.
    ctx.store.tables().rows.get_mut(T).unwrap().state = State::Success.code();
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &expecting(4)).await, Handled::AlreadyFinal));
    assert!(ctx.store.tables().parked.is_empty());
}

#[tokio::test]
async fn a_park_the_database_refuses_for_now_is_retried() {
    let ctx = ctx(FakeStore::with([row(T, State::Poll, 1, 5, 30)]));
    ctx.store.tables().paused.insert(T.into());
    ctx.store.fail_next("park", transient());
    assert!(matches!(schedule(&ctx, &from_plugin_schedule(), &schedule_message()).await, Handled::Retried));
    assert!(ctx.store.tables().parked.is_empty());
    assert_eq!(sent(&ctx).len(), 1, "the retry is in flight");
}
