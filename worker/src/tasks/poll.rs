//! The `schedule` task (`bk_plugin_framework.runtime.schedule.celery.tasks.schedule(trace_id)`):
//! one poll of a schedule, as its steps. Load the row; check that the
//! message is not stale or a duplicate; park it when an operator paused the
//! schedule; step the plugin; apply the guarded update with its attempt-log
//! row; publish the next poll and POST the plugin callback. Each step stops
//! early with a [`Stop`], settled in [`Task::finish`]. The decisions
//! themselves are [`super::decide`]'s.

use celerity_db::repo::ForPoll;
use celerity_db::{Attempt, DbError, ScheduleRow, State};
use chrono::NaiveDateTime;

use broker_proto::AMQPValue;
use opentelemetry::KeyValue;

use super::decide::{Decision, Prepared, conclude, fail_unrun, prepare};
use super::headers::{HOST_DEATHS_HEADER, expected_invoke_count, host_deaths, pending_fail};
use super::stop::{RetryCause, Stop};
use super::{Handled, Store, Task};
use crate::broker::{BrokerError, Publish};
use crate::plugins::{Callback, Local, StepError, StepInput, StepResult};
use crate::telemetry::spans;

/// One poll in progress: what its steps share.
struct Polling<'t> {
    trace_id: &'t str,
    /// With a callback, this message holds the `scheduling` lock.
    holds_lock: bool,
    /// When the poll started, for its attempt-log row.
    started: NaiveDateTime,
}

