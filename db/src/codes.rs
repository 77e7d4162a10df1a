//! MySQL / MariaDB errors Celerity tells apart, and whose fault each is.
//!
//! The number comes from the server where it can: after a failed statement
//! the connection still holds the error's diagnostics, and [`crate::Db`]
//! reads them (see `diagnose`). Where there is no connection to ask (a
//! connection that could not be made, or broke), the code is recovered from
//! the message: the client library's messages (20xx) are fixed English
//! strings, and the server's are English under the default `lc_messages`.
//!
//! A server error whose number Celerity does not name is
//! [`MysqlCode::Other`], and a message that matches nothing is
//! [`MysqlCode::Unrecognised`]: both are transient, as the framework retries
//! every operational error (see the README's error table).

use std::fmt;

use crate::class::ErrorClass;

/// A MySQL/MariaDB error, by code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MysqlCode {
    /// 2002 CR_CONNECTION_ERROR: cannot connect through the socket (or, from libmariadb, at all).
    ConnectionError,
    /// 2003 CR_CONN_HOST_ERROR: cannot connect to the server's host and port (refused, timed out).
    ConnHostError,
    /// 2005 CR_UNKNOWN_HOST: the server's host name does not resolve (DNS may be down).
    UnknownHost,
    /// 2006 CR_SERVER_GONE_ERROR: the server closed the connection (restart, idle timeout).
    ServerGone,
    /// 2011 CR_TCP_CONNECTION: a TCP connection failure reported by the client.
    TcpConnection,
    /// 2013 CR_SERVER_LOST: the connection was lost during a query.
    ServerLost,
    /// 2026 CR_SSL_CONNECTION_ERROR: the TLS handshake failed (often a connection cut short).
    SslConnection,
    /// 2055 CR_SERVER_LOST_EXTENDED: the connection was lost, with a system error.
    ServerLostExtended,
    /// 1040 ER_CON_COUNT_ERROR: too many connections.
    TooManyConnections,
    /// 1047 ER_UNKNOWN_COM_ERROR: on Galera, "WSREP has not yet prepared node
    /// for application use" (the node is not in the primary component).
    WsrepNotReady,
    /// 1053 ER_SERVER_SHUTDOWN: the server is shutting down.
    ServerShutdown,
    /// 1077 ER_NORMAL_SHUTDOWN: the server is in a normal shutdown.
    NormalShutdown,
    /// 1152 ER_ABORTING_CONNECTION: the server aborted the connection.
    AbortingConnection,
    /// 1153 ER_NET_PACKET_TOO_LARGE: a packet exceeded max_allowed_packet (the connection is dropped).
    NetPacketTooLarge,
    /// 1158 ER_NET_READ_ERROR: error reading communication packets.
    NetReadError,
    /// 1159 ER_NET_READ_INTERRUPTED: timeout reading communication packets.
    NetReadInterrupted,
    /// 1160 ER_NET_ERROR_ON_WRITE: error writing communication packets.
    NetErrorOnWrite,
    /// 1161 ER_NET_WRITE_INTERRUPTED: timeout writing communication packets.
    NetWriteInterrupted,
    /// 1180 ER_ERROR_DURING_COMMIT: the storage engine or a replication hook refused the commit.
    ErrorDuringCommit,
    /// 1205 ER_LOCK_WAIT_TIMEOUT: a row lock was not granted in time.
    LockWaitTimeout,
    /// 1213 ER_LOCK_DEADLOCK: a deadlock victim, or on Galera a certification conflict.
    Deadlock,
    /// 1290 ER_OPTION_PREVENTS_STATEMENT: `--read-only` (a replica during failover).
    ReadOnlyOption,
    /// 1317 ER_QUERY_INTERRUPTED: the statement was killed (`KILL QUERY`).
    QueryInterrupted,
    /// 1615 ER_NEED_REPREPARE: a table changed under a prepared statement.
    NeedReprepare,
    /// 1792 ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: a write reached a read-only node after a failover.
    ReadOnlyTransaction,
    /// 1836 ER_READ_ONLY_MODE: the server runs in read-only mode.
    ReadOnlyMode,
    /// 1927 ER_CONNECTION_KILLED: the connection was killed (`KILL`).
    ConnectionKilled,
    /// 1969 ER_STATEMENT_TIMEOUT: `max_statement_time` was exceeded.
    StatementTimeout,
    /// 3100 ER_RUN_HOOK_ERROR: MySQL Group Replication refused the transaction.
    ReplicationHook,
    /// 3101 ER_TRANSACTION_ROLLBACK_DURING_COMMIT: Group Replication rolled the commit back.
    RollbackDuringCommit,
    /// 4031 ER_CLIENT_INTERACTION_TIMEOUT: disconnected by the server for inactivity.
    ClientInteractionTimeout,
    /// 9001–9006: ProxySQL could not reach a backend (the number is kept).
    ProxySql(u32),
    /// 1044 ER_DBACCESS_DENIED_ERROR: the user may not use the database.
    DbAccessDenied,
    /// 1045 ER_ACCESS_DENIED_ERROR: wrong user or password.
    AccessDenied,
    /// 1049 ER_BAD_DB_ERROR: the database does not exist.
    BadDatabase,
    /// 1054 ER_BAD_FIELD_ERROR: unknown column.
    BadField,
    /// 1064 ER_PARSE_ERROR: SQL syntax error (a server that does not speak Celerity's SQL).
    ParseError,
    /// 1142 ER_TABLEACCESS_DENIED_ERROR: a statement on a table is not granted.
    TableAccessDenied,
    /// 1143 ER_COLUMNACCESS_DENIED_ERROR: a statement on a column is not granted.
    ColumnAccessDenied,
    /// 1146 ER_NO_SUCH_TABLE: the table does not exist.
    NoSuchTable,
    /// 1227 ER_SPECIFIC_ACCESS_DENIED_ERROR: a privilege the statement needs is missing.
    SpecificAccessDenied,
    /// 1364 ER_NO_DEFAULT_FOR_FIELD: a column added without a default.
    NoDefault,
    /// 1820 ER_MUST_CHANGE_PASSWORD, 1862 ER_MUST_CHANGE_PASSWORD_LOGIN: the password expired.
    PasswordExpired,
    /// 4151 ER_ACCOUNT_HAS_BEEN_LOCKED (3118 on MySQL): the account is locked.
    AccountLocked,
    /// 1062 ER_DUP_ENTRY: duplicate key.
    DuplicateEntry,
    /// 1048 ER_BAD_NULL_ERROR: NULL in a NOT NULL column.
    BadNull,
    /// 1264 ER_WARN_DATA_OUT_OF_RANGE: a number out of the column's range.
    OutOfRange,
    /// 1265 WARN_DATA_TRUNCATED: a value truncated to fit the column.
    DataTruncated,
    /// 1292 ER_TRUNCATED_WRONG_VALUE: an incorrect value (a bad datetime).
    TruncatedWrongValue,
    /// 1366 ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: a value that does not fit the column type.
    WrongValue,
    /// 1406 ER_DATA_TOO_LONG: value too long for the column.
    DataTooLong,
    /// 1452 ER_NO_REFERENCED_ROW_2: a foreign key constraint fails.
    ForeignKey,
    /// 1644 ER_SIGNAL_EXCEPTION: a trigger or procedure raised SIGNAL with the default number.
    Signal,
    /// 3819 ER_CHECK_CONSTRAINT_VIOLATED (MySQL), 4025 ER_CONSTRAINT_FAILED (MariaDB): a CHECK fails.
    CheckConstraint,
    /// A server error with a number Celerity does not name.
    Other(u32),
    /// A message no pattern recognises, with no number to go by.
    Unrecognised,
}

