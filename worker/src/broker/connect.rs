//! Reaching the broker: one attempt, start-up's bounded wait, and the
//! reconnection after a loss, both with the same backon backoff.
//!
//! The URL may be Celery's failover list, `amqp://a//;amqp://b//;amqp://c//`.
//! Start-up connects to the first node that answers, in order; after a loss
//! the worker tries the next node first, round the list (Celery's default
//! `round-robin` failover strategy). Each attempt goes once round the nodes;
//! the backoff is between rounds.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use lapin::{Connection, ConnectionProperties};

use super::BrokerError;
use crate::meters;

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
    /// `amqp://` or `amqps://` URL, or several separated by `;` (the nodes of a cluster).
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

/// A connection, and which node of the list it is to.
pub struct Connected {
    /// The connection.
    pub conn: Connection,
    /// The node's index in the list.
    pub node: usize,
}

impl BrokerAddr {
    /// A broker trusted through the system's authorities only.
    pub fn new(url: impl Into<String>) -> BrokerAddr {
        BrokerAddr { url: url.into(), ca_pem: None }
    }

    /// The nodes of the list, in order (one for a plain URL).
    pub fn nodes(&self) -> Vec<&str> {
        nodes(&self.url)
    }

    /// One connection attempt to the first node of the list.
    pub async fn open(&self) -> lapin::Result<Connection> {
        self.open_node(self.nodes().first().copied().unwrap_or_default()).await
    }

    async fn open_node(&self, url: &str) -> lapin::Result<Connection> {
        let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: self.ca_pem.clone() };
        lapin::DefaultConnectionBuilder::new()?
            .with_uri_str(url.to_owned())
            .with_properties(ConnectionProperties::default())
            .with_tls_config(tls)
            .connect()
            .await
    }

    /// Once round the nodes from `first`: the first that answers.
    async fn open_round(&self, first: usize) -> lapin::Result<Connected> {
        let nodes = self.nodes();
        let mut last = None;
        for i in 0..nodes.len() {
            let node = (first + i) % nodes.len();
            match self.open_node(nodes[node]).await {
                Ok(conn) => {
                    let name = node_name(nodes[node]);
                    tracing::info!(node = %name, "connected to broker node {} of {}", node + 1, nodes.len());
                    metrics::counter!(meters::BROKER_CONNECTIONS, "node" => name).increment(1);
                    return Ok(Connected { conn, node });
                }
                Err(e) => {
                    if nodes.len() > 1 {
                        tracing::warn!(node = %node_name(nodes[node]), error = %e, "broker node not answering; trying the next");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed))
        }))
    }
}

/// The nodes of a URL or of a `;`-separated failover list.
pub fn nodes(url: &str) -> Vec<&str> {
    url.split(';').map(str::trim).filter(|n| !n.is_empty()).collect()
}

/// `host:port` of a node's URL, for logs and the metric label.
pub fn node_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, host)| host).to_owned()
}

/// Pauses between attempts: from [`FIRST_PAUSE`], doubling, at most
/// [`LONGEST_PAUSE`], never giving up by itself.
fn pauses() -> ExponentialBuilder {
    super::doubling(FIRST_PAUSE, LONGEST_PAUSE)
}

/// Rounds with backoff until one connects, logging each failure as `what`.
async fn attempts(
    addr: &BrokerAddr,
    first: usize,
    what: &'static str,
    last: &mut Option<String>,
) -> lapin::Result<Connected> {
    (|| addr.open_round(first))
        .retry(pauses())
        .sleep(tokio::time::sleep)
        .notify(|e: &lapin::Error, pause: Duration| {
            tracing::warn!(error = %e, ?pause, "{what}");
            *last = Some(e.to_string());
        })
        .await
}

/// Connects to the first node that answers, trying again with backoff until
/// `wait` has passed (start-up).
pub async fn connect(addr: &BrokerAddr, wait: Duration) -> Result<Connected, BrokerError> {
    let started = Instant::now();
    let mut last = None;
    let tried = tokio::time::timeout(wait, attempts(addr, 0, "broker not reachable yet, retrying", &mut last)).await;
    let last_error = match tried {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => last.unwrap_or_else(|| "no connection attempt finished in time".into()),
    };
    Err(BrokerError::Unreachable { url: celerity_db::redact_url(&addr.url), waited: started.elapsed(), last_error })
}

/// Connects again after losing node `lost`, the next node first, with the
/// same backoff, for as long as it takes; the caller races it against shutdown.
pub async fn reconnect(addr: &BrokerAddr, lost: usize) -> lapin::Result<Connected> {
    attempts(addr, lost + 1, "reconnect failed; trying again", &mut None).await
}

/// Each node's URL with `heartbeat=` added when it has none.
pub fn with_heartbeat(url: &str) -> String {
    let with = |node: &str| {
        if node.contains("heartbeat=") {
            node.to_owned()
        } else if node.contains('?') {
            format!("{node}&heartbeat={DEFAULT_HEARTBEAT_SECS}")
        } else {
            format!("{node}?heartbeat={DEFAULT_HEARTBEAT_SECS}")
        }
    };
    nodes(url).into_iter().map(with).collect::<Vec<_>>().join(";")
}

/// A connection (the first node of `addr` that answers within `wait`) and a
/// confirm-mode publisher on it, for a command that publishes and closes.
pub async fn connect_publisher(
    addr: &BrokerAddr,
    wait: Duration,
    direct_within: Duration,
) -> Result<(Connection, super::Publisher), String> {
    let conn = connect(addr, wait).await.map_err(|e| e.to_string())?.conn;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    let publisher = super::Publisher::new(channel, direct_within).await.map_err(|e| e.to_string())?;
    Ok((conn, publisher))
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

    #[test]
    fn a_failover_list_is_split_into_nodes_each_with_a_heartbeat() {
        let list = "amqp://u:p@a:5672//; amqp://b:5673//;amqp://c//?heartbeat=3;";
        let addr = BrokerAddr::new(list);
        assert_eq!(addr.nodes(), ["amqp://u:p@a:5672//", "amqp://b:5673//", "amqp://c//?heartbeat=3"]);
        assert_eq!(
            with_heartbeat(list),
            "amqp://u:p@a:5672//?heartbeat=10;amqp://b:5673//?heartbeat=10;amqp://c//?heartbeat=3"
        );
        assert_eq!(node_name("amqp://u:p@a:5672//"), "a:5672");
        assert_eq!(node_name("amqps://b/%2f"), "b");
    }

    #[tokio::test]
    async fn start_up_gives_up_after_the_wait_with_the_last_error_and_no_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = BrokerAddr::new(format!("amqp://guest:hunter2@127.0.0.1:{port}/%2f"));
        let started = Instant::now();
        let err = connect(&addr, Duration::from_millis(700)).await.err().expect("no broker there").to_string();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.starts_with("cannot reach the broker at amqp://guest:***@127.0.0.1:"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
