//! The queues' own counts on `/metrics`, so a plugin app needs no
//! `celery-prometheus-exporter` (its `c-monitor` process): for every queue
//! the worker consumes (the framework's and its own), the messages ready
//! and unacknowledged and the consumers, refreshed every
//! `--queue-stats-interval`.
//!
//! Ready messages and consumers come from a passive declare on the worker's
//! own connection, which every broker answers (what the exporter read).
//! Unacknowledged messages only RabbitMQ's management API knows: it is
//! asked at `--broker-management-url`, by default the broker's host on port
//! 15672 with the broker's user; where it does not answer, the `unacked`
//! series is left out (said once in the log) and the others go on.

use std::time::Duration;

use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::meters;

/// Characters kept as they are in a path segment (a vhost `/` is `%2F`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// How long one management API request may take.
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// One queue's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    /// Messages waiting to be delivered.
    pub ready: u64,
    /// Messages delivered and not yet acknowledged, when the management API answered.
    pub unacked: Option<u64>,
    /// Consumers on the queue.
    pub consumers: u64,
}

/// Where the management API is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Management {
    /// `http(s)://host:port`, without a trailing slash.
    pub base: String,
    /// The virtual host of the worker's queues.
    pub vhost: String,
    /// Basic auth user and password.
    pub user: String,
    /// Basic auth password.
    pub password: String,
}

impl Management {
    /// The API beside the broker `broker_url` (its first node): given as
    /// `management_url` (user and password in it, else the broker's), or
    /// the broker's host on port 15672.
    pub fn for_broker(broker_url: &str, management_url: Option<&str>) -> Option<Management> {
        let first = crate::broker::connect::nodes(broker_url).first().copied()?;
        let uri: lapin::uri::AMQPUri = first.parse().ok()?;
        let (mut user, mut password) = (uri.authority.userinfo.username, uri.authority.userinfo.password);
        let base = match management_url {
            Some(url) => {
                let (scheme, rest) = url.trim_end_matches('/').split_once("://")?;
                let (auth, host) = rest.rsplit_once('@').map_or((None, rest), |(a, h)| (Some(a), h));
                if let Some((u, p)) = auth.and_then(|a| a.split_once(':')) {
                    (user, password) = (decode(u), decode(p));
                }
                format!("{scheme}://{host}")
            }
            None => format!("http://{}:15672", bracketed(&uri.authority.host)),
        };
        Some(Management { base, vhost: uri.vhost, user, password })
    }

    /// The URL of one queue's record.
    pub fn queue_url(&self, queue: &str) -> String {
        let enc = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
        format!("{}/api/queues/{}/{}", self.base, enc(&self.vhost), enc(queue))
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// An IPv6 literal in a URL's host.
fn bracketed(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() }
}

/// Ready messages and consumers of `queue`, by a passive declare on a
/// channel of its own (a missing queue closes the channel it is asked on).
async fn passive(conn: &Connection, queue: &str) -> Result<(u64, u64), lapin::Error> {
    let channel = conn.create_channel().await?;
    let declared = channel
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await;
    let _ = channel.close(200, "counted".into()).await;
    let queue = declared?;
    Ok((u64::from(queue.message_count()), u64::from(queue.consumer_count())))
}

/// Unacknowledged messages of `queue` from the management API.
fn unacked(agent: &ureq::Agent, management: &Management, queue: &str) -> Result<u64, String> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", management.user, management.password));
    let mut response = agent
        .get(management.queue_url(queue))
        .header("Authorization", format!("Basic {auth}"))
        .call()
        .map_err(|e| e.to_string())?;
    let record: serde_json::Value = response.body_mut().read_json().map_err(|e| e.to_string())?;
    // A queue the statistics have not sampled yet has no field: none unacked.
    Ok(record.get("messages_unacknowledged").and_then(serde_json::Value::as_u64).unwrap_or(0))
}

/// Counts `queues` once and sets the gauges. Returns the counts, and why
/// the unacknowledged counts are missing when they are.
pub async fn refresh(
    conn: &Connection,
    agent: &ureq::Agent,
    management: Option<&Management>,
    queues: &[String],
) -> (Vec<(String, QueueCounts)>, Option<String>) {
    let mut counted = Vec::with_capacity(queues.len());
    let mut missing = None;
    for queue in queues {
        let (ready, consumers) = match passive(conn, queue).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::debug!(%queue, error = %e, "queue not counted");
                continue;
            }
        };
        let unacked = match management {
            Some(management) if missing.is_none() => {
                let (agent, management, name) = (agent.clone(), management.clone(), queue.clone());
                match tokio::task::spawn_blocking(move || unacked(&agent, &management, &name)).await {
                    Ok(Ok(n)) => Some(n),
                    Ok(Err(e)) => {
                        missing = Some(e);
                        None
                    }
                    Err(join) => panic!("management API thread panicked: {join}"),
                }
            }
            _ => None,
        };
        let counts = QueueCounts { ready, unacked, consumers };
        set_gauges(queue, counts);
        counted.push((queue.clone(), counts));
    }
    (counted, management.map_or(Some("no management API".into()), |_| missing))
}

fn set_gauges(queue: &str, counts: QueueCounts) {
    let q = queue.to_owned();
    metrics::gauge!(meters::QUEUE_MESSAGES, "queue" => q.clone(), "state" => "ready").set(counts.ready as f64);
    if let Some(unacked) = counts.unacked {
        metrics::gauge!(meters::QUEUE_MESSAGES, "queue" => q.clone(), "state" => "unacked").set(unacked as f64);
    }
    metrics::gauge!(meters::QUEUE_CONSUMERS, "queue" => q).set(counts.consumers as f64);
}

/// A session's counter: a refresh every `every`, for as long as the session
/// polls it (it never ends by itself). That the management API does not
/// answer is said once, and again only after it answered in between.
pub async fn periodically(conn: &Connection, management: Option<Management>, queues: Vec<String>, every: Duration) {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(MANAGEMENT_TIMEOUT)).build().into();
    let mut said = false;
    loop {
        let (_, missing) = refresh(conn, &agent, management.as_ref(), &queues).await;
        match (missing, said) {
            (Some(why), false) => {
                tracing::warn!(error = %why, "RabbitMQ's management API does not answer: /metrics shows ready messages and consumers, not unacknowledged ones");
                said = true;
            }
            (None, true) => said = false,
            _ => {}
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_management_api_is_found_beside_the_broker() {
        let m = Management::for_broker("amqp://bk:s%40cret@mq.internal:5672/plugins", None).unwrap();
        assert_eq!(m.base, "http://mq.internal:15672");
        assert_eq!((m.user.as_str(), m.password.as_str()), ("bk", "s@cret"));
        assert_eq!(m.queue_url("plugin_schedule"), "http://mq.internal:15672/api/queues/plugins/plugin_schedule");
        let default_vhost = Management::for_broker("amqp://guest:guest@127.0.0.1:5672/%2f", None).unwrap();
        assert_eq!(
            default_vhost.queue_url("celerity.schedule"),
            "http://127.0.0.1:15672/api/queues/%2F/celerity.schedule"
        );
        let given = Management::for_broker("amqp://a:b@h//;amqp://a:b@h2//", Some("https://mon:pw@admin.example:443/"))
            .unwrap();
        assert_eq!(
            (given.base.as_str(), given.user.as_str(), given.password.as_str()),
            ("https://admin.example:443", "mon", "pw")
        );
        let same_user = Management::for_broker("amqp://a:b@h//", Some("http://h:15673")).unwrap();
        assert_eq!((same_user.base.as_str(), same_user.user.as_str()), ("http://h:15673", "a"));
    }
}
