//! The repository: every statement Celerity runs, blocking, on one
//! connection. The worker reaches it through [`crate::Db`], which runs it on
//! `spawn_blocking` under a deadline.

use chrono::NaiveDateTime;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::Bool;

use crate::error::DbError;
use crate::models::{Attempt, HeldCallback, NewSchedule, OPEN_STATES, PollResult, RetryState, ScheduleRow, State};
use crate::prepared::{GuardedUpdate, LogAttempt};
use crate::schema::{
    celerity_action, celerity_attempt, celerity_callback_lock, celerity_parked, celerity_pause,
    celerity_schedule_retry, celerity_sweep, schedule_schedule,
};
use crate::tx;

/// States nothing changes any more.
const FINAL_STATES: [i32; 2] = [State::Success as i32, State::Fail as i32];

/// The schedule with this trace id.
pub fn load(conn: &mut MysqlConnection, trace_id: &str) -> Result<ScheduleRow, DbError> {
    schedule_schedule::table
        .find(trace_id)
        .select(ScheduleRow::as_select())
        .first(conn)
        .optional()?
        .ok_or_else(|| DbError::NotFound(trace_id.to_owned()))
}

/// A schedule as a poll loads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ForPoll {
    /// The row.
    pub row: ScheduleRow,
    /// Whether it has retry bookkeeping: a poll then clears it only when
    /// there is some (see [`apply_poll_seen`]).
    pub retrying: bool,
    /// Whether an operator paused it: its messages are parked, not run.
    pub paused: bool,
}

/// The schedule with this trace id, whether it has retry bookkeeping and
/// whether it is paused, in one round trip.
pub fn load_for_poll(conn: &mut MysqlConnection, trace_id: &str) -> Result<ForPoll, DbError> {
    let (row, retrying, paused) = schedule_schedule::table
        .left_join(celerity_schedule_retry::table.on(celerity_schedule_retry::trace_id.eq(schedule_schedule::trace_id)))
        .left_join(celerity_pause::table.on(celerity_pause::trace_id.eq(schedule_schedule::trace_id)))
        .filter(schedule_schedule::trace_id.eq(trace_id))
        .select((
            ScheduleRow::as_select(),
            celerity_schedule_retry::trace_id.nullable().is_not_null(),
            celerity_pause::trace_id.nullable().is_not_null(),
        ))
        .first(conn)
        .optional()?
        .ok_or_else(|| DbError::NotFound(trace_id.to_owned()))?;
    Ok(ForPoll { row, retrying, paused })
}

/// Inserts a schedule as the framework's producer does (tests, demo, bench).
pub fn insert(conn: &mut MysqlConnection, row: &NewSchedule) -> Result<(), DbError> {
    diesel::insert_into(schedule_schedule::table).values(row).execute(conn)?;
    Ok(())
}

/// Applies a poll's result if the row is still open and at the
/// `invoke_count` the poll saw, and then (same transaction) clears the retry
/// bookkeeping and appends `attempt`. Returns whether it applied: a duplicate
/// or stale delivery changes nothing, the attempt log included.
pub fn apply_poll(conn: &mut MysqlConnection, result: &PollResult, attempt: Option<&Attempt>) -> Result<bool, DbError> {
    apply_poll_seen(conn, result, attempt, true)
}

/// [`apply_poll`] for a poll that loaded its row with [`load_for_poll`]:
/// `retrying` says whether the schedule had retry bookkeeping then. Without
/// it, a poll that leaves the schedule open skips the delete of retry
/// bookkeeping: a poll costs 5 statements (the load, `BEGIN`, the guarded
/// `UPDATE`, the attempt `INSERT`, `COMMIT`) and a final one a sixth, 5.4
/// per poll over W1 (BENCHMARKS.md). Bookkeeping a concurrent duplicate wrote after
/// that load is cleared by the schedule's next poll, and a final poll always
/// clears, so none outlives its schedule.
pub fn apply_poll_seen(
    conn: &mut MysqlConnection,
    result: &PollResult,
    attempt: Option<&Attempt>,
    retrying: bool,
) -> Result<bool, DbError> {
    let clear = retrying || !OPEN_STATES.contains(&result.state.code());
    tx::transaction(conn, |conn| {
        let updated = GuardedUpdate {
            trace_id: &result.trace_id,
            seen_invoke_count: result.seen_invoke_count,
            state: result.state.code(),
            invoke_count: result.invoke_count,
            data: result.data.as_deref(),
            err: result.err.as_deref(),
            finish_at: result.finish_at,
            scheduling: result.release_lock.then_some(false),
        }
        .execute(conn)?;
        if updated == 0 {
            return Ok(false);
        }
        if result.release_lock {
            diesel::delete(celerity_callback_lock::table.find(&result.trace_id)).execute(conn)?;
        }
        if clear {
            clear_retry(conn, &result.trace_id)?;
        }
        if let Some(attempt) = attempt {
            // A poll that failed before running the plugin keeps its invoke_count,
            // so its attempt number may already be logged.
            LogAttempt(attempt).execute(conn)?;
        }
        Ok(true)
    })
}

