//! Reaching the broker: one attempt, start-up's bounded wait, and the
//! reconnection after a loss, both with the same backon backoff.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use lapin::{Connection, ConnectionProperties};

use super::BrokerError;

/// Heartbeat asked of the broker when the URL names none: a dead connection
/// is noticed within two intervals.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;
/// First pause between connection attempts: a broker restarting is back
/// within a few of them.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between connection attempts: a broker back after a long
/// outage is found within this.
const LONGEST_PAUSE: Duration = Duration::from_secs(10);

/// Where the broker is and which certificate authorities to trust beyond
/// the system's, for `amqps://`. Debug output never shows the password.
#[derive(Clone)]
pub struct BrokerAddr {
    /// `amqp://` or `amqps://` URL.
    pub url: String,
    /// PEM certificates of extra authorities (`--broker-ca-file`).
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerAddr")
            .field("url", &celerity_db::redact_url(&self.url))
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<PEM>"))
            .finish()
    }
}

impl BrokerAddr {
    /// A broker trusted through the system's authorities only.
    pub fn new(url: impl Into<String>) -> BrokerAddr {
        BrokerAddr { url: url.into(), ca_pem: None }
    }

    /// One connection attempt.
    pub async fn open(&self) -> lapin::Result<Connection> {
        let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: self.ca_pem.clone() };
        lapin::DefaultConnectionBuilder::new()?
            .with_uri_str(self.url.clone())
            .with_properties(ConnectionProperties::default())
            .with_tls_config(tls)
            .connect()
            .await
    }
}

/// Pauses between attempts: from [`FIRST_PAUSE`], doubling, at most
/// [`LONGEST_PAUSE`], never giving up by itself.
fn pauses() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_PAUSE)
        .with_max_delay(LONGEST_PAUSE)
        .with_factor(2.0)
        .without_max_times()
}

/// Attempts with backoff until one connects, logging each failure as `what`.
async fn attempts(addr: &BrokerAddr, what: &'static str, last: &mut Option<String>) -> lapin::Result<Connection> {
    (|| addr.open())
        .retry(pauses())
        .sleep(tokio::time::sleep)
        .notify(|e: &lapin::Error, pause: Duration| {
            tracing::warn!(error = %e, ?pause, "{what}");
            *last = Some(e.to_string());
        })
        .await
}

/// Connects, trying again with backoff until `wait` has passed (start-up).
pub async fn connect(addr: &BrokerAddr, wait: Duration) -> Result<Connection, BrokerError> {
    let started = Instant::now();
    let mut last = None;
    let tried = tokio::time::timeout(wait, attempts(addr, "broker not reachable yet, retrying", &mut last)).await;
    let last_error = match tried {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => last.unwrap_or_else(|| "no connection attempt finished in time".into()),
    };
    Err(BrokerError::Unreachable { url: celerity_db::redact_url(&addr.url), waited: started.elapsed(), last_error })
}

/// Connects again after a loss, with the same backoff, for as long as it
/// takes; the caller races it against shutdown.
pub async fn reconnect(addr: &BrokerAddr) -> lapin::Result<Connection> {
    attempts(addr, "reconnect failed; trying again", &mut None).await
}

/// The URL with `heartbeat=` added when it has none.
pub fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&heartbeat={DEFAULT_HEARTBEAT_SECS}")
    } else {
        format!("{url}?heartbeat={DEFAULT_HEARTBEAT_SECS}")
    }
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn pauses_double_from_200_ms_up_to_10_s_and_never_stop() {
        let seq: Vec<u128> = pauses().build().take(10).map(|d| d.as_millis()).collect();
        assert_eq!(seq, [200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000, 10000]);
        assert!(pauses().build().nth(1000).is_some());
    }

    #[test]
    fn a_heartbeat_is_asked_for_unless_the_url_names_one() {
        assert_eq!(with_heartbeat("amqp://h/%2f"), "amqp://h/%2f?heartbeat=10");
        assert_eq!(with_heartbeat("amqp://h/v?frame_max=8192"), "amqp://h/v?frame_max=8192&heartbeat=10");
        assert_eq!(with_heartbeat("amqp://h/v?heartbeat=3"), "amqp://h/v?heartbeat=3");
    }

    #[tokio::test]
    async fn start_up_gives_up_after_the_wait_with_the_last_error_and_no_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = BrokerAddr::new(format!("amqp://guest:hunter2@127.0.0.1:{port}/%2f"));
        let started = Instant::now();
        let err = connect(&addr, Duration::from_millis(700)).await.unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.starts_with("cannot reach the broker at amqp://guest:***@127.0.0.1:"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
