//! Rows and the values written into them.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::error::DbError;
use crate::schema::{
    celerity_action, celerity_attempt, celerity_callback_lock, celerity_parked, celerity_pause,
    celerity_schedule_retry, schedule_schedule,
};

/// States a poll may still change. A static, so statements can bind them.
pub(crate) static OPEN_STATES: [i32; 2] = [State::Poll as i32, State::Callback as i32];

/// `schedule_schedule.state`, as the framework's enum numbers it. Nothing
/// outside 1..=5 is ever written: Python readers map it through their enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// 1: created, not yet executed.
    Empty = 1,
    /// 2: polling.
    Poll = 2,
    /// 3: waiting for a callback.
    Callback = 3,
    /// 4: finished successfully.
    Success = 4,
    /// 5: failed.
    Fail = 5,
}

impl State {
    /// The column value.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// SUCCESS and FAIL: nothing changes a final schedule.
    pub fn is_final(self) -> bool {
        matches!(self, State::Success | State::Fail)
    }

    /// The state's name as the framework spells it.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "EMPTY",
            State::Poll => "POLL",
            State::Callback => "CALLBACK",
            State::Success => "SUCCESS",
            State::Fail => "FAIL",
        }
    }
}

impl TryFrom<i32> for State {
    type Error = DbError;

    fn try_from(v: i32) -> Result<State, DbError> {
        Ok(match v {
            1 => State::Empty,
            2 => State::Poll,
            3 => State::Callback,
            4 => State::Success,
            5 => State::Fail,
            other => return Err(DbError::BadData(format!("schedule state {other} is outside 1..=5"))),
        })
    }
}

/// One `schedule_schedule` row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = schedule_schedule)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct ScheduleRow {
    /// uuid4 hex.
    pub trace_id: String,
    /// Selects the plugin.
    pub plugin_version: String,
    /// Raw state column; see [`ScheduleRow::state`].
    pub state: i32,
    /// 1 after the producer's execute, +1 per poll.
    pub invoke_count: i32,
    /// JSON text: inputs, context, outputs.
    pub data: String,
    /// When the producer created it (naive, in the configured zone).
    pub created_at: NaiveDateTime,
    /// When it reached a final state.
    pub finish_at: Option<NaiveDateTime>,
    /// The callback task's lock.
    pub scheduling: bool,
    /// Error text on FAIL.
    pub err: String,
}

impl ScheduleRow {
    /// The typed state, or bad data.
    pub fn state(&self) -> Result<State, DbError> {
        State::try_from(self.state)
    }
}

/// A new `schedule_schedule` row, written as the framework's producer writes it.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = schedule_schedule)]
pub struct NewSchedule {
    /// uuid4 hex.
    pub trace_id: String,
    /// Selects the plugin.
    pub plugin_version: String,
    /// Usually POLL.
    pub state: i32,
    /// 1 after the producer's own execute.
    pub invoke_count: i32,
    /// JSON text.
    pub data: String,
    /// Creation time.
    pub created_at: NaiveDateTime,
    /// NULL until final.
    pub finish_at: Option<NaiveDateTime>,
    /// 0.
    pub scheduling: bool,
    /// Empty.
    pub err: String,
}

/// The result of one poll, applied only if the row is still as the poll saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct PollResult {
    /// The schedule.
    pub trace_id: String,
    /// The `invoke_count` the poll read; the update applies only if unchanged.
    pub seen_invoke_count: i32,
    /// The new state.
    pub state: State,
    /// The new `invoke_count` (seen + 1).
    pub invoke_count: i32,
    /// New `data`, or `None` to leave it (the "unexpected error" FAIL).
    pub data: Option<String>,
    /// New `err`, or `None` to leave it.
    pub err: Option<String>,
    /// `finish_at` to set, for final states.
    pub finish_at: Option<NaiveDateTime>,
    /// Release the callback task's `scheduling` lock in the same update.
    pub release_lock: bool,
}

/// The callback task holding a schedule's `scheduling` lock: enough to
/// recognise its redelivered copy and to send it again.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, QueryableByName)]
#[diesel(table_name = celerity_callback_lock)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct HeldCallback {
    /// The schedule.
    pub trace_id: String,
    /// The callback task's id.
    pub task_id: String,
    /// Its `callback_id` argument.
    pub callback_id: String,
    /// Its `callback_data` argument (JSON text).
    pub callback_data: String,
}

/// Retry bookkeeping of one schedule (a row exists while it is RETRYING).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = celerity_schedule_retry)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct RetryState {
    /// The schedule.
    pub trace_id: String,
    /// Retries so far (the `retries` of the re-published message).
    pub retries: i32,
    /// First transient failure of this run of retries.
    pub first_failure_at: NaiveDateTime,
    /// Latest transient failure.
    pub last_failure_at: NaiveDateTime,
    /// When the re-published message is due.
    pub next_retry_at: Option<NaiveDateTime>,
    /// `transient` or `fatal`.
    pub last_error_class: String,
    /// The latest error's text.
    pub last_error: String,
}

/// One poll in the attempt log.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = celerity_attempt)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Attempt {
    /// The schedule.
    pub trace_id: String,
    /// The `invoke_count` this poll produced.
    pub attempt: i32,
    /// When the poll started.
    pub started_at: NaiveDateTime,
    /// When its result was written.
    pub ended_at: NaiveDateTime,
    /// The state it left: POLL, CALLBACK, SUCCESS or FAIL.
    pub outcome: String,
    /// Error text, empty if none.
    pub error: String,
    /// The worker that ran it.
    pub hostname: String,
    /// When the next poll it enqueued is due, if it kept polling.
    pub next_poll_at: Option<NaiveDateTime>,
    /// The id of the task message that ran it.
    pub task_id: Option<String>,
}

/// A schedule an operator paused.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = celerity_pause)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct PauseRecord {
    /// The schedule.
    pub trace_id: String,
    /// When it was paused.
    pub paused_at: NaiveDateTime,
    /// Who paused it.
    pub paused_by: String,
    /// Why.
    pub reason: String,
}

/// A message parked for a paused schedule, as it will be sent again.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = celerity_parked)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Parked {
    /// The schedule.
    pub trace_id: String,
    /// The message's task id.
    pub task_id: String,
    /// The task name (`...schedule` or `...callback`).
    pub task: String,
    /// The queue it goes back to.
    pub queue: String,
    /// When it is due, in the tables' zone, if it has an eta.
    pub eta: Option<NaiveDateTime>,
    /// When it was parked.
    pub parked_at: NaiveDateTime,
    /// When a resume released it.
    pub released_at: Option<NaiveDateTime>,
    /// The message itself, as the worker encodes it.
    pub message: String,
}

/// One operator action that changed a schedule.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = celerity_action)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct ActionRecord {
    /// Order of recording.
    pub id: i64,
    /// The schedule.
    pub trace_id: String,
    /// `pause`, `resume` or `stop`.
    pub action: String,
    /// Who.
    pub actor: String,
    /// When.
    pub at: NaiveDateTime,
    /// Why.
    pub reason: String,
    /// The status it acted on.
    pub from_status: String,
}