/// Sets FAIL with `err` and `finish_at` unless the row is already final
/// (SUCCESS or FAIL), releases the `scheduling` lock (a failed schedule needs
/// none), clears the retry bookkeeping and appends `attempt`. Returns whether
/// it applied.
pub fn fail(
    conn: &mut MysqlConnection,
    trace_id: &str,
    err: &str,
    finish_at: NaiveDateTime,
    attempt: Option<&Attempt>,
) -> Result<bool, DbError> {
    tx::transaction(conn, |conn| {
        let updated = diesel::update(
            schedule_schedule::table
                .filter(schedule_schedule::trace_id.eq(trace_id))
                .filter(schedule_schedule::state.ne_all(FINAL_STATES)),
        )
        .set((
            schedule_schedule::state.eq(State::Fail.code()),
            schedule_schedule::err.eq(err),
            schedule_schedule::finish_at.eq(Some(finish_at)),
            schedule_schedule::scheduling.eq(false),
        ))
        .execute(conn)?;
        if updated == 0 {
            return Ok(false);
        }
        clear_retry(conn, trace_id)?;
        // A holder's record left on a final schedule matches nothing (the
        // sweeper looks at CALLBACK rows, and scheduling is 0), and goes
        // with the schedule: no statement for it on every FAIL.
        if let Some(attempt) = attempt {
            // The attempt may already be logged if a FAIL is written twice.
            LogAttempt(attempt).execute(conn)?;
        }
        Ok(true)
    })
}

/// Takes the callback task's lock for `callback`: `scheduling` 0 → 1,
/// recording the callback as its holder in the same transaction. Returns
/// whether this caller holds it: it took it, or a delivery of the same task
/// took it and did not release it (its worker died or lost its connection
/// mid-step, and this is the redelivered copy).
pub fn try_lock(conn: &mut MysqlConnection, callback: &HeldCallback, at: NaiveDateTime) -> Result<bool, DbError> {
    let trace_id = callback.trace_id.as_str();
    tx::transaction(conn, |conn| {
        let updated = diesel::update(
            schedule_schedule::table
                .filter(schedule_schedule::trace_id.eq(trace_id))
                .filter(schedule_schedule::scheduling.eq(false)),
        )
        .set(schedule_schedule::scheduling.eq(true))
        .execute(conn)?;
        if updated == 1 {
            diesel::replace_into(celerity_callback_lock::table)
                .values((callback, celerity_callback_lock::taken_at.eq(at)))
                .execute(conn)?;
            return Ok(true);
        }
        // Taken already (no row changed): ours only if this task took it.
        Ok(lock_owner(conn, trace_id)?.as_deref() == Some(callback.task_id.as_str()))
    })
}

/// The task id recorded as holding the schedule's callback lock, if any.
pub fn lock_owner(conn: &mut MysqlConnection, trace_id: &str) -> Result<Option<String>, DbError> {
    Ok(celerity_callback_lock::table.find(trace_id).select(celerity_callback_lock::task_id).first(conn).optional()?)
}

/// Releases the callback task's lock if the callback task `task_id` holds
/// it. One that another callback took since (this one's step was overtaken
/// by its own redelivered copy, which released it) is left alone; a lock
/// with no holder recorded (taken before holders were) is released.
pub fn unlock(conn: &mut MysqlConnection, trace_id: &str, task_id: &str) -> Result<(), DbError> {
    tx::transaction(conn, |conn| {
        diesel::delete(
            celerity_callback_lock::table
                .filter(celerity_callback_lock::trace_id.eq(trace_id))
                .filter(celerity_callback_lock::task_id.eq(task_id)),
        )
        .execute(conn)?;
        diesel::update(
            schedule_schedule::table
                .filter(schedule_schedule::trace_id.eq(trace_id))
                .filter(diesel::dsl::not(diesel::dsl::exists(celerity_callback_lock::table.find(trace_id)))),
        )
        .set(schedule_schedule::scheduling.eq(false))
        .execute(conn)?;
        Ok(())
    })
}

/// Deletes schedules (and all of Celerity's rows about them, operator
/// actions included: the schedule's expiry is their retention) whose `finish_at` is
/// before `cutoff`, `batch` rows per transaction so no lock is held long.
/// Returns how many schedules were deleted.
pub fn delete_finished_before(conn: &mut MysqlConnection, cutoff: NaiveDateTime, batch: i64) -> Result<u64, DbError> {
    if batch < 1 {
        return Err(DbError::Config("delete batch size must be at least 1".into()));
    }
    let mut total = 0u64;
    loop {
        let deleted = tx::transaction(conn, |conn| {
            let ids: Vec<String> = schedule_schedule::table
                .filter(schedule_schedule::finish_at.lt(cutoff))
                .select(schedule_schedule::trace_id)
                .limit(batch)
                .for_update()
                .load(conn)?;
            if ids.is_empty() {
                return Ok::<_, DbError>(0);
            }
            diesel::delete(celerity_attempt::table.filter(celerity_attempt::trace_id.eq_any(&ids))).execute(conn)?;
            diesel::delete(celerity_schedule_retry::table.filter(celerity_schedule_retry::trace_id.eq_any(&ids)))
                .execute(conn)?;
            diesel::delete(celerity_sweep::table.filter(celerity_sweep::trace_id.eq_any(&ids))).execute(conn)?;
            diesel::delete(celerity_pause::table.filter(celerity_pause::trace_id.eq_any(&ids))).execute(conn)?;
            diesel::delete(celerity_parked::table.filter(celerity_parked::trace_id.eq_any(&ids))).execute(conn)?;
            diesel::delete(celerity_action::table.filter(celerity_action::trace_id.eq_any(&ids))).execute(conn)?;
            diesel::delete(celerity_callback_lock::table.filter(celerity_callback_lock::trace_id.eq_any(&ids)))
                .execute(conn)?;
            Ok(diesel::delete(schedule_schedule::table.filter(schedule_schedule::trace_id.eq_any(&ids)))
                .execute(conn)?)
        })?;
        total += deleted as u64;
        if (deleted as i64) < batch {
            return Ok(total);
        }
    }
}

