//! What the tasks need of the database, as one narrow trait: the real
//! [`Db`] runs each call on `spawn_blocking` under its deadline, and the
//! tasks' unit tests use an in-process fake.

use std::future::Future;

use celerity_db::repo::ForPoll;
use celerity_db::{Attempt, Db, DbError, HeldCallback, Parked, RetryState, ScheduleRow, operator, repo};
use chrono::NaiveDateTime;

use super::decide::Decision;

/// The statements of the tasks, each one call.
pub trait Store: Send + Sync + 'static {
    /// Now, in the tables' zone and precision.
    fn now(&self) -> NaiveDateTime;

    /// The schedule, whether it has retry bookkeeping and whether it is paused.
    fn load_for_poll(&self, trace_id: &str) -> impl Future<Output = Result<ForPoll, DbError>> + Send;

    /// Parks a message of a paused schedule; false when it is paused no more.
    fn park(&self, parked: Parked) -> impl Future<Output = Result<bool, DbError>> + Send;

    /// The schedule.
    fn load(&self, trace_id: &str) -> impl Future<Output = Result<ScheduleRow, DbError>> + Send;

    /// The landed poll that made `invoke_count`, if the attempt log has it.
    fn attempt(
        &self,
        trace_id: &str,
        invoke_count: i32,
    ) -> impl Future<Output = Result<Option<Attempt>, DbError>> + Send;

    /// The schedule and the landed poll that made `invoke_count`, in one call.
    fn load_with_attempt(
        &self,
        trace_id: &str,
        invoke_count: i32,
    ) -> impl Future<Output = Result<(ScheduleRow, Option<Attempt>), DbError>> + Send;

    /// Makes a poll's decision with `decide`, given a clock (it may run a
    /// Rust plugin's step, which may block), then applies the guarded update
    /// with its attempt-log row, both on one blocking thread; the decision
    /// and whether it applied.
    fn apply_poll<F>(
        &self,
        decide: F,
        retrying: bool,
    ) -> impl Future<Output = Result<(Decision, bool), DbError>> + Send
    where
        F: FnOnce(&dyn Fn() -> NaiveDateTime) -> (Decision, Attempt) + Send + 'static;

    /// FAIL with `err` and `finish_at` unless already final; whether it applied.
    fn fail(
        &self,
        trace_id: &str,
        err: &str,
        finish_at: NaiveDateTime,
    ) -> impl Future<Output = Result<bool, DbError>> + Send;

    /// Takes the callback lock for `callback`; whether it holds it (a
    /// redelivered copy of the task that took it does).
    fn try_lock(&self, callback: HeldCallback) -> impl Future<Output = Result<bool, DbError>> + Send;

    /// Releases the callback lock if the callback task `task_id` holds it.
    fn unlock(&self, trace_id: &str, task_id: &str) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Records the retry bookkeeping operators see as RETRYING.
    fn record_retry(&self, state: RetryState) -> impl Future<Output = Result<(), DbError>> + Send;

    /// Deletes schedules finished before `cutoff`, `batch` per transaction; how many.
    fn delete_finished_before(
        &self,
        cutoff: NaiveDateTime,
        batch: i64,
    ) -> impl Future<Output = Result<u64, DbError>> + Send;
}

impl Store for Db {
    fn now(&self) -> NaiveDateTime {
        Db::now(self)
    }

    async fn load_for_poll(&self, trace_id: &str) -> Result<ForPoll, DbError> {
        let id = trace_id.to_owned();
        self.call(move |c| repo::load_for_poll(c, &id)).await
    }

    async fn park(&self, parked: Parked) -> Result<bool, DbError> {
        self.call(move |c| operator::park(c, &parked)).await
    }

    async fn load(&self, trace_id: &str) -> Result<ScheduleRow, DbError> {
        let id = trace_id.to_owned();
        self.call(move |c| repo::load(c, &id)).await
    }

    async fn attempt(&self, trace_id: &str, invoke_count: i32) -> Result<Option<Attempt>, DbError> {
        let id = trace_id.to_owned();
        self.call(move |c| repo::attempt(c, &id, invoke_count)).await
    }

    async fn load_with_attempt(
        &self,
        trace_id: &str,
        invoke_count: i32,
    ) -> Result<(ScheduleRow, Option<Attempt>), DbError> {
        let id = trace_id.to_owned();
        self.call(move |c| Ok((repo::load(c, &id)?, repo::attempt(c, &id, invoke_count)?))).await
    }

    async fn apply_poll<F>(&self, decide: F, retrying: bool) -> Result<(Decision, bool), DbError>
    where
        F: FnOnce(&dyn Fn() -> NaiveDateTime) -> (Decision, Attempt) + Send + 'static,
    {
        let clock = self.clone();
        let decided = self
            .call_after(
                move || decide(&|| clock.now()),
                move |(decision, attempt), c| repo::apply_poll_seen(c, &decision.result, Some(attempt), retrying),
            )
            .await?;
        let ((decision, _), applied) = decided;
        Ok((decision, applied))
    }

    async fn fail(&self, trace_id: &str, err: &str, finish_at: NaiveDateTime) -> Result<bool, DbError> {
        let (id, err) = (trace_id.to_owned(), err.to_owned());
        self.call(move |c| repo::fail(c, &id, &err, finish_at, None)).await
    }

    async fn try_lock(&self, callback: HeldCallback) -> Result<bool, DbError> {
        let at = self.now();
        self.call(move |c| repo::try_lock(c, &callback, at)).await
    }

    async fn unlock(&self, trace_id: &str, task_id: &str) -> Result<(), DbError> {
        let (id, task) = (trace_id.to_owned(), task_id.to_owned());
        self.call(move |c| repo::unlock(c, &id, &task)).await
    }

    async fn record_retry(&self, state: RetryState) -> Result<(), DbError> {
        self.call(move |c| repo::record_retry(c, &state)).await
    }

    async fn delete_finished_before(&self, cutoff: NaiveDateTime, batch: i64) -> Result<u64, DbError> {
        self.call(move |c| repo::delete_finished_before(c, cutoff, batch)).await
    }
}
