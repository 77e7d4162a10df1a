//! The three tasks of the framework, and what they share: the poll itself,
//! retries after transient database errors, and the FAIL fallback.
//!
//! Guarantee: a schedule in POLL always has a message in flight. A poll's
//! delivery is acked only after its update is committed and the message it
//! causes (next poll, retry) is confirmed. When retries run out or an error is
//! fatal, the FAIL write is attempted; if the database refuses it for a
//! transient reason, the message is re-published with the pending FAIL in a
//! header and the write is tried again when it is due, for as long as it
//! takes. Only then is the delivery acked.

pub mod callback;
pub mod delete;
pub mod schedule;

use broker_proto::{AMQPValue, TaskMessage, Value, eta_after, header, repr, topology};
use celerity_db::{Attempt, DbError, ErrorClass, RetryState, State, repo};
use chrono::Utc;

use crate::broker::BrokerError;
use crate::context::Ctx;
use crate::plugin::Callback;
use crate::poll::decide;
use crate::settle::Handled;

/// Header on Celerity's next-poll messages: the `invoke_count` the row must
/// still have, so a duplicate or stale message is recognised and dropped.
pub const INVOKE_COUNT_HEADER: &str = "x-celerity-invoke-count";
/// Header on a message whose only job left is to write FAIL with this `err`.
pub const PENDING_FAIL_HEADER: &str = "x-celerity-fail";
/// Header on a callback retry that already holds the `scheduling` lock.
pub const LOCK_HELD_HEADER: &str = "x-celerity-lock-held";

/// Where a delivery came from: retries go back to the same queue.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The queue (routing key) it was delivered for, with any delay bits removed.
    pub queue: String,
    /// Whether an earlier delivery of this message did not complete (a worker
    /// died or handed it back), so its effects may be half done.
    pub redelivered: bool,
}

/// The `err` of a FAIL still to be written, if this message carries one.
pub fn pending_fail(msg: &TaskMessage) -> Option<String> {
    msg.extra_headers.inner().get(PENDING_FAIL_HEADER).and_then(header::as_text).map(str::to_owned)
}

fn expected_invoke_count(msg: &TaskMessage) -> Option<i64> {
    msg.extra_headers.inner().get(INVOKE_COUNT_HEADER).and_then(header::as_int)
}

