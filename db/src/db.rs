//! [`Db`]: the pool plus the rules for using it from async code: every call
//! runs on `spawn_blocking`, under a deadline, and a connection that saw a
//! connection-level error is dropped from the pool.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::MysqlConnection;

use crate::config::DbConfig;
use crate::error::DbError;
use crate::pool::{self, Pool};

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: DbConfig,
}

impl Db {
    /// Builds the pool; no connection is made until the first call.
    pub fn new(config: DbConfig) -> Result<Db, DbError> {
        let pool = pool::build(&config)?;
        Ok(Db { inner: Arc::new(Inner { pool, config }) })
    }

    /// The settings this handle was built with.
    pub fn config(&self) -> &DbConfig {
        &self.inner.config
    }

    /// Pooled connections now: (in use, idle).
    pub fn pool_connections(&self) -> (u32, u32) {
        let state = self.inner.pool.state();
        (state.connections - state.idle_connections, state.idle_connections)
    }

    /// Now, as a naive datetime in the configured zone and at the columns'
    /// microsecond precision (how the tables store time).
    pub fn now(&self) -> NaiveDateTime {
        Utc::now().with_timezone(&self.inner.config.time_zone).naive_local().trunc_subsecs(6)
    }

    /// Opens one connection outside the pool, to check the configuration at
    /// start-up (a wrong password is fatal there, transient later).
    pub fn check_connection(&self) -> Result<(), DbError> {
        let mut conn = pool::Manager::new(&self.inner.config).open()?;
        crate::repo::ping(&mut conn.conn)
    }

    /// Runs `f` on a pooled connection, blocking the current thread. Use
    /// [`Db::call`] from async code.
    pub fn blocking<T>(&self, f: impl FnOnce(&mut MysqlConnection) -> Result<T, DbError>) -> Result<T, DbError> {
        let mut conn = self.inner.pool.get().map_err(DbError::pool_timeout)?;
        let started = Instant::now();
        let result = f(&mut conn.conn).map_err(|e| match e.breaks_connection() {
            true => e,
            false => crate::diagnose::diagnose(&mut conn.conn, e),
        });
        // A call that outlived its deadline was on a hung server: its
        // connection is not trusted again.
        if result.as_ref().err().is_some_and(DbError::breaks_connection)
            || started.elapsed() > self.inner.config.call_timeout
        {
            conn.mark_broken();
        }
        result
    }

    /// Runs `f` on a pooled connection on the blocking thread pool, giving up
    /// after the call deadline.
    ///
    /// diesel does not expose libmariadb's read and write timeouts, so a hung
    /// server is bounded here: the caller gets [`DbError::Deadline`]
    /// (transient) and goes on; the blocked thread keeps its connection until
    /// the server answers or the socket breaks, then drops it. At most
    /// `pool_size` threads can be held that way, after which calls fail fast
    /// with a checkout timeout.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut MysqlConnection) -> Result<T, DbError> + Send + 'static,
    {
        self.call_after(|| (), move |(), conn| f(conn)).await.map(|((), value)| value)
    }

    /// Runs `work` and then `f` with what it made, on one thread of the
    /// blocking pool: one hand-off where two would be, when `work` must not
    /// run on the async side either (a Rust plugin's step before the update
    /// that stores it). The call deadline of [`Db::call`] counts from the
    /// end of `work`, so slow work is never taken for a hung server.
    pub async fn call_after<W, T, G, F>(&self, work: G, f: F) -> Result<(W, T), DbError>
    where
        W: Send + 'static,
        T: Send + 'static,
        G: FnOnce() -> W + Send + 'static,
        F: FnOnce(&W, &mut MysqlConnection) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        let deadline = self.inner.config.call_timeout;
        let worked = Arc::new(OnceLock::new());
        let mark = worked.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let made = work();
            let _ = mark.set(Instant::now());
            db.blocking(|conn| f(&made, conn)).map(|value| (made, value))
        });
        loop {
            let left = worked.get().map_or(deadline, |at: &Instant| deadline.saturating_sub(at.elapsed()));
            match tokio::time::timeout(left, &mut task).await {
                Ok(Ok(result)) => return result,
                Ok(Err(join)) => return Err(DbError::Task(join.to_string())),
                Err(_) if worked.get().is_some_and(|at| at.elapsed() >= deadline) => {
                    return Err(DbError::Deadline(deadline));
                }
                // Still working, or the database part started less than a deadline ago.
                Err(_) => {}
            }
        }
    }
}
