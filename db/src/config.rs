//! Database settings, loaded once at start-up.

use std::fmt;
use std::time::Duration;

use chrono_tz::Tz;

/// Connections in the pool when nothing else is said: the worker raises it to
/// at least its concurrency so no poll waits for a connection.
pub const DEFAULT_POOL_SIZE: u32 = 10;
/// How long a call waits for a pooled connection: long enough to ride out a
/// burst, short enough that a dead server turns into a retry quickly.
pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of one repository call: far above any statement Celerity
/// runs (single-row reads and writes), so only a hung server reaches it.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// InnoDB's lock wait for Celerity's sessions: below the call deadline, so a
/// blocked row surfaces as error 1205 rather than as a deadline.
pub const DEFAULT_LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a pooled connection lives at most: a proxy or a failover may
/// drop connections silently, and a shorter life bounds how long a pool keeps
/// them (the BlueKing Go runtime's `SetConnMaxLifetime`).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(180);
/// How long an idle pooled connection is kept (the Go runtime's `SetConnMaxIdleTime`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to reach the database.
#[derive(Clone)]
pub struct DbConfig {
    /// `mysql://user:password@host:port/database`.
    pub url: String,
    /// Maximum pooled connections.
    pub pool_size: u32,
    /// Wait for a pooled connection (also bounds connecting to a hung server).
    pub checkout_timeout: Duration,
    /// Deadline of one repository call (a hung server's read or write).
    pub call_timeout: Duration,
    /// `innodb_lock_wait_timeout` of each session.
    pub lock_wait_timeout: Duration,
    /// A connection's longest life in the pool (zero: no limit).
    pub max_lifetime: Duration,
    /// How long an idle connection stays in the pool (zero: no limit).
    pub idle_timeout: Duration,
    /// Zone of the naive datetimes in the tables: UTC for Django `USE_TZ=True`,
    /// the Django `TIME_ZONE` (e.g. Asia/Shanghai) for `USE_TZ=False`.
    pub time_zone: Tz,
}

impl DbConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> DbConfig {
        DbConfig {
            url: url.into(),
            pool_size: DEFAULT_POOL_SIZE,
            checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            lock_wait_timeout: DEFAULT_LOCK_WAIT_TIMEOUT,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            time_zone: Tz::UTC,
        }
    }
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("lock_wait_timeout", &self.lock_wait_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("time_zone", &self.time_zone)
            .finish()
    }
}

/// The URL with its password replaced by `***`, for logs and errors; each
/// URL of a `;`-separated list (a broker's failover list) alike. Whatever
/// the password holds unencoded (`/`, `?`, `#`, `@`, `;`), it never shows:
/// the credentials end at the last `@`, and a `;` separates two URLs only
/// where a new `scheme://` follows. When something after the host holds an
/// `@` too, more than the password is masked, never less.
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(end) = next_url_end(rest) {
        out.push_str(&redact_one(&rest[..end]));
        out.push(';');
        rest = &rest[end + 1..];
    }
    out.push_str(&redact_one(rest));
    out
}

/// Where the first URL of a list ends: a `;` followed by another `scheme://`.
fn next_url_end(list: &str) -> Option<usize> {
    list.match_indices(';').map(|(i, _)| i).find(|&i| {
        let next = list[i + 1..].trim_start();
        next.split_once("://").is_some_and(|(scheme, _)| {
            let mut chars = scheme.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
    })
}

fn redact_one(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some(at) = rest.rfind('@') else { return url.to_owned() };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact_url("mysql://root:s3cr@t@db:3306/x"), "mysql://root:***@db:3306/x");
        assert_eq!(redact_url("mysql://root@db/x"), "mysql://root@db/x");
        assert_eq!(redact_url("mysql://db/x"), "mysql://db/x");
        assert_eq!(redact_url("amqp://u:p1@a//;amqp://u:p2@b//"), "amqp://u:***@a//;amqp://u:***@b//");
        let cfg = DbConfig::new("mysql://u:hunter2@h/d");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn passwords_with_unencoded_delimiters_never_show() {
        for password in ["ab/cd", "a?b", "a#b", "a@b", "a;b", "a;amqp:b", "se/cr:et@x?y#z", "/x/"] {
            for url in [format!("mysql://root:{password}@db:3306/x"), format!("amqp://u:{password}@h:5672/%2f")] {
                let shown = redact_url(&url);
                assert!(!shown.contains(password), "{url} shows as {shown}");
                assert!(shown.contains(":***@"), "{url} shows as {shown}");
            }
        }
        assert_eq!(redact_url("mysql://root:ab/cd@db/x"), "mysql://root:***@db/x");
        // In a failover list, each node alike, whatever its password holds.
        assert_eq!(redact_url("amqp://u:a;b@h1//; amqp://u:c/d@h2//"), "amqp://u:***@h1//; amqp://u:***@h2//");
        // An '@' after the host masks more, never less.
        assert_eq!(redact_url("mysql://u:p@h/d?ssl_ca=/a@b"), "mysql://u:***@b");
        assert_eq!(redact_url("mysql://root@h/d"), "mysql://root@h/d");
    }
}