/// Runs one poll of `trace_id`: load, plugin, guarded update, next poll.
pub(crate) async fn poll(
    ctx: &Ctx,
    origin: &Origin,
    msg: &TaskMessage,
    trace_id: &str,
    callback: Option<Callback>,
) -> Result<Handled, BrokerError> {
    let holds_lock = callback.is_some();
    let started = ctx.db.now();
    let id = trace_id.to_owned();
    let (row, retrying) = match ctx.db.call(move |c| repo::load_for_poll(c, &id)).await {
        Ok(loaded) => loaded,
        Err(DbError::NotFound(_)) => {
            tracing::warn!("no schedule with this trace id; nothing to do");
            return Ok(Handled("no such schedule"));
        }
        Err(e) => return on_db_error(ctx, origin, msg, Some(trace_id), e).await,
    };
    if let Some(expected) = match expected_invoke_count(msg) {
        Some(expected) => Some(expected),
        None if !holds_lock && row.state == State::Poll.code() && row.invoke_count > 1 => {
            match headerless_expectation(ctx, trace_id, row.invoke_count).await {
                Ok(expected) => expected,
                Err(e) => return on_db_error(ctx, origin, msg, Some(trace_id), e).await,
            }
        }
        None => None,
    } && i64::from(row.invoke_count) != expected
    {
        if i64::from(row.invoke_count) == expected + 1 && row.state == State::Poll.code() {
            match own_landed_poll(ctx, origin, msg, trace_id, row.invoke_count).await {
                Ok(Some(landed)) => return republish_next_poll(ctx, trace_id, row.invoke_count, &landed).await,
                Ok(None) => {}
                Err(e) => return on_db_error(ctx, origin, msg, Some(trace_id), e).await,
            }
        }
        tracing::info!(expected, found = row.invoke_count, "stale or duplicate poll message; dropped");
        return release(ctx, origin, msg, trace_id, holds_lock, Handled("stale")).await;
    }
    let registry = ctx.registry.clone();
    let now = ctx.db.now();
    let decision = tokio::task::spawn_blocking(move || decide(&registry, &row, callback, now))
        .await
        .unwrap_or_else(|join| panic!("poll decision panicked outside the plugin: {join}"));
    let Some(mut decision) = decision else {
        tracing::info!("schedule already final; nothing to do");
        return release(ctx, origin, msg, trace_id, holds_lock, Handled("already final")).await;
    };
    decision.result.release_lock = holds_lock;
    let attempt = Attempt {
        trace_id: trace_id.to_owned(),
        attempt: decision.result.invoke_count,
        started_at: started,
        ended_at: ctx.db.now(),
        outcome: decision.result.state.name().to_owned(),
        error: decision.result.err.clone().unwrap_or_default(),
        hostname: ctx.config.hostname.clone(),
        next_poll_at: decision
            .next_poll
            .map(|secs| ctx.db.now() + chrono::Duration::seconds(secs.min(i64::MAX as u64) as i64)),
        task_id: Some(msg.id.clone()),
    };
    let result = decision.result.clone();
    match ctx.db.call(move |c| repo::apply_poll_seen(c, &result, Some(&attempt), retrying)).await {
        Ok(true) => {}
        Ok(false) => {
            // The row moved on while this poll ran. If it was this message's
            // own earlier try, whose commit landed late (a frozen server),
            // nobody published the next poll yet.
            if decision.next_poll.is_some() {
                match own_landed_poll(ctx, origin, msg, trace_id, decision.result.invoke_count).await {
                    Ok(Some(landed)) => {
                        return republish_next_poll(ctx, trace_id, decision.result.invoke_count, &landed).await;
                    }
                    Ok(None) => {}
                    Err(e) => return on_db_error(ctx, origin, msg, Some(trace_id), e).await,
                }
            }
            tracing::info!("another delivery polled this schedule first; dropped");
            return release(ctx, origin, msg, trace_id, holds_lock, Handled("stale")).await;
        }
        Err(e) => return on_db_error(ctx, origin, msg, Some(trace_id), e).await,
    }
    tracing::info!(state = decision.result.state.name(), invoke_count = decision.result.invoke_count, "polled");
    if let Some(countdown) = decision.next_poll {
        let next = next_poll_message(ctx, trace_id, decision.result.invoke_count, countdown);
        ctx.publisher.publish_task_to_queue(&ctx.config.next_poll_queue, &next).await?;
    }
    if let Some(info) = decision.plugin_callback {
        let posted =
            tokio::task::spawn_blocking(move || crate::http_callback::post_with_retry(&info.url, &info.data)).await;
        if let Ok(Err(e)) = posted {
            tracing::warn!(error = %e, "plugin callback not delivered");
        }
    }
    Ok(Handled(state_label(decision.result.state)))
}

/// What a message without the invoke-count header may expect of a row in
/// POLL past the producer's first poll. Such a message is the producer's
/// first, or a Python worker's next poll. When Celerity's own attempt log
/// holds the poll that made the row's current invoke_count, Celerity sent
/// that poll's successor with the header, so this message is a duplicate or
/// was late (a sweep stood in for it): it expected the count before.
async fn headerless_expectation(ctx: &Ctx, trace_id: &str, invoke_count: i32) -> Result<Option<i64>, DbError> {
    let id = trace_id.to_owned();
    let landed = ctx.db.call(move |c| repo::attempt(c, &id, invoke_count)).await?;
    Ok(landed.map(|_| i64::from(invoke_count) - 1))
}

/// The landed poll that made `invoke_count`, if it was this very message's
/// earlier try (same task id) and the schedule still waits in POLL at that
/// count: the message is a redelivery (a worker died) or a retry (the
/// commit's answer was lost), and the next poll may never have been
/// published. A fresh duplicate is not its own earlier try.
async fn own_landed_poll(
    ctx: &Ctx,
    origin: &Origin,
    msg: &TaskMessage,
    trace_id: &str,
    invoke_count: i32,
) -> Result<Option<Attempt>, DbError> {
    if !origin.redelivered && msg.retries == 0 {
        return Ok(None);
    }
    let id = trace_id.to_owned();
    let (row, landed) = ctx.db.call(move |c| Ok((repo::load(c, &id)?, repo::attempt(c, &id, invoke_count)?))).await?;
    let still_waiting = row.state == State::Poll.code() && row.invoke_count == invoke_count;
    Ok(landed
        .filter(|a| still_waiting && a.outcome == State::Poll.name() && a.task_id.as_deref() == Some(msg.id.as_str())))
}

