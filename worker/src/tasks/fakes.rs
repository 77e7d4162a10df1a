//! In-process fakes behind the tasks' narrow traits, for unit tests of the
//! logic: a store that keeps rows, attempts and retry bookkeeping in memory
//! and can be told to fail a statement, and a publisher that records what
//! it took and can be told to refuse. Integration tests use the real
//! MariaDB and RabbitMQ instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use broker_proto::{DecodeOptions, TaskMessage, topology};
use celerity_db::repo::ForPoll;
use celerity_db::{Attempt, DbError, HeldCallback, Parked, PollResult, RetryState, ScheduleRow, State};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use lapin::BasicProperties;

use super::decide::Decision;
use super::messages::Sender;
use super::{Ctx, Origin, Store};
use crate::broker::properties::properties_of;
use crate::broker::{BrokerError, Publish};
use crate::config::WorkerConfig;
use crate::control::inflight::InFlight;
use crate::control::pause::Pause;
use crate::plugins::{Plugins, Registry};

/// The fake clock of the store: every `now()` is this.
pub(crate) fn now() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 30).and_then(|d| d.and_hms_opt(12, 0, 0)).expect("a valid time")
}

/// An example-plugin schedule in `state` at `invoke_count`, as the
/// framework's producer leaves it when `invoke_count` is 1.
pub(crate) fn row(trace_id: &str, state: State, invoke_count: i32, polls: i64, interval: i64) -> ScheduleRow {
    ScheduleRow {
        trace_id: trace_id.into(),
        plugin_version: "1.0.0".into(),
        state: state.code(),
        invoke_count,
        data: format!(
            r#"{{"inputs": {{"polls": {polls}, "interval": {interval}}}, "context": {{"storage": {{"executions": {invoke_count}}}, "outputs": {{}}, "data": {{}}}}, "outputs": {{}}}}"#
        ),
        created_at: now(),
        finish_at: None,
        scheduling: false,
        err: String::new(),
    }
}

/// A change another worker makes to the tables.
type Change = Box<dyn FnOnce(&mut Tables) + Send>;

/// What the fake store holds.
#[derive(Default)]
pub(crate) struct Tables {
    pub rows: HashMap<String, ScheduleRow>,
    pub attempts: HashMap<(String, i32), Attempt>,
    /// Trace ids with retry bookkeeping.
    pub retrying: HashSet<String>,
    /// Every retry bookkeeping write, in order.
    pub retries: Vec<RetryState>,
    /// The callback task holding each `scheduling` lock it took.
    pub lock_owners: HashMap<String, String>,
    /// Trace ids an operator paused.
    pub paused: HashSet<String>,
    /// Messages parked, in order.
    pub parked: Vec<Parked>,
    /// Errors the next calls of a statement return, by statement name.
    failures: HashMap<&'static str, VecDeque<DbError>>,
    /// Statements called, in order.
    pub calls: Vec<&'static str>,
    /// Runs before the next guarded update, as another worker would.
    before_apply: Option<Change>,
}

/// A store in memory.
#[derive(Default, Clone)]
pub(crate) struct FakeStore {
    tables: Arc<Mutex<Tables>>,
}

impl FakeStore {
    /// A store holding `rows`.
    pub(crate) fn with(rows: impl IntoIterator<Item = ScheduleRow>) -> FakeStore {
        let store = FakeStore::default();
        store.tables().rows.extend(rows.into_iter().map(|r| (r.trace_id.clone(), r)));
        store
    }

    /// The tables, to look at or change.
    pub(crate) fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The row of `trace_id`.
    pub(crate) fn row(&self, trace_id: &str) -> ScheduleRow {
        self.tables().rows.get(trace_id).cloned().expect("the row is there")
    }

    /// The next call of `statement` fails with `err`.
    pub(crate) fn fail_next(&self, statement: &'static str, err: DbError) {
        self.tables().failures.entry(statement).or_default().push_back(err);
    }

    /// Runs `change` just before the next guarded update.
    pub(crate) fn before_apply(&self, change: impl FnOnce(&mut Tables) + Send + 'static) {
        self.tables().before_apply = Some(Box::new(change));
    }