impl MysqlCode {
    /// Whose fault it is: one exhaustive match, so a new code forces a decision.
    pub fn class(self) -> ErrorClass {
        use MysqlCode::*;
        match self {
            // The connection, the server's state, or the cluster's: a later try may succeed.
            ConnectionError
            | ConnHostError
            | UnknownHost
            | ServerGone
            | TcpConnection
            | ServerLost
            | SslConnection
            | ServerLostExtended
            | TooManyConnections
            | WsrepNotReady
            | ServerShutdown
            | NormalShutdown
            | AbortingConnection
            | NetPacketTooLarge
            | NetReadError
            | NetReadInterrupted
            | NetErrorOnWrite
            | NetWriteInterrupted
            | ErrorDuringCommit
            | LockWaitTimeout
            | Deadlock
            | ReadOnlyOption
            | QueryInterrupted
            | NeedReprepare
            | ReadOnlyTransaction
            | ReadOnlyMode
            | ConnectionKilled
            | StatementTimeout
            | ReplicationHook
            | RollbackDuringCommit
            | ClientInteractionTimeout
            | ProxySql(_) => ErrorClass::Transient,
            // Not known to be anyone's fault: retried, as the framework does.
            Other(_) | Unrecognised => ErrorClass::Transient,
            // The grants, the schema or the credentials: no schedule can be served.
            DbAccessDenied | AccessDenied | BadDatabase | BadField | ParseError | TableAccessDenied
            | ColumnAccessDenied | NoSuchTable | SpecificAccessDenied | NoDefault | PasswordExpired | AccountLocked => {
                ErrorClass::Environment
            }
            // This schedule's values were refused.
            DuplicateEntry | BadNull | OutOfRange | DataTruncated | TruncatedWrongValue | WrongValue | DataTooLong
            | ForeignKey | Signal | CheckConstraint => ErrorClass::ScheduleFatal,
        }
    }

