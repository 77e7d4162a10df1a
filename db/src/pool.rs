//! The r2d2 pool over diesel's MySQL connection (libmariadb).
//!
//! A connection that saw a connection-level error (server gone, lost, killed,
//! a node out of its cluster) is marked broken so the pool drops it instead of
//! handing it out again. Every connection also has a maximum life and an idle
//! timeout, so one a proxy or a failover dropped silently is not kept for long.

use diesel::connection::SimpleConnection;
use diesel::{Connection, MysqlConnection};

use crate::config::DbConfig;
use crate::error::DbError;

/// A pooled connection and whether it may be reused.
pub(crate) struct Conn {
    /// The diesel connection.
    pub(crate) conn: MysqlConnection,
    broken: bool,
}

impl Conn {
    /// Marks the connection unusable: the pool drops it when it comes back.
    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }
}

/// Opens connections with the session settings Celerity relies on.
#[derive(Debug)]
pub(crate) struct Manager {
    url: String,
    lock_wait_secs: u64,
}

impl Manager {
    pub(crate) fn new(config: &DbConfig) -> Manager {
        Manager { url: config.url.clone(), lock_wait_secs: config.lock_wait_timeout.as_secs().max(1) }
    }

    /// A new connection, or the classified reason there is none.
    pub(crate) fn open(&self) -> Result<Conn, DbError> {
        let mut conn = MysqlConnection::establish(&self.url)?;
        conn.batch_execute(&format!("SET SESSION innodb_lock_wait_timeout = {}", self.lock_wait_secs))?;
        Ok(Conn { conn, broken: false })
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = DbError;

    fn connect(&self) -> Result<Conn, DbError> {
        self.open()
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), DbError> {
        conn.conn.batch_execute("SELECT 1").map_err(DbError::from)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}

/// The pool type.
pub(crate) type Pool = r2d2::Pool<Manager>;

/// Builds the pool without connecting: the first checkout connects, so a
/// database that is down at start-up is a transient error, not a crash.
pub(crate) fn build(config: &DbConfig) -> Result<Pool, DbError> {
    if config.pool_size == 0 {
        return Err(DbError::Config("pool size must be at least 1".into()));
    }
    Ok(r2d2::Pool::builder()
        .max_size(config.pool_size)
        .min_idle(Some(0))
        .connection_timeout(config.checkout_timeout)
        // Zero turns a limit off (r2d2 refuses a zero duration).
        .max_lifetime(Some(config.max_lifetime).filter(|d| !d.is_zero()))
        .idle_timeout(Some(config.idle_timeout).filter(|d| !d.is_zero()))
        // Validity is judged from errors as they happen (see `Conn::mark_broken`),
        // which saves a round trip on every checkout.
        .test_on_check_out(false)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(Manager::new(config)))
}