    /// Records the call of `statement`, failing it if told to.
    fn call(&self, statement: &'static str) -> Result<MutexGuard<'_, Tables>, DbError> {
        let mut tables = self.tables();
        tables.calls.push(statement);
        match tables.failures.get_mut(statement).and_then(VecDeque::pop_front) {
            Some(err) => Err(err),
            None => Ok(tables),
        }
    }
}

impl Tables {
    fn row(&self, trace_id: &str) -> Result<&ScheduleRow, DbError> {
        self.rows.get(trace_id).ok_or_else(|| DbError::NotFound(trace_id.to_owned()))
    }

    fn is_final(row: &ScheduleRow) -> bool {
        row.state().is_ok_and(State::is_final)
    }
}

impl FakeStore {
    /// The guarded update with its attempt-log row, as the real one applies it.
    fn apply(&self, result: &PollResult, attempt: Attempt, retrying: bool) -> Result<bool, DbError> {
        let mut tables = self.call("apply_poll")?;
        if let Some(change) = tables.before_apply.take() {
            change(&mut tables);
        }
        let Some(row) = tables.rows.get_mut(&result.trace_id) else { return Ok(false) };
        let open = row.state == State::Poll.code() || row.state == State::Callback.code();
        if !open || row.invoke_count != result.seen_invoke_count {
            return Ok(false);
        }
        row.state = result.state.code();
        row.invoke_count = result.invoke_count;
        if let Some(data) = &result.data {
            row.data.clone_from(data);
        }
        if let Some(err) = &result.err {
            row.err.clone_from(err);
        }
        row.finish_at = result.finish_at;
        if result.release_lock {
            row.scheduling = false;
            tables.lock_owners.remove(&result.trace_id);
        }
        if retrying || result.state.is_final() {
            tables.retrying.remove(&result.trace_id);
        }
        tables.attempts.entry((attempt.trace_id.clone(), attempt.attempt)).or_insert(attempt);
        Ok(true)
    }
}

impl Store for FakeStore {
    fn now(&self) -> NaiveDateTime {
        now()
    }

    async fn load_for_poll(&self, trace_id: &str) -> Result<ForPoll, DbError> {
        let tables = self.call("load_for_poll")?;
        Ok(ForPoll {
            row: tables.row(trace_id)?.clone(),
            retrying: tables.retrying.contains(trace_id),
            paused: tables.paused.contains(trace_id),
        })
    }

    async fn park(&self, parked: Parked) -> Result<bool, DbError> {
        let mut tables = self.call("park")?;
        if !tables.paused.contains(&parked.trace_id) {
            return Ok(false);
        }
        if !tables.parked.iter().any(|p| p.trace_id == parked.trace_id && p.task_id == parked.task_id) {
            tables.parked.push(parked);
        }
        Ok(true)
    }

    async fn load(&self, trace_id: &str) -> Result<ScheduleRow, DbError> {
        Ok(self.call("load")?.row(trace_id)?.clone())
    }

    async fn attempt(&self, trace_id: &str, invoke_count: i32) -> Result<Option<Attempt>, DbError> {
        Ok(self.call("attempt")?.attempts.get(&(trace_id.to_owned(), invoke_count)).cloned())
    }

    async fn load_with_attempt(
        &self,
        trace_id: &str,
        invoke_count: i32,
    ) -> Result<(ScheduleRow, Option<Attempt>), DbError> {
        let tables = self.call("load_with_attempt")?;
        Ok((tables.row(trace_id)?.clone(), tables.attempts.get(&(trace_id.to_owned(), invoke_count)).cloned()))
    }

    async fn apply_poll<F>(&self, decide: F, retrying: bool) -> Result<(Decision, bool), DbError>
    where
        F: FnOnce(&dyn Fn() -> NaiveDateTime) -> (Decision, Attempt) + Send + 'static,
    {
        let (decision, attempt) = decide(&now);
        let applied = self.apply(&decision.result, attempt, retrying)?;
        Ok((decision, applied))
    }

