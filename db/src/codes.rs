//! MySQL / MariaDB error codes Celerity must tell apart, and whether each is
//! transient (a later try may succeed) or fatal.
//!
//! diesel keeps only the message of a MySQL error, not its number, so the
//! code is recovered from the message text: the client library's messages
//! (20xx) are fixed English strings, and the server's are English under the
//! default `lc_messages = en_US`. A message that matches nothing is
//! [`MysqlCode::Unrecognised`], which is fatal.

use std::fmt;

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
    /// 1205 ER_LOCK_WAIT_TIMEOUT: a row lock was not granted in time.
    LockWaitTimeout,
    /// 1213 ER_LOCK_DEADLOCK: the transaction was chosen as a deadlock victim.
    Deadlock,
    /// 1290 ER_OPTION_PREVENTS_STATEMENT: `--read-only` (a replica during failover).
    ReadOnlyOption,
    /// 1836 ER_READ_ONLY_MODE: the server runs in read-only mode.
    ReadOnlyMode,
    /// 1927 ER_CONNECTION_KILLED: the connection was killed (`KILL`).
    ConnectionKilled,
    /// 4031 ER_CLIENT_INTERACTION_TIMEOUT: disconnected by the server for inactivity.
    ClientInteractionTimeout,
    /// 1045 ER_ACCESS_DENIED_ERROR: wrong user or password.
    AccessDenied,
    /// 1049 ER_BAD_DB_ERROR: the database does not exist.
    BadDatabase,
    /// 1054 ER_BAD_FIELD_ERROR: unknown column.
    BadField,
    /// 1064 ER_PARSE_ERROR: SQL syntax error.
    ParseError,
    /// 1146 ER_NO_SUCH_TABLE: the table does not exist.
    NoSuchTable,
    /// 1062 ER_DUP_ENTRY: duplicate key.
    DuplicateEntry,
    /// 1048 ER_BAD_NULL_ERROR: NULL in a NOT NULL column.
    BadNull,
    /// 1406 ER_DATA_TOO_LONG: value too long for the column.
    DataTooLong,
    /// 1366 ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: a value that does not fit the column type.
    WrongValue,
    /// 1452 ER_NO_REFERENCED_ROW_2: a foreign key constraint fails.
    ForeignKey,
    /// 1792 ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: a write inside a READ ONLY transaction.
    ReadOnlyTransaction,
    /// 3819 ER_CHECK_CONSTRAINT_VIOLATED: a CHECK constraint fails.
    CheckConstraint,
    /// A message no pattern recognises.
    Unrecognised,
}

impl MysqlCode {
    /// Whether a later try of the same statement may succeed.
    pub fn is_transient(self) -> bool {
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
            | TooManyConnections
            | ServerShutdown
            | NormalShutdown
            | AbortingConnection
            | NetPacketTooLarge
            | NetReadError
            | NetReadInterrupted
            | NetErrorOnWrite
            | NetWriteInterrupted
            | LockWaitTimeout
            | Deadlock
            | ReadOnlyOption
            | ReadOnlyMode
            | ConnectionKilled
            | ClientInteractionTimeout => true,
            AccessDenied | BadDatabase | BadField | ParseError | NoSuchTable | DuplicateEntry | BadNull
            | DataTooLong | WrongValue | ForeignKey | ReadOnlyTransaction | CheckConstraint | Unrecognised => false,
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
            | TooManyConnections => true,
            LockWaitTimeout | Deadlock | ReadOnlyOption | ReadOnlyMode | AccessDenied | BadDatabase | BadField
            | ParseError | NoSuchTable | DuplicateEntry | BadNull | DataTooLong | WrongValue | ForeignKey
            | ReadOnlyTransaction | CheckConstraint | Unrecognised => false,
        }
    }

    /// The numeric code, or `None` for [`MysqlCode::Unrecognised`].
    pub fn number(self) -> Option<u32> {
        CODES.iter().find(|(c, _, _)| *c == self).map(|(_, n, _)| *n)
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
/// (2055's message also contains 2013's words).
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
    (MysqlCode::ServerShutdown, 1053, &["server shutdown in progress"]),
    (MysqlCode::NormalShutdown, 1077, &["normal shutdown"]),
    (MysqlCode::AbortingConnection, 1152, &["aborted connection"]),
    (MysqlCode::NetPacketTooLarge, 1153, &["bigger than 'max_allowed_packet'"]),
    (MysqlCode::NetReadError, 1158, &["error reading communication packets"]),
    (MysqlCode::NetReadInterrupted, 1159, &["timeout reading communication packets"]),
    (MysqlCode::NetErrorOnWrite, 1160, &["error writing communication packets"]),
    (MysqlCode::NetWriteInterrupted, 1161, &["timeout writing communication packets"]),
    (MysqlCode::LockWaitTimeout, 1205, &["lock wait timeout exceeded"]),
    (MysqlCode::Deadlock, 1213, &["deadlock found when trying to get lock"]),
    (MysqlCode::ReadOnlyOption, 1290, &["--read-only option"]),
    (MysqlCode::ReadOnlyMode, 1836, &["running in read-only mode"]),
    (MysqlCode::ConnectionKilled, 1927, &["connection was killed"]),
    (MysqlCode::ClientInteractionTimeout, 4031, &["disconnected by the server because of inactivity"]),
    (MysqlCode::AccessDenied, 1045, &["access denied for user"]),
    (MysqlCode::BadDatabase, 1049, &["unknown database"]),
    (MysqlCode::BadField, 1054, &["unknown column"]),
    (MysqlCode::ParseError, 1064, &["error in your sql syntax"]),
    (MysqlCode::NoSuchTable, 1146, &["doesn't exist"]),
    (MysqlCode::DuplicateEntry, 1062, &["duplicate entry"]),
    (MysqlCode::BadNull, 1048, &["cannot be null"]),
    (MysqlCode::DataTooLong, 1406, &["data too long for column"]),
    (MysqlCode::WrongValue, 1366, &["incorrect", "value:"]),
    (MysqlCode::ForeignKey, 1452, &["foreign key constraint fails"]),
    (MysqlCode::ReadOnlyTransaction, 1792, &["read only transaction"]),
    (MysqlCode::CheckConstraint, 3819, &["check constraint"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_pattern_and_a_number() {
        for (code, number, patterns) in CODES {
            assert_eq!(code.number(), Some(*number));
            for p in *patterns {
                assert_eq!(MysqlCode::from_message(p), *code, "{p} matches an earlier code");
            }
        }
    }

    #[test]
    fn the_listed_codes_are_transient() {
        let transient = [
            2002, 2003, 2005, 2006, 2011, 2013, 2026, 2055, 1040, 1053, 1077, 1152, 1153, 1158, 1159, 1160, 1161, 1205,
            1213, 1290, 1836, 1927, 4031,
        ];
        for (code, number, _) in CODES {
            assert_eq!(code.is_transient(), transient.contains(number), "{number}");
        }
        assert!(!MysqlCode::Unrecognised.is_transient());
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
            ("Table 'x.schedule_schedule' doesn't exist", MysqlCode::NoSuchTable),
            ("Connection was killed", MysqlCode::ConnectionKilled),
            ("something new", MysqlCode::Unrecognised),
        ] {
            assert_eq!(MysqlCode::from_message(msg), code, "{msg}");
        }
    }
}
