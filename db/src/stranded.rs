//! The sweeper's statements: schedules in POLL with no sign of life since a
//! cutoff, the record of re-enqueueing them, and the named lock that lets one
//! worker at a time sweep.
//!
//! A schedule's last sign of life is the latest of: its `created_at`, its
//! attempts' end and next-poll times, its retry bookkeeping, its last
//! sweep, and its last operator action. A paused schedule, or one with
//! parked messages, is never stranded: its messages wait on purpose. Celerity writes all but the first; a schedule polled only by Python
//! workers shows `created_at` alone (see the README on mixed deployments).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Bigint, Datetime, Integer, Nullable, Varchar};

use crate::error::DbError;
use crate::models::State;
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

/// Up to `limit` schedules in POLL whose last sign of life is before `cutoff`,
/// oldest first.
pub fn stranded(conn: &mut MysqlConnection, cutoff: NaiveDateTime, limit: i64) -> Result<Vec<Stranded>, DbError> {
    Ok(diesel::sql_query(
        "SELECT s.trace_id, s.invoke_count FROM schedule_schedule s \
         WHERE s.state = ? AND s.created_at < ? \
           AND NOT EXISTS (SELECT 1 FROM celerity_attempt a WHERE a.trace_id = s.trace_id \
                           AND (a.ended_at >= ? OR a.next_poll_at >= ?)) \
           AND NOT EXISTS (SELECT 1 FROM celerity_schedule_retry r WHERE r.trace_id = s.trace_id \
                           AND (r.last_failure_at >= ? OR r.next_retry_at >= ?)) \
           AND NOT EXISTS (SELECT 1 FROM celerity_sweep w WHERE w.trace_id = s.trace_id AND w.swept_at >= ?) \
           AND NOT EXISTS (SELECT 1 FROM celerity_action x WHERE x.trace_id = s.trace_id AND x.at >= ?) \
           AND NOT EXISTS (SELECT 1 FROM celerity_pause p WHERE p.trace_id = s.trace_id) \
           AND NOT EXISTS (SELECT 1 FROM celerity_parked k WHERE k.trace_id = s.trace_id) \
         ORDER BY s.created_at LIMIT ?",
    )
    .bind::<Integer, _>(State::Poll.code())
    .bind::<Datetime, _>(cutoff)
    .bind::<Datetime, _>(cutoff)
    .bind::<Nullable<Datetime>, _>(Some(cutoff))
    .bind::<Datetime, _>(cutoff)
    .bind::<Nullable<Datetime>, _>(Some(cutoff))
    .bind::<Datetime, _>(cutoff)
    .bind::<Datetime, _>(cutoff)
    .bind::<Bigint, _>(limit)
    .load(conn)?)
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