    async fn fail(&self, trace_id: &str, err: &str, finish_at: NaiveDateTime) -> Result<bool, DbError> {
        let mut tables = self.call("fail")?;
        let Some(row) = tables.rows.get_mut(trace_id).filter(|r| !Tables::is_final(r)) else { return Ok(false) };
        row.state = State::Fail.code();
        row.err = err.to_owned();
        row.finish_at = Some(finish_at);
        row.scheduling = false;
        tables.retrying.remove(trace_id);
        tables.lock_owners.remove(trace_id);
        Ok(true)
    }

    async fn try_lock(&self, callback: HeldCallback) -> Result<bool, DbError> {
        let mut tables = self.call("try_lock")?;
        let Some(row) = tables.rows.get_mut(&callback.trace_id) else { return Ok(false) };
        if row.scheduling {
            return Ok(tables.lock_owners.get(&callback.trace_id).is_some_and(|owner| *owner == callback.task_id));
        }
        row.scheduling = true;
        tables.lock_owners.insert(callback.trace_id, callback.task_id);
        Ok(true)
    }

    async fn unlock(&self, trace_id: &str, task_id: &str) -> Result<(), DbError> {
        let mut tables = self.call("unlock")?;
        if tables.lock_owners.get(trace_id).is_some_and(|owner| owner != task_id) {
            return Ok(());
        }
        tables.lock_owners.remove(trace_id);
        if let Some(row) = tables.rows.get_mut(trace_id) {
            row.scheduling = false;
        }
        Ok(())
    }

    async fn record_retry(&self, state: RetryState) -> Result<(), DbError> {
        let mut tables = self.call("record_retry")?;
        tables.retrying.insert(state.trace_id.clone());
        tables.retries.push(state);
        Ok(())
    }

    async fn delete_finished_before(&self, cutoff: NaiveDateTime, _batch: i64) -> Result<u64, DbError> {
        let mut tables = self.call("delete_finished_before")?;
        let before = tables.rows.len();
        tables.rows.retain(|_, r| r.finish_at.is_none_or(|at| at >= cutoff));
        Ok((before - tables.rows.len()) as u64)
    }
}

/// One message the fake publisher took.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub queue: String,
    pub eta: Option<DateTime<FixedOffset>>,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

impl Sent {
    /// The Celery message it carries.
    pub(crate) fn message(&self) -> TaskMessage {
        broker_proto::decode(&properties_of(&self.properties), &self.body, &DecodeOptions::default())
            .expect("a Celery message")
    }
}

/// A publisher that records what it took.
#[derive(Default, Clone)]
pub(crate) struct FakePublisher {
    sent: Arc<Mutex<Vec<Sent>>>,
    refuse: Arc<Mutex<u32>>,
}

impl FakePublisher {
    /// What it took, in order.
    pub(crate) fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The next `n` publishes are refused, as a broker nack.
    pub(crate) fn refuse_next(&self, n: u32) {
        *self.refuse.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }
}

impl Publish for FakePublisher {
    async fn publish_to_queue(
        &self,
        queue: &str,
        eta: Option<DateTime<FixedOffset>>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        {
            let mut refuse = self.refuse.lock().unwrap_or_else(|p| p.into_inner());
            if *refuse > 0 {
                *refuse -= 1;
                return Err(BrokerError::Nacked(queue.to_owned()));
            }
        }
        let sent = Sent { queue: queue.to_owned(), eta, body: body.to_vec(), properties };
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).push(sent);
        Ok(())
    }
}

/// A worker's shared state over the fakes, with the built-in plugins and
/// the default configuration.
pub(crate) fn ctx(store: FakeStore) -> Ctx<FakeStore, FakePublisher> {
    Ctx {
        store,
        publisher: FakePublisher::default(),
        plugins: Plugins::rust(Registry::with_builtin()),
        config: WorkerConfig::new("amqp://127.0.0.1/%2f", "mysql://root@127.0.0.1/celerity"),
        sender: Sender::new("celerity@unit"),
        events: None,
        inflight: Arc::new(InFlight::new("celerity@unit")),
        pause: Pause::new(),
    }
}

/// A delivery from the producer's queue, first time.
pub(crate) fn from_plugin_schedule() -> Origin {
    Origin { queue: topology::SCHEDULE_QUEUE.name.into(), redelivered: false }
}
