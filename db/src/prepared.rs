//! The statements of every poll's transaction, written as fixed SQL so that
//! diesel prepares each once per connection and then only executes it.
//!
//! diesel never caches an `UPDATE`, an `INSERT` with an optional column, an
//! `IN` list or a `sql_query`: each execution prepared its statement, ran it
//! and closed it, two round trips where one does. A poll's `BEGIN`, guarded
//! `UPDATE`, attempt-log `INSERT` and `COMMIT` were all four of those: 4.05
//! `COM_STMT_PREPARE` and as many `COM_STMT_CLOSE` per poll (BENCHMARKS.md,
//! issue 19). Each type here has a static query id, so the cache keys it by
//! type and the prepared statement lives as long as its connection.

use chrono::NaiveDateTime;
use diesel::mysql::Mysql;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Datetime, Integer, Nullable, Text};
use diesel::{MysqlConnection, QueryResult, RunQueryDsl};

use crate::models::{Attempt, OPEN_STATES};

/// Gives `$t` a static query id (so diesel caches its prepared statement)
/// and lets it run on a connection.
macro_rules! fixed_statement {
    ($t:ident $(<$l:lifetime>)?, $id:ident) => {
        #[doc(hidden)]
        pub(crate) struct $id;

        impl $(<$l>)? QueryId for $t $(<$l>)? {
            type QueryId = $id;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl $(<$l>)? RunQueryDsl<MysqlConnection> for $t $(<$l>)? {}
    };
}

/// `BEGIN`.
pub(crate) struct Begin;
fixed_statement!(Begin, BeginId);

impl QueryFragment<Mysql> for Begin {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("BEGIN");
        Ok(())
    }
}

/// `COMMIT`.
pub(crate) struct Commit;
fixed_statement!(Commit, CommitId);

impl QueryFragment<Mysql> for Commit {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("COMMIT");
        Ok(())
    }
}

/// A poll's result, applied only if the row is still open (POLL or
/// CALLBACK) at the `invoke_count` the poll saw. A `None` column is left as
/// it is (`COALESCE` with the stored value), so one statement serves every
/// outcome.
pub(crate) struct GuardedUpdate<'a> {
    pub(crate) trace_id: &'a str,
    pub(crate) seen_invoke_count: i32,
    pub(crate) state: i32,
    pub(crate) invoke_count: i32,
    pub(crate) data: Option<&'a str>,
    pub(crate) err: Option<&'a str>,
    pub(crate) finish_at: Option<NaiveDateTime>,
    pub(crate) scheduling: Option<bool>,
}
fixed_statement!(GuardedUpdate<'a>, GuardedUpdateId);

impl QueryFragment<Mysql> for GuardedUpdate<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("UPDATE `schedule_schedule` SET `state` = ");
        out.push_bind_param::<Integer, _>(&self.state)?;
        out.push_sql(", `invoke_count` = ");
        out.push_bind_param::<Integer, _>(&self.invoke_count)?;
        out.push_sql(", `data` = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.data)?;
        out.push_sql(", `data`), `err` = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.err)?;
        out.push_sql(", `err`), `finish_at` = COALESCE(");
        out.push_bind_param::<Nullable<Datetime>, _>(&self.finish_at)?;
        out.push_sql(", `finish_at`), `scheduling` = COALESCE(");
        out.push_bind_param::<Nullable<Bool>, _>(&self.scheduling)?;
        out.push_sql(", `scheduling`) WHERE `trace_id` = ");
        out.push_bind_param::<Text, _>(&self.trace_id)?;
        out.push_sql(" AND `invoke_count` = ");
        out.push_bind_param::<Integer, _>(&self.seen_invoke_count)?;
        // Bound, not formatted into the text: this runs on every execution.
        out.push_sql(" AND `state` IN (");
        out.push_bind_param::<Integer, _>(&OPEN_STATES[0])?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&OPEN_STATES[1])?;
        out.push_sql(")");
        Ok(())
    }
}

/// The attempt-log row of a poll, unless that attempt is already logged (a
/// poll that failed before its plugin ran keeps its invoke_count).
pub(crate) struct LogAttempt<'a>(pub(crate) &'a Attempt);
fixed_statement!(LogAttempt<'a>, LogAttemptId);

impl QueryFragment<Mysql> for LogAttempt<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        let a = self.0;
        out.push_sql(
            "INSERT IGNORE INTO `celerity_attempt` (`trace_id`, `attempt`, `started_at`, `ended_at`, `outcome`, \
             `error`, `hostname`, `next_poll_at`, `task_id`) VALUES (",
        );
        out.push_bind_param::<Text, _>(&a.trace_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&a.attempt)?;
        out.push_sql(", ");
        out.push_bind_param::<Datetime, _>(&a.started_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Datetime, _>(&a.ended_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&a.outcome)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&a.error)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&a.hostname)?;
        out.push_sql(", ");
        // NULL is both columns' default.
        out.push_bind_param::<Nullable<Datetime>, _>(&a.next_poll_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&a.task_id)?;
        out.push_sql(")");
        Ok(())
    }
}