/// Publishes again the next poll of a poll that landed, due when the attempt
/// log says it was. If the first publish did happen, the two copies expect the
/// same invoke_count: one polls, the other is dropped as stale.
async fn republish_next_poll(
    ctx: &Ctx,
    trace_id: &str,
    invoke_count: i32,
    landed: &Attempt,
) -> Result<Handled, BrokerError> {
    let now = ctx.db.now();
    let countdown = landed.next_poll_at.map_or(0, |at| (at - now).num_seconds().max(0) as u64);
    let next = next_poll_message(ctx, trace_id, invoke_count, countdown);
    ctx.publisher.publish_task_to_queue(&ctx.config.next_poll_queue, &next).await?;
    tracing::warn!(invoke_count, "the poll of an earlier try had landed; its next poll is published again");
    Ok(Handled("next poll re-published"))
}

fn state_label(state: State) -> &'static str {
    match state {
        State::Empty => "empty",
        State::Poll => "poll",
        State::Callback => "callback",
        State::Success => "success",
        State::Fail => "fail",
    }
}

/// Releases the callback lock when this poll held it, then reports `done`.
async fn release(
    ctx: &Ctx,
    origin: &Origin,
    msg: &TaskMessage,
    trace_id: &str,
    holds_lock: bool,
    done: Handled,
) -> Result<Handled, BrokerError> {
    if !holds_lock {
        return Ok(done);
    }
    let id = trace_id.to_owned();
    match ctx.db.call(move |c| repo::unlock(c, &id)).await {
        Ok(()) => Ok(done),
        Err(e) => on_db_error(ctx, origin, msg, Some(trace_id), e).await,
    }
}

/// The next `schedule` message, as Python's `apply_async(kwargs={"trace_id": ...},
/// countdown=interval, queue="plugin_schedule")` would send it.
fn next_poll_message(ctx: &Ctx, trace_id: &str, invoke_count: i32, countdown: u64) -> TaskMessage {
    schedule_message(&ctx.origin, &ctx.reply_to, trace_id, invoke_count, countdown)
}

/// A `schedule` message expecting the row at `invoke_count`, due in `countdown` seconds.
pub fn schedule_message(
    origin: &str,
    reply_to: &str,
    trace_id: &str,
    invoke_count: i32,
    countdown: u64,
) -> TaskMessage {
    let countdown = countdown.min(i64::MAX as u64) as i64;
    let mut m = task_message(origin, reply_to, topology::SCHEDULE_TASK, &[("trace_id", trace_id)], countdown);
    m.extra_headers.insert(INVOKE_COUNT_HEADER.into(), AMQPValue::LongInt(invoke_count));
    m
}

/// A new task with string kwargs, as Python's `apply_async(kwargs=...,
/// countdown=...)` sends it from this worker.
pub(crate) fn new_task(ctx: &Ctx, task: &str, kwargs: &[(&str, &str)], countdown_secs: i64) -> TaskMessage {
    task_message(&ctx.origin, &ctx.reply_to, task, kwargs, countdown_secs)
}

fn task_message(origin: &str, reply_to: &str, task: &str, kwargs: &[(&str, &str)], countdown_secs: i64) -> TaskMessage {
    let mut m = TaskMessage::new(task, uuid::Uuid::new_v4().to_string());
    for (k, v) in kwargs {
        m.kwargs.insert((*k).to_owned(), Value::String((*v).to_owned()));
    }
    m.argsrepr = Some(repr::args_repr(&m.args));
    m.kwargsrepr = Some(repr::kwargs_repr(&m.kwargs));
    m.origin = Some(origin.to_owned());
    m.reply_to = Some(reply_to.to_owned());
    m.priority = Some(0);
    m.eta = eta_after(Utc::now(), chrono::Duration::seconds(countdown_secs));
    m
}

