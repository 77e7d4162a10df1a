//! One poll of a schedule, with its I/O: load the row, recognise a stale or
//! duplicate message, run the plugin, apply the guarded update with its
//! attempt-log row, publish the next poll, POST the plugin callback; or
//! park the message when an operator paused the schedule. The
//! decisions themselves are [`super::decide`]'s.

use celerity_db::repo::ForPoll;
use celerity_db::{Attempt, DbError, State};
use chrono::NaiveDateTime;

use broker_proto::AMQPValue;

use super::decide::{Decision, Prepared, conclude, fail_unrun, prepare};
use super::headers::{HOST_DEATHS_HEADER, expected_invoke_count, host_deaths};
use super::{Handled, Store, Task};
use crate::broker::{BrokerError, Publish};
use crate::plugins::{Callback, Local, StepError, StepResult};

impl<S: Store, P: Publish> Task<'_, S, P> {
    /// Runs one poll of `trace_id`: load, plugin, guarded update, next poll.
    /// With a callback, this message holds the `scheduling` lock, which every
    /// way out releases.
    pub async fn poll(&self, trace_id: &str, callback: Option<Callback>) -> Result<Handled, BrokerError> {
        let ctx = self.ctx;
        let holds_lock = callback.is_some();
        let started = ctx.store.now();
        let ForPoll { row, retrying, paused } = match ctx.store.load_for_poll(trace_id).await {
            Ok(loaded) => loaded,
            Err(DbError::NotFound(_)) => {
                tracing::warn!("no schedule with this trace id; nothing to do");
                return Ok(Handled::NoSuchSchedule);
            }
            Err(e) => return self.on_db_error(Some(trace_id), e).await,
        };
        if let Some(expected) = match expected_invoke_count(self.msg) {
            Some(expected) => Some(expected),
            None if !holds_lock && row.state == State::Poll.code() && row.invoke_count > 1 => {
                match self.headerless_expectation(trace_id, row.invoke_count).await {
                    Ok(expected) => expected,
                    Err(e) => return self.on_db_error(Some(trace_id), e).await,
                }
            }
            None => None,
        } && i64::from(row.invoke_count) != expected
        {
            if i64::from(row.invoke_count) == expected + 1 && row.state == State::Poll.code() {
                match self.own_landed_poll(trace_id, row.invoke_count).await {
                    Ok(Some(landed)) => return self.republish_next_poll(trace_id, row.invoke_count, &landed).await,
                    Ok(None) => {}
                    Err(e) => return self.on_db_error(Some(trace_id), e).await,
                }
            }
            tracing::info!(expected, found = row.invoke_count, "stale or duplicate poll message; dropped");
            return self.release(trace_id, holds_lock, Handled::Stale).await;
        }
        // A poll already running when a pause lands completes; one that
        // starts after it is parked, whatever else it would do.
        if paused && !row.state().is_ok_and(State::is_final) {
            match self.park(trace_id).await {
                Ok(true) => return self.release(trace_id, holds_lock, Handled::Parked).await,
                Ok(false) => {}
                Err(e) => return self.on_db_error(Some(trace_id), e).await,
            }
        }
        let now = ctx.store.now();
        let pending = match prepare(&row, callback, now) {
            Prepared::AlreadyFinal => {
                tracing::info!("schedule already final; nothing to do");
                return self.release(trace_id, holds_lock, Handled::AlreadyFinal).await;
            }
            Prepared::Decided(decision) => Pending::Decided(decision),
            // A Rust plugin's step runs on the thread of the update after it.
            Prepared::Step(input) => match ctx.plugins.local(input) {
                Local::Step(step) => Pending::Step(Box::new(step)),
                Local::Elsewhere(input) => match ctx.plugins.step(input).await {
                    Ok(step) => Pending::Decided(conclude(&row, step, ctx.store.now())),
                    Err(StepError::TimedOut(limit)) => Pending::Decided(fail_unrun(
                        &row,
                        format!("plugin schedule timed out after {} s", limit.as_secs_f64()),
                        now,
                    )),
                    Err(e @ StepError::Unreadable(_)) => Pending::Decided(fail_unrun(&row, e.to_string(), now)),
                    Err(StepError::HostDied(status)) => return self.after_host_death(trace_id, status).await,
                    Err(e @ StepError::NoHost(_)) => {
                        return self.retry_later(Some(trace_id), "plugin host", e.to_string()).await;
                    }
                },
            },
        };
        let (hostname, task_id) = (ctx.config.hostname.clone(), self.msg.id.clone());
        let decide = move |now: &dyn Fn() -> NaiveDateTime| {
            let mut decision = match pending {
                Pending::Decided(decision) => decision,
                Pending::Step(step) => conclude(&row, step(), now()),
            };
            decision.result.release_lock = holds_lock;
            let attempt = attempt_of(&decision, started, now(), hostname, task_id);
            (decision, attempt)
        };
        let decision = match ctx.store.apply_poll(decide, retrying).await {
            Ok((decision, true)) => decision,
            Ok((decision, false)) => {
                // The row moved on while this poll ran. If it was this message's
                // own earlier try, whose commit landed late (a frozen server),
                // nobody published the next poll yet.
                if decision.next_poll.is_some() {
                    let invoke_count = decision.result.invoke_count;
                    match self.own_landed_poll(trace_id, invoke_count).await {
                        Ok(Some(landed)) => return self.republish_next_poll(trace_id, invoke_count, &landed).await,
                        Ok(None) => {}
                        Err(e) => return self.on_db_error(Some(trace_id), e).await,
                    }
                }
                tracing::info!("another delivery polled this schedule first; dropped");
                return self.release(trace_id, holds_lock, Handled::Stale).await;
            }
            Err(e) => return self.on_db_error(Some(trace_id), e).await,
        };
        tracing::info!(state = decision.result.state.name(), invoke_count = decision.result.invoke_count, "polled");
        if let Some(countdown) = decision.next_poll {
            let next = ctx.sender.schedule(trace_id, decision.result.invoke_count, countdown);
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

    /// The landed poll that made `invoke_count`, if it was this very message's
    /// earlier try (same task id) and the schedule still waits in POLL at that
    /// count: the message is a redelivery (a worker died) or a retry (the
    /// commit's answer was lost), and the next poll may never have been
    /// published. A fresh duplicate is not its own earlier try.
    async fn own_landed_poll(&self, trace_id: &str, invoke_count: i32) -> Result<Option<Attempt>, DbError> {
        if !self.origin.redelivered && self.msg.retries == 0 {
            return Ok(None);
        }
        let (row, landed) = self.ctx.store.load_with_attempt(trace_id, invoke_count).await?;
        let still_waiting = row.state == State::Poll.code() && row.invoke_count == invoke_count;
        Ok(landed.filter(|a| {
            still_waiting && a.outcome == State::Poll.name() && a.task_id.as_deref() == Some(self.msg.id.as_str())
        }))
    }

    /// Publishes again the next poll of a poll that landed, due when the attempt
    /// log says it was. If the first publish did happen, the two copies expect the
    /// same invoke_count: one polls, the other is dropped as stale.
    async fn republish_next_poll(
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
    async fn after_host_death(&self, trace_id: &str, status: String) -> Result<Handled, BrokerError> {
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

    /// Releases the callback lock when this poll held it, then reports `done`.
    async fn release(&self, trace_id: &str, holds_lock: bool, done: Handled) -> Result<Handled, BrokerError> {
        if !holds_lock {
            return Ok(done);
        }
        match self.ctx.store.unlock(trace_id).await {
            Ok(()) => Ok(done),
            Err(e) => self.on_db_error(Some(trace_id), e).await,
        }
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