    /// Whether the connection that saw this error is unusable afterwards, so
    /// the pool must drop it rather than hand it out again.
    pub fn breaks_connection(self) -> bool {
        use MysqlCode::*;
        match self {
            ConnectionError
            | ConnHostError
            | UnknownHost
            | ServerGone
            | TcpConnection
            | ServerLost
            | SslConnection
            | ServerLostExtended
            | ServerShutdown
            | NormalShutdown
            | AbortingConnection
            | NetPacketTooLarge
            | NetReadError
            | NetReadInterrupted
            | NetErrorOnWrite
            | NetWriteInterrupted
            | ConnectionKilled
            | ClientInteractionTimeout
            | TooManyConnections
            // A node out of the primary component, or a server that has gone
            // read-only: the next connection may land on a healthy one.
            | WsrepNotReady
            | ReadOnlyOption
            | ReadOnlyMode
            | ReadOnlyTransaction
            | ProxySql(_)
            // Credentials and privileges are read when a connection is made.
            | AccessDenied
            | DbAccessDenied
            | PasswordExpired
            | AccountLocked => true,
            ErrorDuringCommit | LockWaitTimeout | Deadlock | QueryInterrupted | NeedReprepare | StatementTimeout
            | ReplicationHook | RollbackDuringCommit | BadDatabase | BadField | ParseError | TableAccessDenied
            | ColumnAccessDenied | NoSuchTable | SpecificAccessDenied | NoDefault | DuplicateEntry | BadNull
            | OutOfRange | DataTruncated | TruncatedWrongValue | WrongValue | DataTooLong | ForeignKey | Signal
            | CheckConstraint | Other(_) | Unrecognised => false,
        }
    }

    /// The numeric code, or `None` for [`MysqlCode::Unrecognised`].
    pub fn number(self) -> Option<u32> {
        match self {
            MysqlCode::ProxySql(n) | MysqlCode::Other(n) => Some(n),
            MysqlCode::Unrecognised => None,
            named => CODES.iter().find(|(c, _, _)| *c == named).map(|(_, n, _)| *n),
        }
    }

    /// The code the server's own number names.
    pub fn from_number(number: u32) -> MysqlCode {
        match number {
            9001..=9006 => MysqlCode::ProxySql(number),
            1862 => MysqlCode::PasswordExpired,
            3118 => MysqlCode::AccountLocked,
            4025 => MysqlCode::CheckConstraint,
            _ => CODES.iter().find(|(_, n, _)| *n == number).map_or(MysqlCode::Other(number), |(c, _, _)| *c),
        }
    }

    /// Recognises an error from its message (see the module docs).
    pub fn from_message(message: &str) -> MysqlCode {
        let lower = message.to_ascii_lowercase();
        CODES
            .iter()
            .find(|(_, _, patterns)| patterns.iter().any(|p| lower.contains(p)))
            .map_or(MysqlCode::Unrecognised, |(c, _, _)| *c)
    }
}

impl fmt::Display for MysqlCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number() {
            Some(n) => write!(f, "mysql error {n}"),
            None => f.write_str("unrecognised mysql error"),
        }
    }
}

