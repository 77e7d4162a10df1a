//! The one error type of the database layer and its transient-or-fatal
//! classification.

use std::time::Duration;

use diesel::result::{ConnectionError, DatabaseErrorKind, Error as DieselError};
use thiserror::Error;

use crate::codes::MysqlCode;

/// Whether a later try may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database may answer on a later try: retry with backoff.
    Transient,
    /// Trying again cannot help: fail fast.
    Fatal,
}

impl ErrorClass {
    /// `transient` or `fatal`, as stored in the retry bookkeeping.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Fatal => "fatal",
        }
    }
}

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
    /// No pooled connection could be had in time (the server is down or every
    /// connection is busy).
    #[error("no database connection within the checkout timeout: {0}")]
    PoolTimeout(#[source] r2d2::Error),
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
    /// Transient or fatal: one exhaustive match, so a new variant forces a decision.
    pub fn class(&self) -> ErrorClass {
        let transient = match self {
            DbError::Connect { code, .. } | DbError::Query { code, .. } => code.is_transient(),
            DbError::PoolTimeout(_) | DbError::Deadline(_) => true,
            DbError::NotFound(_) | DbError::BadData(_) | DbError::Config(_) | DbError::Migration(_) => false,
            // A panic in our own code will not go away by itself.
            DbError::Task(_) => false,
        };
        if transient { ErrorClass::Transient } else { ErrorClass::Fatal }
    }

    /// Shorthand for `class() == Transient`.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The recognised MySQL code, when the error came from MySQL.
    pub fn mysql_code(&self) -> Option<MysqlCode> {
        match self {
            DbError::Connect { code, .. } | DbError::Query { code, .. } => Some(*code),
            DbError::PoolTimeout(_)
            | DbError::Deadline(_)
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