impl<S: Store, P: Publish> Task<'_, S, P> {
    /// Polls the schedule once (or writes its pending FAIL).
    pub async fn schedule(&self, trace_id: &str) -> Result<Handled, BrokerError> {
        let steps = match pending_fail(self.msg) {
            Some(err) => Err(Stop::Fail(err)),
            None => self.poll(trace_id, None).await,
        };
        self.finish(trace_id, false, steps).await
    }

    /// The steps of one poll of `trace_id`: load, check, park, step, apply,
    /// publish. With a callback, this message holds the `scheduling` lock,
    /// which every early end releases ([`Stop::Release`]).
    pub(super) async fn poll(&self, trace_id: &str, callback: Option<Callback>) -> Result<Handled, Stop> {
        let poll = Polling { trace_id, holds_lock: callback.is_some(), started: self.ctx.store.now() };
        let ForPoll { row, retrying, paused } = self.load(&poll).await?;
        spans::annotate(|| vec![KeyValue::new("bk_plugin.version", row.plugin_version.clone())]);
        self.check(&poll, &row).await?;
        // A poll already running when a pause lands completes; one that
        // starts after it is parked, whatever else it would do.
        if paused && !row.state().is_ok_and(State::is_final) && self.park(trace_id).await? {
            return Err(Stop::Release(Handled::Parked));
        }
        let pending = self.step(&row, callback).await?;
        let decision = self.apply(&poll, row, pending, retrying).await?;
        self.publish(&poll, decision).await
    }

    /// Load: the row, whether it is being retried, whether it is paused.
    async fn load(&self, poll: &Polling<'_>) -> Result<ForPoll, Stop> {
        match self.ctx.store.load_for_poll(poll.trace_id).await {
            Err(DbError::NotFound(_)) => {
                tracing::warn!("no schedule with this trace id; nothing to do");
                Err(Stop::Done(Handled::NoSuchSchedule))
            }
            loaded => Ok(loaded?),
        }
    }

    /// Check: a message that expects another invoke_count than the row's is
    /// stale or a duplicate, unless it is its own earlier try that landed.
    async fn check(&self, poll: &Polling<'_>, row: &ScheduleRow) -> Result<(), Stop> {
        let in_poll = row.state == State::Poll.code();
        let expected = match expected_invoke_count(self.msg) {
            Some(expected) => expected,
            None if !poll.holds_lock && in_poll && row.invoke_count > 1 => {
                match self.headerless_expectation(poll.trace_id, row.invoke_count).await? {
                    Some(expected) => expected,
                    None => return Ok(()),
                }
            }
            None => return Ok(()),
        };
        let found = i64::from(row.invoke_count);
        if found == expected {
            return Ok(());
        }
        if found == expected + 1 && in_poll {
            self.unless_own_landed(poll.trace_id, row.invoke_count).await?;
        }
        tracing::info!(expected, found, "stale or duplicate poll message; dropped");
        Err(Stop::Release(Handled::Stale))
    }

    /// Step: the plugin's step, or the decision made without one. A Rust
    /// plugin's step runs later, on the thread of the update after it.
    async fn step(&self, row: &ScheduleRow, callback: Option<Callback>) -> Result<Pending, Stop> {
        let ctx = self.ctx;
        let now = ctx.store.now();
        let input = match prepare(row, callback, now) {
            Prepared::AlreadyFinal => {
                tracing::info!("schedule already final; nothing to do");
                return Err(Stop::Release(Handled::AlreadyFinal));
            }
            Prepared::Decided(decision) => return Ok(Pending::Decided(decision)),
            Prepared::Step(input) => input,
        };
        let input = match ctx.plugins.local(input) {
            Local::Step(step) => return Ok(Pending::Step(Box::new(step))),
            Local::Elsewhere(input) => input,
        };
        let version = KeyValue::new("bk_plugin.version", row.plugin_version.clone());
        // A Python host runs the step in the run's context, so the plugin's
        // own spans are the run's children, as under the Python worker.
        let input = StepInput { trace_context: spans::current_context(), ..input };
        let decision = match spans::child("plugin step", vec![version], ctx.plugins.step(input)).await {
            Ok(step) => conclude(row, step, ctx.store.now()),
            Err(StepError::TimedOut(limit)) => {
                fail_unrun(row, format!("plugin schedule timed out after {} s", limit.as_secs_f64()), now)
            }
            Err(e @ StepError::Unreadable(_)) => fail_unrun(row, e.to_string(), now),
            Err(StepError::HostDied(status)) => return Err(Stop::HostDied(status)),
            Err(e @ StepError::NoHost(_)) => return Err(Stop::Retry(RetryCause::PluginHost, e.to_string())),
        };
        Ok(Pending::Decided(decision))
    }

    /// Apply: the guarded update and its attempt-log row, in one
    /// transaction. An update that finds the row moved on was overtaken.
    async fn apply(
        &self,
        poll: &Polling<'_>,
        row: ScheduleRow,
        pending: Pending,
        retrying: bool,
    ) -> Result<Decision, Stop> {
        let ctx = self.ctx;
        let (hostname, task_id) = (ctx.config.hostname.clone(), self.msg.id.clone());
        let (holds_lock, started) = (poll.holds_lock, poll.started);
        let decide = move |now: &dyn Fn() -> NaiveDateTime| {
            let mut decision = match pending {
                Pending::Decided(decision) => decision,
                Pending::Step(step) => conclude(&row, step(), now()),
            };
            decision.result.release_lock = holds_lock;
            let attempt = attempt_of(&decision, started, now(), hostname, task_id);
            (decision, attempt)
        };
        let transaction = [KeyValue::new("db.system", "mysql"), KeyValue::new("db.operation", "apply poll")];
        let (decision, applied) =
            spans::child("database transaction", transaction.into(), ctx.store.apply_poll(decide, retrying)).await?;
        if applied {
            return Ok(decision);
        }
        // The row moved on while this poll ran. If it was this message's own
        // earlier try, whose commit landed late (a frozen server), nobody
        // published the next poll yet.
        if decision.next_poll.is_some() {
            self.unless_own_landed(poll.trace_id, decision.result.invoke_count).await?;
        }
        tracing::info!("another delivery polled this schedule first; dropped");
        Err(Stop::Release(Handled::Stale))
    }

    /// Publish: the next poll, confirmed; then the plugin callback's POST,
    /// whose failure is logged, not retried by the task.
    async fn publish(&self, poll: &Polling<'_>, decision: Decision) -> Result<Handled, Stop> {
        let ctx = self.ctx;
        tracing::info!(state = decision.result.state.name(), invoke_count = decision.result.invoke_count, "polled");
        if let Some(countdown) = decision.next_poll {
            let next = ctx.sender.schedule(poll.trace_id, decision.result.invoke_count, countdown);
            ctx.publisher.publish_task_to_queue(&ctx.config.next_poll_queue, &next).await?;
        }
        if let Some(info) = decision.plugin_callback {
            let callbacks = ctx.plugins.callbacks().clone();
            let posted = tokio::task::spawn_blocking(move || callbacks.post_with_retry(&info.url, &info.data)).await;
            if let Ok(Err(e)) = posted {
                tracing::warn!(error = %e, "plugin callback not delivered");
            }
        }
        Ok(Handled::Polled(decision.result.state))
    }

    /// What a message without the invoke-count header may expect of a row in
    /// POLL past the producer's first poll. Such a message is the producer's
    /// first, or a Python worker's next poll. When Celerity's own attempt log
    /// holds the poll that made the row's current invoke_count, Celerity sent
    /// that poll's successor with the header, so this message is a duplicate or
    /// was late (a sweep stood in for it): it expected the count before.
    async fn headerless_expectation(&self, trace_id: &str, invoke_count: i32) -> Result<Option<i64>, DbError> {
        let landed = self.ctx.store.attempt(trace_id, invoke_count).await?;
        Ok(landed.map(|_| i64::from(invoke_count) - 1))
    }

    /// Stops with [`Stop::Landed`] when the poll that made `invoke_count`
    /// was this very message's earlier try (same task id) and the schedule
    /// still waits in POLL at that count: the message is a redelivery (a
    /// worker died) or a retry (the commit's answer was lost), and the next
    /// poll may never have been published. A fresh duplicate is not its own
    /// earlier try.
    async fn unless_own_landed(&self, trace_id: &str, invoke_count: i32) -> Result<(), Stop> {
        if !self.origin.redelivered && self.msg.retries == 0 {
            return Ok(());
        }
        let (row, landed) = self.ctx.store.load_with_attempt(trace_id, invoke_count).await?;
        let still_waiting = row.state == State::Poll.code() && row.invoke_count == invoke_count;
        match landed {
            Some(a)
                if still_waiting
                    && a.outcome == State::Poll.name()
                    && a.task_id.as_deref() == Some(self.msg.id.as_str()) =>
            {
                Err(Stop::Landed(invoke_count, a))
            }
            _ => Ok(()),
        }
    }

    /// Publishes again the next poll of a poll that landed, due when the attempt
    /// log says it was. If the first publish did happen, the two copies expect the
    /// same invoke_count: one polls, the other is dropped as stale.
    pub(super) async fn republish_next_poll(
        &self,
        trace_id: &str,
        invoke_count: i32,
        landed: &Attempt,
    ) -> Result<Handled, BrokerError> {
        let ctx = self.ctx;
        let now = ctx.store.now();
        let countdown = landed.next_poll_at.map_or(0, |at| (at - now).num_seconds().max(0) as u64);
        let next = ctx.sender.schedule(trace_id, invoke_count, countdown);
        ctx.publisher.publish_task_to_queue(&ctx.config.next_poll_queue, &next).await?;
        tracing::warn!(invoke_count, "the poll of an earlier try had landed; its next poll is published again");
        Ok(Handled::NextPollRepublished)
    }

    /// The plugin host died during this message's step, so the poll did not
    /// land: the message goes again, counting the death, until it has killed
    /// `--plugin-max-crashes` hosts; then the schedule fails saying how the
    /// last one died. A callback's copy keeps the lock it holds.
    pub(super) async fn after_host_death(&self, trace_id: &str, status: String) -> Result<Handled, BrokerError> {
        let ctx = self.ctx;
        let deaths = host_deaths(self.msg).saturating_add(1);
        if deaths >= ctx.config.plugin_max_crashes {
            let err = format!("plugin host died {deaths} times running this schedule; the last {status}");
            return self.fail_schedule(trace_id, err).await;
        }
        let mut again = self.msg.clone();
        again.extra_headers.insert(HOST_DEATHS_HEADER.into(), AMQPValue::LongInt(deaths as i32));
        ctx.publisher.publish_task_to_queue(&self.origin.queue, &again).await?;
        tracing::warn!(deaths, %status, "the plugin host died during the step; the message goes again");
        Ok(Handled::HostDied)
    }
}

/// A poll's decision before its update: made already, or to be made from
/// a Rust plugin's step on the thread that applies it.
enum Pending {
    Decided(Decision),
    Step(Box<dyn FnOnce() -> StepResult + Send>),
}

/// The attempt-log row of `decision`, ended at `ended`.
fn attempt_of(
    decision: &Decision,
    started: NaiveDateTime,
    ended: NaiveDateTime,
    hostname: String,
    task_id: String,
) -> Attempt {
    Attempt {
        trace_id: decision.result.trace_id.clone(),
        attempt: decision.result.invoke_count,
        started_at: started,
        ended_at: ended,
        outcome: decision.result.state.name().to_owned(),
        error: decision.result.err.clone().unwrap_or_default(),
        hostname,
        next_poll_at: decision
            .next_poll
            .map(|secs| ended + chrono::Duration::seconds(secs.min(i64::MAX as u64) as i64)),
        task_id: Some(task_id),
    }
}