/// Code, number, and lower-case message fragments, most specific first
/// (2055's message also contains 2013's words, 1044's contains 1045's).
const CODES: &[(MysqlCode, u32, &[&str])] = &[
    (MysqlCode::ServerLostExtended, 2055, &["lost connection to server at", "lost connection to mysql server at"]),
    (MysqlCode::ConnectionError, 2002, &["through socket"]),
    (MysqlCode::ConnHostError, 2003, &["can't connect to server on", "can't connect to mysql server on"]),
    (MysqlCode::UnknownHost, 2005, &["unknown server host", "unknown mysql server host"]),
    (MysqlCode::ServerGone, 2006, &["server has gone away"]),
    (MysqlCode::TcpConnection, 2011, &["via tcp/ip"]),
    (MysqlCode::ServerLost, 2013, &["lost connection to server during query", "lost connection to mysql server"]),
    (MysqlCode::SslConnection, 2026, &["ssl connection error", "tls/ssl error"]),
    (MysqlCode::TooManyConnections, 1040, &["too many connections"]),
    (MysqlCode::WsrepNotReady, 1047, &["wsrep has not yet prepared node"]),
    (MysqlCode::ServerShutdown, 1053, &["server shutdown in progress"]),
    (MysqlCode::NormalShutdown, 1077, &["normal shutdown"]),
    (MysqlCode::AbortingConnection, 1152, &["aborted connection"]),
    (MysqlCode::NetPacketTooLarge, 1153, &["bigger than 'max_allowed_packet'"]),
    (MysqlCode::NetReadError, 1158, &["error reading communication packets"]),
    (MysqlCode::NetReadInterrupted, 1159, &["timeout reading communication packets"]),
    (MysqlCode::NetErrorOnWrite, 1160, &["error writing communication packets"]),
    (MysqlCode::NetWriteInterrupted, 1161, &["timeout writing communication packets"]),
    (MysqlCode::ErrorDuringCommit, 1180, &["during commit"]),
    (MysqlCode::LockWaitTimeout, 1205, &["lock wait timeout exceeded"]),
    (MysqlCode::Deadlock, 1213, &["deadlock found when trying to get lock"]),
    (MysqlCode::ReadOnlyOption, 1290, &["--read-only option"]),
    (MysqlCode::QueryInterrupted, 1317, &["query execution was interrupted"]),
    (MysqlCode::NeedReprepare, 1615, &["needs to be re-prepared"]),
    (MysqlCode::ReadOnlyTransaction, 1792, &["read only transaction"]),
    (MysqlCode::ReadOnlyMode, 1836, &["running in read-only mode"]),
    (MysqlCode::ConnectionKilled, 1927, &["connection was killed"]),
    (MysqlCode::StatementTimeout, 1969, &["max_statement_time exceeded"]),
    (MysqlCode::ReplicationHook, 3100, &["error on observer while running replication hook"]),
    (MysqlCode::RollbackDuringCommit, 3101, &["plugin instructed the server to rollback"]),
    (MysqlCode::ClientInteractionTimeout, 4031, &["disconnected by the server because of inactivity"]),
    (MysqlCode::DbAccessDenied, 1044, &["to database '"]),
    (MysqlCode::AccessDenied, 1045, &["access denied for user"]),
    (MysqlCode::BadDatabase, 1049, &["unknown database"]),
    (MysqlCode::BadField, 1054, &["unknown column"]),
    (MysqlCode::ParseError, 1064, &["error in your sql syntax"]),
    (MysqlCode::ColumnAccessDenied, 1143, &["for column '"]),
    (MysqlCode::TableAccessDenied, 1142, &["command denied to user"]),
    (MysqlCode::NoSuchTable, 1146, &["doesn't exist"]),
    (MysqlCode::SpecificAccessDenied, 1227, &["access denied; you need"]),
    (MysqlCode::NoDefault, 1364, &["doesn't have a default value"]),
    (MysqlCode::PasswordExpired, 1820, &["must change your password", "your password has expired"]),
    (MysqlCode::AccountLocked, 4151, &["account is locked", "has been locked"]),
    (MysqlCode::DuplicateEntry, 1062, &["duplicate entry"]),
    (MysqlCode::BadNull, 1048, &["cannot be null"]),
    (MysqlCode::OutOfRange, 1264, &["out of range value"]),
    (MysqlCode::DataTruncated, 1265, &["data truncated for column"]),
    (MysqlCode::TruncatedWrongValue, 1292, &["truncated incorrect"]),
    (MysqlCode::DataTooLong, 1406, &["data too long for column"]),
    (MysqlCode::WrongValue, 1366, &["incorrect", "value:"]),
    (MysqlCode::ForeignKey, 1452, &["foreign key constraint fails"]),
    (MysqlCode::Signal, 1644, &["unhandled user-defined exception"]),
    (MysqlCode::CheckConstraint, 3819, &["check constraint", "constraint `"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_number_and_its_patterns_name_it() {
        for (code, number, patterns) in CODES {
            assert_eq!(code.number(), Some(*number));
            assert_eq!(MysqlCode::from_number(*number), *code);
            for p in *patterns {
                assert_eq!(MysqlCode::from_message(p), *code, "{p} matches an earlier code");
            }
        }
    }

    #[test]
    fn the_classes_by_number() {
        let transient = [
            2002, 2003, 2005, 2006, 2011, 2013, 2026, 2055, 1040, 1047, 1053, 1077, 1152, 1153, 1158, 1159, 1160, 1161,
            1180, 1205, 1213, 1290, 1317, 1615, 1792, 1836, 1927, 1969, 3100, 3101, 4031, 9001, 9006,
        ];
        let environment = [1044, 1045, 1049, 1054, 1064, 1142, 1143, 1146, 1227, 1364, 1820, 1862, 3118, 4151];
        let schedule = [1048, 1062, 1264, 1265, 1292, 1366, 1406, 1452, 1644, 3819, 4025];
        for (numbers, class) in [
            (&transient[..], ErrorClass::Transient),
            (&environment[..], ErrorClass::Environment),
            (&schedule[..], ErrorClass::ScheduleFatal),
        ] {
            for n in numbers {
                let code = MysqlCode::from_number(*n);
                assert_ne!(code, MysqlCode::Other(*n), "{n} is named");
                assert_eq!(code.class(), class, "{n}");
            }
        }
        for (_, number, _) in CODES {
            assert!(
                transient.contains(number) || environment.contains(number) || schedule.contains(number),
                "{number} is in no list of this test"
            );
        }
        // Anything else is retried, keeping its number for the log.
        assert_eq!(MysqlCode::from_number(1030), MysqlCode::Other(1030));
        assert_eq!(MysqlCode::Other(1030).class(), ErrorClass::Transient);
        assert_eq!(MysqlCode::Other(1030).to_string(), "mysql error 1030");
        assert_eq!(MysqlCode::Unrecognised.class(), ErrorClass::Transient);
    }

    #[test]
    fn real_messages() {
        for (msg, code) in [
            ("Can't connect to server on '127.0.0.1' (115)", MysqlCode::ConnHostError),
            ("Lost connection to server during query", MysqlCode::ServerLost),
            (
                "Lost connection to server at 'handshake: reading initial communication packet', system error: 104",
                MysqlCode::ServerLostExtended,
            ),
            ("Server has gone away", MysqlCode::ServerGone),
            ("Lock wait timeout exceeded; try restarting transaction", MysqlCode::LockWaitTimeout),
            ("Deadlock found when trying to get lock; try restarting transaction", MysqlCode::Deadlock),
            (
                "The MariaDB server is running with the --read-only option so it cannot execute this statement",
                MysqlCode::ReadOnlyOption,
            ),
            ("WSREP has not yet prepared node for application use", MysqlCode::WsrepNotReady),
            ("Table 'x.schedule_schedule' doesn't exist", MysqlCode::NoSuchTable),
            ("Access denied for user 'w'@'localhost' (using password: YES)", MysqlCode::AccessDenied),
            ("Access denied for user 'w'@'%' to database 'celerity'", MysqlCode::DbAccessDenied),
            ("UPDATE command denied to user 'w'@'localhost' for table `x`.`schedule_schedule`", {
                MysqlCode::TableAccessDenied
            }),
            ("CONSTRAINT `err_short` failed for `x`.`schedule_schedule`", MysqlCode::CheckConstraint),
            ("Connection was killed", MysqlCode::ConnectionKilled),
            ("something new", MysqlCode::Unrecognised),
        ] {
            assert_eq!(MysqlCode::from_message(msg), code, "{msg}");
        }
    }
}
