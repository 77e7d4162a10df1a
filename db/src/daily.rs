//! Daily tasks the workers send themselves, once a day for all workers on
//! one database: the row of a task in `celerity_daily` holds the last UTC
//! day it was sent for. A worker claims a day by moving that row forward in
//! a transaction that stays open while it publishes: a second worker's claim
//! waits on the row lock and then finds the day taken, and a publish that
//! fails rolls the claim back for the next check to try again.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use diesel::sql_types::{Date, Datetime, Varchar};

use crate::error::DbError;

/// Makes the task's row if it has none, as sent for `seed_day`. The first
/// worker ever takes the day it starts on as done (the beat it replaces
/// sent it at 00:00); every later day is claimed.
pub fn seed(conn: &mut MysqlConnection, task: &str, seed_day: NaiveDate) -> Result<(), DbError> {
    diesel::sql_query("INSERT IGNORE INTO celerity_daily (task, last_day) VALUES (?, ?)")
        .bind::<Varchar, _>(task)
        .bind::<Date, _>(seed_day)
        .execute(conn)?;
    Ok(())
}

/// Claims `day` for the task: true when this call moved its row to `day`
/// (inside the caller's transaction), false when that day was already taken.
pub fn claim(
    conn: &mut MysqlConnection,
    task: &str,
    day: NaiveDate,
    now: NaiveDateTime,
    by: &str,
) -> Result<bool, DbError> {
    let moved = diesel::sql_query(
        "UPDATE celerity_daily SET last_day = ?, sent_at = ?, sent_by = ? WHERE task = ? AND last_day < ?",
    )
    .bind::<Date, _>(day)
    .bind::<Datetime, _>(now)
    .bind::<Varchar, _>(by)
    .bind::<Varchar, _>(task)
    .bind::<Date, _>(day)
    .execute(conn)?;
    Ok(moved == 1)
}

/// Why a day was not sent.
#[derive(Debug)]
pub enum NotSent<E> {
    /// The database failed; nothing was claimed.
    Db(DbError),
    /// The send failed; the claim was rolled back.
    Send(E),
}

impl<E> From<DbError> for NotSent<E> {
    fn from(e: DbError) -> Self {
        NotSent::Db(e)
    }
}

/// Sends the task for `day` with `send` unless a worker already did: true
/// when this call sent it. The claim commits only after `send` returned
/// (a publish the broker confirmed).
pub fn send_once<E>(
    conn: &mut MysqlConnection,
    task: &str,
    day: NaiveDate,
    now: NaiveDateTime,
    by: &str,
    send: impl FnOnce() -> Result<(), E>,
) -> Result<bool, NotSent<E>> {
    seed(conn, task, day)?;
    crate::tx::transaction(conn, |conn| {
        if !claim(conn, task, day, now, by)? {
            return Ok(false);
        }
        send().map_err(NotSent::Send)?;
        Ok(true)
    })
}

/// The last day the task was sent for, and by whom, if it has a row.
pub fn last(conn: &mut MysqlConnection, task: &str) -> Result<Option<(NaiveDate, Option<String>)>, DbError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Date)]
        last_day: NaiveDate,
        #[diesel(sql_type = diesel::sql_types::Nullable<Varchar>)]
        sent_by: Option<String>,
    }
    let rows: Vec<Row> = diesel::sql_query("SELECT last_day, sent_by FROM celerity_daily WHERE task = ?")
        .bind::<Varchar, _>(task)
        .load(conn)?;
    Ok(rows.into_iter().next().map(|r| (r.last_day, r.sent_by)))
}
