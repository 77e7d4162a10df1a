//! The one error type of the database layer, and whose fault each error is.

use std::time::Duration;

use diesel::result::{ConnectionError, DatabaseErrorKind, Error as DieselError};
use thiserror::Error;

use crate::class::ErrorClass;
use crate::codes::MysqlCode;

/// Anything that went wrong talking to the database. The source error is
/// kept; no variant carries the connection URL's password.
#[derive(Debug, Error)]
pub enum DbError {
    /// A new connection could not be made.
    #[error("cannot connect to the database ({code}): {source}")]
    Connect {
        /// The recognised MySQL error.
        code: MysqlCode,
        /// diesel's error.
        #[source]
        source: ConnectionError,
    },
    /// A statement failed.
    #[error("database error ({code}): {source}")]
    Query {
        /// The recognised MySQL error.
        code: MysqlCode,
        /// diesel's error.
        #[source]
        source: DieselError,
    },
    /// No pooled connection could be had in time (the server is down, it
    /// refuses new connections, or every connection is busy).
    #[error("no database connection within the checkout timeout: {source}")]
    PoolTimeout {
        /// Why the last new connection failed, when one did.
        refused: Option<MysqlCode>,
        /// r2d2's error.
        #[source]
        source: r2d2::Error,
    },
    /// A call did not finish within its deadline (a hung server).
    #[error("database call did not finish within {0:?}")]
    Deadline(Duration),
    /// No schedule has this trace id.
    #[error("schedule {0} not found")]
    NotFound(String),
    /// A row holds a value the framework never writes.
    #[error("bad data in the database: {0}")]
    BadData(String),
    /// The configuration cannot work (bad URL, bad option).
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// The embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The blocking task running a call panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
}

impl DbError {
    /// Whose fault it is: one exhaustive match, so a new variant forces a decision.
    pub fn class(&self) -> ErrorClass {
        match self {
            DbError::Connect { code, .. } | DbError::Query { code, .. } => code.class(),
            // A pool that cannot open connections because the credentials
            // were refused is an environment fault like the refusal itself.
            DbError::PoolTimeout { refused: Some(code), .. } => match code.class() {
                ErrorClass::Environment => ErrorClass::Environment,
                ErrorClass::Transient | ErrorClass::ScheduleFatal => ErrorClass::Transient,
            },
            DbError::PoolTimeout { refused: None, .. } | DbError::Deadline(_) => ErrorClass::Transient,
            // The row is missing, holds a value the framework never writes, or
            // made our own code panic: only this schedule is affected.
            DbError::NotFound(_) | DbError::BadData(_) | DbError::Task(_) => ErrorClass::ScheduleFatal,
            DbError::Config(_) | DbError::Migration(_) => ErrorClass::Environment,
        }
    }

    /// Shorthand for `class() == Transient`.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The recognised MySQL code, when the error came from MySQL.
    pub fn mysql_code(&self) -> Option<MysqlCode> {
        match self {
            DbError::Connect { code, .. } | DbError::Query { code, .. } => Some(*code),
            DbError::PoolTimeout { refused, .. } => *refused,
            DbError::Deadline(_)
            | DbError::NotFound(_)
            | DbError::BadData(_)
            | DbError::Config(_)
            | DbError::Migration(_)
            | DbError::Task(_) => None,
        }
    }

    /// Whether the connection that produced this error must not be reused.
    pub(crate) fn breaks_connection(&self) -> bool {
        self.mysql_code().is_some_and(MysqlCode::breaks_connection) || matches!(self, DbError::Deadline(_))
    }
}

impl From<DieselError> for DbError {
    fn from(e: DieselError) -> Self {
        let code = match &e {
            DieselError::DatabaseError(kind, info) => match kind {
                DatabaseErrorKind::SerializationFailure => MysqlCode::Deadlock,
                DatabaseErrorKind::UniqueViolation => MysqlCode::DuplicateEntry,
                DatabaseErrorKind::ForeignKeyViolation => MysqlCode::ForeignKey,
                DatabaseErrorKind::NotNullViolation => MysqlCode::BadNull,
                DatabaseErrorKind::CheckViolation => MysqlCode::CheckConstraint,
                DatabaseErrorKind::ReadOnlyTransaction => MysqlCode::ReadOnlyTransaction,
                DatabaseErrorKind::ClosedConnection => MysqlCode::ServerGone,
                _ => MysqlCode::from_message(info.message()),
            },
            DieselError::DeserializationError(err) => return DbError::BadData(err.to_string()),
            DieselError::SerializationError(err) => return DbError::BadData(err.to_string()),
            // The connection broke while a transaction was rolling back.
            DieselError::BrokenTransactionManager => MysqlCode::ServerLost,
            DieselError::RollbackErrorOnCommit { commit_error, .. } => match DbError::from_ref(commit_error) {
                Some(code) => code,
                None => MysqlCode::Unrecognised,
            },
            _ => MysqlCode::Unrecognised,
        };
        DbError::Query { code, source: e }
    }
}

impl DbError {
    /// A checkout that timed out; r2d2 keeps only the text of the last
    /// connection error, which names its code.
    pub(crate) fn pool_timeout(source: r2d2::Error) -> DbError {
        let text = source.to_string();
        let refused = text.split_once(": ").map(|(_, last)| MysqlCode::from_message(last));
        DbError::PoolTimeout { refused: refused.filter(|c| *c != MysqlCode::Unrecognised), source }
    }

    /// The server's message of a failed statement, as diesel kept it.
    pub(crate) fn server_message(&self) -> Option<&str> {
        match self {
            DbError::Query { source: DieselError::DatabaseError(_, info), .. } => Some(info.message()),
            DbError::Query { source: DieselError::RollbackErrorOnCommit { commit_error, .. }, .. } => {
                match commit_error.as_ref() {
                    DieselError::DatabaseError(_, info) => Some(info.message()),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The same error, with the code the server's own number names.
    pub(crate) fn with_number(self, number: u32) -> DbError {
        match self {
            DbError::Query { source, .. } => DbError::Query { code: MysqlCode::from_number(number), source },
            other => other,
        }
    }

    fn from_ref(e: &DieselError) -> Option<MysqlCode> {
        match e {
            DieselError::DatabaseError(_, info) => Some(MysqlCode::from_message(info.message())),
            _ => None,
        }
    }
}

impl From<ConnectionError> for DbError {
    fn from(e: ConnectionError) -> Self {
        match &e {
            ConnectionError::InvalidConnectionUrl(msg) => DbError::Config(format!("invalid database URL: {msg}")),
            ConnectionError::BadConnection(msg) => DbError::Connect { code: MysqlCode::from_message(msg), source: e },
            ConnectionError::CouldntSetupConfiguration(inner) => {
                DbError::Connect { code: DbError::from_ref(inner).unwrap_or(MysqlCode::Unrecognised), source: e }
            }
            _ => DbError::Connect { code: MysqlCode::Unrecognised, source: e },
        }
    }
}