/// A database error at any step: transient ones are retried, fatal ones fail
/// the schedule.
pub(crate) async fn on_db_error(
    ctx: &Ctx,
    origin: &Origin,
    msg: &TaskMessage,
    trace_id: Option<&str>,
    err: DbError,
) -> Result<Handled, BrokerError> {
    match (err.class(), trace_id) {
        (ErrorClass::Transient, _) => retry(ctx, origin, msg, trace_id, err).await,
        (ErrorClass::Fatal, Some(trace_id)) => {
            tracing::error!(error = %err, "fatal database error; failing the schedule");
            fail_schedule(ctx, origin, msg, trace_id, format!("database error: {err}")).await
        }
        (ErrorClass::Fatal, None) => {
            tracing::error!(error = %err, "fatal database error");
            Ok(Handled("fatal"))
        }
    }
}

/// Re-publishes the message the Celery way (same id, `retries + 1`, eta =
/// now + countdown) to the queue it came from, waiting in the broker's delay
/// topology, or fails the schedule when the retries are spent.
async fn retry(
    ctx: &Ctx,
    origin: &Origin,
    msg: &TaskMessage,
    trace_id: Option<&str>,
    err: DbError,
) -> Result<Handled, BrokerError> {
    let Some(countdown) = ctx.config.retry.countdown(msg.retries) else {
        tracing::error!(error = %err, retries = msg.retries, "retries exhausted");
        return match trace_id {
            Some(trace_id) => {
                let text =
                    format!("gave up after {} retries of transient database errors; last error: {err}", msg.retries);
                fail_schedule(ctx, origin, msg, trace_id, text).await
            }
            None => Ok(Handled("gave up")),
        };
    };
    let now = Utc::now();
    let mut retried =
        msg.retried(eta_after(now, chrono::Duration::from_std(countdown).unwrap_or(chrono::Duration::MAX)));
    // A retry is a fresh delivery, not a redelivery of a crashed one.
    retried.extra_headers = without(&retried.extra_headers, crate::poison::DELIVERIES_HEADER);
    ctx.publisher.publish_task_to_queue(&origin.queue, &retried).await?;
    tracing::warn!(error = %err, retries = retried.retries, countdown = ?countdown, "transient database error; retry published");
    metrics::counter!(crate::meters::RETRIES, "class" => err.class().as_str()).increment(1);
    if let Some(trace_id) = trace_id {
        // Bookkeeping for operators; the database may well still be down.
        let at = ctx.db.now();
        let state = RetryState {
            trace_id: trace_id.to_owned(),
            retries: retried.retries as i32,
            first_failure_at: at,
            last_failure_at: at,
            next_retry_at: chrono::Duration::from_std(countdown).ok().map(|d| at + d),
            last_error_class: err.class().as_str().to_owned(),
            last_error: err.to_string(),
        };
        if let Err(e) = ctx.db.call(move |c| repo::record_retry(c, &state)).await {
            tracing::debug!(error = %e, "retry bookkeeping not written");
        }
    }
    Ok(Handled("retried"))
}

fn without(headers: &broker_proto::FieldTable, name: &str) -> broker_proto::FieldTable {
    let mut out = broker_proto::FieldTable::default();
    for (k, v) in headers {
        if k.as_str() != name {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Writes FAIL with `err`; if the database cannot take it now, keeps a
/// message in flight that will write it later (see the module docs).
pub(crate) async fn fail_schedule(
    ctx: &Ctx,
    origin: &Origin,
    msg: &TaskMessage,
    trace_id: &str,
    err: String,
) -> Result<Handled, BrokerError> {
    let now = ctx.db.now();
    let (id, text) = (trace_id.to_owned(), err.clone());
    match ctx.db.call(move |c| repo::fail(c, &id, &text, now, None)).await {
        Ok(applied) => {
            tracing::info!(applied, %err, "schedule failed");
            Ok(Handled("failed"))
        }
        Err(e) if e.is_transient() => {
            let mut pending = msg.clone();
            pending.extra_headers.insert(PENDING_FAIL_HEADER.into(), header::text(&err));
            let countdown = chrono::Duration::from_std(ctx.config.retry.max).unwrap_or(chrono::Duration::MAX);
            pending.eta = eta_after(Utc::now(), countdown);
            ctx.publisher.publish_task_to_queue(&origin.queue, &pending).await?;
            tracing::warn!(error = %e, "FAIL not written yet; it stays in flight until the database takes it");
            Ok(Handled("fail pending"))
        }
        Err(e) => {
            tracing::error!(error = %e, %err, "FAIL could not be written");
            Ok(Handled("fail not written"))
        }
    }
}
