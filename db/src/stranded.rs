//! The sweeper's statements: schedules in POLL with no sign of life since a
//! cutoff, callbacks holding the `scheduling` lock with none either, the
//! record of re-enqueueing them, and the named lock that lets one
//! worker at a time sweep.
//!
//! A schedule's last sign of life is the latest of: its `created_at`, its
//! attempts' end and next-poll times, its retry bookkeeping, its last
//! sweep, and its last operator action. A paused schedule, or one with
//! parked messages, is never stranded: its messages wait on purpose. Celerity writes all but the first; a schedule polled only by Python
//! workers shows `created_at` alone (see the README on mixed deployments).

use chrono::NaiveDateTime;
use diesel::mysql::Mysql;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{Bigint, Datetime, Integer, Nullable, Text, Varchar};

use crate::error::DbError;
use crate::models::{HeldCallback, State};
use crate::schema::celerity_sweep;

/// The MySQL named lock held while sweeping.
pub const SWEEP_LOCK: &str = "celerity.sweeper";

/// A schedule in POLL with no sign of life since the cutoff.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Stranded {
    /// The schedule.
    #[diesel(sql_type = Varchar)]
    pub trace_id: String,
    /// Its `invoke_count` when found: the re-enqueued message expects it.
    #[diesel(sql_type = Integer)]
    pub invoke_count: i32,
}

/// No retry, sweep or operator action since the cutoff, and not held by an
/// operator: the signs of life both kinds of stranded schedule share. Four
/// binds, each the cutoff: see [`quiet_since`].
const QUIET_SINCE: &str = "\
    AND NOT EXISTS (SELECT 1 FROM celerity_schedule_retry r WHERE r.trace_id = s.trace_id \
                    AND (r.last_failure_at >= ? OR r.next_retry_at >= ?)) \
    AND NOT EXISTS (SELECT 1 FROM celerity_sweep w WHERE w.trace_id = s.trace_id AND w.swept_at >= ?) \
    AND NOT EXISTS (SELECT 1 FROM celerity_action x WHERE x.trace_id = s.trace_id AND x.at >= ?) \
    AND NOT EXISTS (SELECT 1 FROM celerity_pause p WHERE p.trace_id = s.trace_id) \
    AND NOT EXISTS (SELECT 1 FROM celerity_parked k WHERE k.trace_id = s.trace_id) ";

/// `query` (on schedule_schedule as `s`) followed by [`QUIET_SINCE`] and its binds.
fn quiet_since(query: BoxedSqlQuery<'_, Mysql, SqlQuery>, cutoff: NaiveDateTime) -> BoxedSqlQuery<'_, Mysql, SqlQuery> {
    query
        .sql(QUIET_SINCE)
        .bind::<Datetime, _>(cutoff)
        .bind::<Nullable<Datetime>, _>(Some(cutoff))
        .bind::<Datetime, _>(cutoff)
        .bind::<Datetime, _>(cutoff)
}

/// Up to `limit` schedules in POLL whose last sign of life is before `cutoff`,
/// oldest first.
pub fn stranded(conn: &mut MysqlConnection, cutoff: NaiveDateTime, limit: i64) -> Result<Vec<Stranded>, DbError> {
    let query = diesel::sql_query(
        "SELECT s.trace_id, s.invoke_count FROM schedule_schedule s \
         WHERE s.state = ? AND s.created_at < ? \
           AND NOT EXISTS (SELECT 1 FROM celerity_attempt a WHERE a.trace_id = s.trace_id \
                           AND (a.ended_at >= ? OR a.next_poll_at >= ?)) ",
    )
    .into_boxed()
    .bind::<Integer, _>(State::Poll.code())
    .bind::<Datetime, _>(cutoff)
    .bind::<Datetime, _>(cutoff)
    .bind::<Nullable<Datetime>, _>(Some(cutoff));
    Ok(quiet_since(query, cutoff).sql("ORDER BY s.created_at LIMIT ?").bind::<Bigint, _>(limit).load(conn)?)
}

/// A schedule in CALLBACK whose `scheduling` lock a Celerity callback holds,
/// with no sign of life since the cutoff: every copy of that callback is
/// gone (a retry the broker dropped on its way to a queue whose node was
/// out, say), so no one would ever release the lock.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct HeldStranded {
    /// The schedule and its `invoke_count` when found.
    #[diesel(embed)]
    pub schedule: Stranded,
    /// The callback task's id.
    #[diesel(sql_type = Varchar)]
    pub task_id: String,
    /// Its `callback_id` argument.
    #[diesel(sql_type = Text)]
    pub callback_id: String,
    /// Its `callback_data` argument.
    #[diesel(sql_type = Text)]
    pub callback_data: String,
}