/// Records a transient failure: creates or updates the schedule's retry row
/// (the first failure time is kept).
pub fn record_retry(conn: &mut MysqlConnection, state: &RetryState) -> Result<(), DbError> {
    diesel::insert_into(celerity_schedule_retry::table)
        .values(state)
        .on_conflict(diesel::dsl::DuplicatedKeys)
        .do_update()
        .set((
            celerity_schedule_retry::retries.eq(state.retries),
            celerity_schedule_retry::last_failure_at.eq(state.last_failure_at),
            celerity_schedule_retry::next_retry_at.eq(state.next_retry_at),
            celerity_schedule_retry::last_error_class.eq(&state.last_error_class),
            celerity_schedule_retry::last_error.eq(&state.last_error),
        ))
        .execute(conn)?;
    Ok(())
}

/// Removes the schedule's retry row (its poll landed or it ended).
pub fn clear_retry(conn: &mut MysqlConnection, trace_id: &str) -> Result<(), DbError> {
    diesel::delete(celerity_schedule_retry::table.filter(celerity_schedule_retry::trace_id.eq(trace_id)))
        .execute(conn)?;
    Ok(())
}

/// The schedule's retry row, if it is RETRYING.
pub fn retry_state(conn: &mut MysqlConnection, trace_id: &str) -> Result<Option<RetryState>, DbError> {
    Ok(celerity_schedule_retry::table.find(trace_id).select(RetryState::as_select()).first(conn).optional()?)
}

/// Appends to the attempt log; returns false if that attempt is already there.
pub fn append_attempt(conn: &mut MysqlConnection, attempt: &Attempt) -> Result<bool, DbError> {
    Ok(diesel::insert_or_ignore_into(celerity_attempt::table).values(attempt).execute(conn)? == 1)
}

/// One attempt of the log, if it is there.
pub fn attempt(conn: &mut MysqlConnection, trace_id: &str, attempt: i32) -> Result<Option<Attempt>, DbError> {
    Ok(celerity_attempt::table.find((trace_id, attempt)).select(Attempt::as_select()).first(conn).optional()?)
}

/// The schedule's attempt log, oldest first.
pub fn attempts(conn: &mut MysqlConnection, trace_id: &str) -> Result<Vec<Attempt>, DbError> {
    Ok(celerity_attempt::table
        .filter(celerity_attempt::trace_id.eq(trace_id))
        .order(celerity_attempt::attempt.asc())
        .select(Attempt::as_select())
        .load(conn)?)
}

/// A round trip that touches no table: the health check.
pub fn ping(conn: &mut MysqlConnection) -> Result<(), DbError> {
    diesel::select(sql::<Bool>("1")).execute(conn)?;
    Ok(())
}

/// Every kind of statement a poll runs, on every table and column it
/// touches, changing nothing: what tells a worker paused by an environment
/// fault that its grants, tables and columns are back.
pub fn probe(conn: &mut MysqlConnection) -> Result<(), DbError> {
    // One at a time: in a multi-statement batch, an error after the first
    // statement would go unreported.
    const NOTHING: [&str; 8] = [
        "SELECT trace_id, plugin_version, state, invoke_count, data, created_at, finish_at, scheduling, err \
         FROM schedule_schedule WHERE 1 = 0",
        "UPDATE schedule_schedule SET state = state, invoke_count = invoke_count, data = data, err = err, \
         finish_at = finish_at, scheduling = scheduling WHERE 1 = 0",
        "INSERT INTO celerity_schedule_retry SELECT * FROM celerity_schedule_retry WHERE 1 = 0",
        "UPDATE celerity_schedule_retry SET retries = retries WHERE 1 = 0",
        "DELETE FROM celerity_schedule_retry WHERE 1 = 0",
        "INSERT INTO celerity_attempt SELECT * FROM celerity_attempt WHERE 1 = 0",
        "SELECT trace_id FROM celerity_pause WHERE 1 = 0",
        "INSERT INTO celerity_parked SELECT * FROM celerity_parked WHERE 1 = 0",
    ];
    for statement in NOTHING {
        diesel::sql_query(statement).execute(conn)?;
    }
    Ok(())
}
