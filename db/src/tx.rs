//! Transactions with one round trip to open and one to commit.
//!
//! diesel's transaction manager sends `BEGIN` and `COMMIT` through
//! `batch_execute`, which switches the server's multi-statement option on
//! before each and off after: three round trips where one does. A poll's
//! transaction paid four extra round trips that way, as many as its
//! statements (BENCHMARKS.md, "Round trips per poll"). Every transaction
//! Celerity runs goes through here: `BEGIN` and
//! `COMMIT` are prepared statements, prepared once per connection and then
//! executed; `ROLLBACK` stays on the text protocol, because executing a
//! prepared statement would clear the diagnostics area that
//! [`crate::diagnose`] reads the failed statement's error number from.

use diesel::connection::SimpleConnection;
use diesel::{MysqlConnection, RunQueryDsl};

use crate::error::DbError;
use crate::prepared::{Begin, Commit};

/// Runs `f` in a transaction: committed when it returns `Ok`, rolled back
/// when it returns an error (which is returned as it was). Not nestable, and
/// not to be mixed with diesel's own `transaction` on the same call.
pub(crate) fn transaction<T, E: From<DbError>>(
    conn: &mut MysqlConnection,
    f: impl FnOnce(&mut MysqlConnection) -> Result<T, E>,
) -> Result<T, E> {
    Begin.execute(conn).map_err(DbError::from)?;
    let done = f(conn).and_then(|value| {
        Commit.execute(conn).map_err(DbError::from)?;
        Ok(value)
    });
    if done.is_err() {
        // After a failed statement or commit; a connection that cannot roll
        // back is broken, and the pool drops it for the error it returns.
        let _ = conn.batch_execute("ROLLBACK");
    }
    done
}
