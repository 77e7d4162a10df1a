//! The server's own number for the error a statement just raised.
//!
//! diesel keeps a MySQL error's message but not its number. The connection
//! that saw the error still holds it in its diagnostics area (a rollback does
//! not clear it), so one more round trip on the same connection reads it.
//! Only failed statements pay for it.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text, Unsigned};

use crate::error::DbError;

#[derive(QueryableByName)]
struct Diagnostics {
    #[diesel(sql_type = Nullable<Unsigned<Integer>>)]
    number: Option<u32>,
    #[diesel(sql_type = Nullable<Text>)]
    message: Option<String>,
}

/// `err` with the code named by the server's number, when the connection
/// still holds the very error (the same message) diesel reported.
pub(crate) fn diagnose(conn: &mut MysqlConnection, err: DbError) -> DbError {
    let Some(message) = err.server_message() else { return err };
    match last_error(conn) {
        Some((number, said)) if said == message => err.with_number(number),
        _ => err,
    }
}

/// The number and message of the first condition of the last statement
/// that raised one. A statement without conditions leaves the variables of
/// an earlier diagnosis, which the caller's message check rejects.
fn last_error(conn: &mut MysqlConnection) -> Option<(u32, String)> {
    // Text protocol: preparing a statement would reset the diagnostics area.
    conn.batch_execute("GET DIAGNOSTICS CONDITION 1 @celerity_errno = MYSQL_ERRNO, @celerity_error = MESSAGE_TEXT")
        .ok()?;
    let found = diesel::sql_query("SELECT @celerity_errno AS number, @celerity_error AS message")
        .get_result::<Diagnostics>(conn)
        .ok()?;
    Some((found.number?, found.message?))
}