impl HeldStranded {
    /// The callback holding the lock.
    pub fn callback(&self) -> HeldCallback {
        HeldCallback {
            trace_id: self.schedule.trace_id.clone(),
            task_id: self.task_id.clone(),
            callback_id: self.callback_id.clone(),
            callback_data: self.callback_data.clone(),
        }
    }
}

/// Up to `limit` schedules whose callback lock is held by a callback with no
/// sign of life since `cutoff` (taken before it, and no retry, sweep or
/// operator action since), oldest first. A paused schedule is left alone.
pub fn held_callbacks(
    conn: &mut MysqlConnection,
    cutoff: NaiveDateTime,
    limit: i64,
) -> Result<Vec<HeldStranded>, DbError> {
    let query = diesel::sql_query(
        "SELECT s.trace_id, s.invoke_count, l.task_id, l.callback_id, l.callback_data \
         FROM celerity_callback_lock l JOIN schedule_schedule s ON s.trace_id = l.trace_id \
         WHERE s.state = ? AND s.scheduling = 1 AND l.taken_at < ? ",
    )
    .into_boxed()
    .bind::<Integer, _>(State::Callback.code())
    .bind::<Datetime, _>(cutoff);
    Ok(quiet_since(query, cutoff).sql("ORDER BY l.taken_at LIMIT ?").bind::<Bigint, _>(limit).load(conn)?)
}

/// Records that `schedule` was re-enqueued at `at`.
pub fn record(conn: &mut MysqlConnection, schedule: &Stranded, at: NaiveDateTime) -> Result<(), DbError> {
    diesel::insert_into(celerity_sweep::table)
        .values((
            celerity_sweep::trace_id.eq(&schedule.trace_id),
            celerity_sweep::invoke_count.eq(schedule.invoke_count),
            celerity_sweep::swept_at.eq(at),
            celerity_sweep::sweeps.eq(1),
        ))
        .on_conflict(diesel::dsl::DuplicatedKeys)
        .do_update()
        .set((
            celerity_sweep::invoke_count.eq(schedule.invoke_count),
            celerity_sweep::swept_at.eq(at),
            celerity_sweep::sweeps.eq(celerity_sweep::sweeps + 1),
        ))
        .execute(conn)?;
    Ok(())
}

/// The last sweep of a schedule: (invoke_count, swept_at, sweeps).
pub fn last(conn: &mut MysqlConnection, trace_id: &str) -> Result<Option<(i32, NaiveDateTime, i32)>, DbError> {
    Ok(celerity_sweep::table
        .find(trace_id)
        .select((celerity_sweep::invoke_count, celerity_sweep::swept_at, celerity_sweep::sweeps))
        .first(conn)
        .optional()?)
}

#[derive(QueryableByName)]
struct LockAnswer {
    #[diesel(sql_type = Nullable<Integer>)]
    got: Option<i32>,
}

/// Takes the sweeper's named lock, waiting up to `wait_secs`; false when
/// another session holds it. The lock is the session's: it goes when the
/// connection does, so a worker that dies mid-sweep frees it.
pub fn try_lock(conn: &mut MysqlConnection, wait_secs: u32) -> Result<bool, DbError> {
    let answer: LockAnswer = diesel::sql_query("SELECT GET_LOCK(?, ?) AS got")
        .bind::<Varchar, _>(SWEEP_LOCK)
        .bind::<Integer, _>(i32::try_from(wait_secs).unwrap_or(i32::MAX))
        .get_result(conn)?;
    Ok(answer.got == Some(1))
}

/// Releases the sweeper's named lock.
pub fn unlock(conn: &mut MysqlConnection) -> Result<(), DbError> {
    diesel::sql_query("SELECT RELEASE_LOCK(?) AS got").bind::<Varchar, _>(SWEEP_LOCK).get_result::<LockAnswer>(conn)?;
    Ok(())
}
