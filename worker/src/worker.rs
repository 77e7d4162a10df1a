//! `run(config, shutdown)`: consume until `shutdown` resolves, then stop
//! taking deliveries, let in-flight polls finish within the grace period,
//! hand the rest back and close. A lost broker connection is not the end:
//! the worker reconnects with backoff, declares its topology again and
//! resumes; what was in flight is redelivered by the broker, and the guarded
//! update makes that harmless.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use celerity_db::{Db, DbError};
use futures_lite::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use thiserror::Error;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::broker::{self, BrokerAddr, BrokerError, Publisher};
use crate::config::WorkerConfig;
use crate::context::Ctx;
use crate::dispatch;
use crate::events::Events;
use crate::http::Health;
use crate::plugin::Registry;

/// Heartbeat asked of the broker when the URL names none: a dead connection
/// is noticed within two intervals.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;
/// Longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// How long a stopping worker waits for the broker to answer a cancel or a
/// close: a broker that stopped answering must not keep the process alive.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the worker stopped other than by a shutdown signal.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The broker failed (unreachable at start-up, topology refused).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The database configuration cannot work.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// How a session with the broker ended.
enum SessionEnd {
    /// Shutdown was requested and done.
    Shutdown,
    /// The connection broke; reconnect.
    Lost(String),
}

/// Runs a worker with the built-in plugins.
pub async fn run(config: WorkerConfig, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    run_with(config, Registry::with_builtin(), shutdown).await
}

/// Runs a worker with the given plugins.
pub async fn run_with(
    config: WorkerConfig,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let db = Db::new(config.db.clone())?;
    // A database that is down at start-up is a transient condition: polls
    // retry. One that refuses the configuration (a wrong password, no such
    // database) is bad configuration: every poll would fail.
    let checked = db.clone();
    let check = tokio::task::spawn_blocking(move || checked.check_connection());
    match tokio::time::timeout(config.db.call_timeout, check).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) if !e.is_transient() => return Err(WorkerError::Db(e)),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "database not reachable at start-up; polls will retry until it is")
        }
        Ok(Err(join)) => panic!("database check panicked: {join}"),
        Err(_) => tracing::warn!("database not answering at start-up; polls will retry until it does"),
    }
    // Before any metric is recorded: what comes earlier is lost. The timer
    // drains histogram samples whether or not anyone scrapes; it stops when
    // the worker returns.
    let _upkeep = crate::meters::upkeep(crate::meters::UPKEEP_INTERVAL);
    let health = Health::new(db.clone());
    let _server = match crate::http::serve(config.http_addr, health.clone()).await {
        Ok(server) => {
            tracing::info!(addr = %server.addr, "serving /metrics and /healthz");
            Some(server)
        }
        // Several workers on one host with the default address: the first
        // serves, the rest run on without the endpoint.
        Err(e) => {
            tracing::error!(addr = %config.http_addr, error = %e, "cannot serve /metrics and /healthz");
            None
        }
    };
    let addr = BrokerAddr { url: with_heartbeat(&config.broker_url), ca_pem: config.broker_ca_pem.clone() };
    let mut conn = broker::connect(&addr, config.broker_wait).await?;
    tokio::pin!(shutdown);
    loop {
        let ended = session(&config, &db, &registry, &conn, &health, &mut shutdown).await;
        health.set_channel(None);
        match ended? {
            SessionEnd::Shutdown => {
                bounded("connection close", conn.close(200, "worker stopping".into())).await;
                tracing::info!("worker stopped");
                return Ok(());
            }
            SessionEnd::Lost(reason) => tracing::warn!(%reason, "broker connection lost; reconnecting"),
        }
        let mut delay = Duration::from_millis(200);
        conn = loop {
            tokio::select! {
                _ = &mut shutdown => {
                    tracing::info!("worker stopped while reconnecting");
                    return Ok(());
                }
                connected = addr.open() => match connected {
                    Ok(conn) => break conn,
                    Err(e) => {
                        tracing::warn!(error = %e, ?delay, "reconnect failed; trying again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                    }
                },
            }
        };
        metrics::counter!(crate::meters::RECONNECTS).increment(1);
        tracing::info!("reconnected to the broker");
    }
}

/// Runs one shutdown step against the broker, giving up after
/// [`CLOSE_TIMEOUT`]; its outcome does not change what happens next.
async fn bounded<T>(step: &str, fut: impl Future<Output = lapin::Result<T>>) {
    match tokio::time::timeout(CLOSE_TIMEOUT, fut).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(step, error = %e, "broker refused a shutdown step"),
        Err(_) => tracing::warn!(step, "broker did not answer a shutdown step in time; going on"),
    }
}

/// The URL with `heartbeat=` added when it has none.
fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&heartbeat={DEFAULT_HEARTBEAT_SECS}")
    } else {
        format!("{url}?heartbeat={DEFAULT_HEARTBEAT_SECS}")
    }
}

/// Consumes on one connection until shutdown or until the connection breaks.
async fn session<F: Future<Output = ()>>(
    config: &WorkerConfig,
    db: &Db,
    registry: &Registry,
    conn: &Connection,
    health: &Health,
    shutdown: &mut Pin<&mut F>,
) -> Result<SessionEnd, WorkerError> {
    let consume = conn.create_channel().await.map_err(BrokerError::from)?;
    let queues = config.consumed_queues();
    let mut declared = queues.clone();
    if !declared.contains(&config.next_poll_queue) {
        declared.push(config.next_poll_queue.clone());
    }
    broker::declare_topology(&consume, &declared, config.queue_type).await?;
    let publisher = Publisher::new(conn.create_channel().await.map_err(BrokerError::from)?, config.eta_window).await?;
    // Concurrency for running polls, plus room for deliveries waiting on their eta.
    let prefetch = u16::try_from(config.concurrency).unwrap_or(u16::MAX).saturating_add(config.eta_hold);
    consume.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(BrokerError::from)?;
    let (mut rx, tags) = start_consumers(config, &queues, &consume, prefetch).await?;
    health.set_channel(Some(consume.clone()));
    // Events and remote control are for operators' tools: without them the
    // worker still works.
    let events = match Events::start(conn, &config.hostname, config.events).await {
        Ok(events) => Some(Arc::new(events)),
        Err(e) => {
            tracing::error!(error = %e, "cannot send Celery events");
            None
        }
    };
    let heartbeat = events.clone().map(|events| {
        tokio::spawn(async move {
            events.worker("worker-online").await;
            loop {
                tokio::time::sleep(crate::events::HEARTBEAT).await;
                events.worker("worker-heartbeat").await;
            }
        })
    });
    let inflight = Arc::new(crate::inflight::InFlight::new(&config.hostname));
    let pidbox = match crate::pidbox::start(conn, config, prefetch, events.clone(), inflight.clone()).await {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::error!(error = %e, "no remote control mailbox; celery inspect will not see this worker");
            None
        }
    };
    tracing::info!(queues = ?queues, concurrency = config.concurrency, hostname = %config.hostname, "consuming");

    let ctx = Arc::new(Ctx {
        db: db.clone(),
        publisher,
        registry: registry.clone(),
        origin: format!("{}@{}", std::process::id(), config.hostname),
        reply_to: uuid::Uuid::new_v4().to_string(),
        config: config.clone(),
        events: events.clone(),
        inflight,
    });
    let sweeper = config.sweep_interval.map(|every| tokio::spawn(crate::sweep::periodically(ctx.clone(), every)));
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let end = loop {
        tokio::select! {
            _ = shutdown.as_mut() => {
                tracing::info!("shutdown requested");
                break SessionEnd::Shutdown;
            }
            delivery = rx.recv() => match delivery {
                Some(Ok(delivery)) => {
                    tasks.spawn(dispatch::handle(ctx.clone(), delivery, permits.clone(), stop_rx.clone()));
                }
                Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                None => break SessionEnd::Lost("the broker closed the consumers".into()),
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "delivery handler panicked; its message will be redelivered");
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    drop(rx);
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    if let Some(pidbox) = pidbox {
        pidbox.abort();
    }
    if let Some(heartbeat) = heartbeat {
        heartbeat.abort();
    }
    match end {
        SessionEnd::Shutdown => {
            // Stop taking deliveries; those not yet running stay unacked and go back.
            for tag in &tags {
                bounded("consumer cancel", consume.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()))
                    .await;
            }
            drain(&mut tasks, config.shutdown_grace).await;
            if let Some(events) = &events {
                events.worker("worker-offline").await;
            }
            bounded("channel close", consume.close(200, "worker stopping".into())).await;
        }
        SessionEnd::Lost(_) => {
            // Nothing in flight can be acked on a dead connection: the broker
            // redelivers it all, so stop the handlers now and move on.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }
    Ok(end)
}

/// One consumer per queue, all feeding one channel of deliveries.
async fn start_consumers(
    config: &WorkerConfig,
    queues: &[String],
    consume: &Channel,
    prefetch: u16,
) -> Result<(mpsc::Receiver<lapin::Result<lapin::message::Delivery>>, Vec<String>), WorkerError> {
    let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
    let mut tags = Vec::new();
    for queue in queues {
        let tag = format!("{}.{queue}", config.hostname);
        let mut consumer = consume
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::from)?;
        tags.push(tag);
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                if tx.send(delivery).await.is_err() {
                    break;
                }
            }
        });
    }
    Ok((rx, tags))
}

/// Waits for in-flight handlers up to `grace`, then stops the rest (their
/// messages stay unacked and go back to the broker).
async fn drain(tasks: &mut JoinSet<()>, grace: Duration) {
    let drained = tokio::time::timeout(grace, async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "delivery handler panicked");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(left = tasks.len(), "grace period over; handing the rest back unacked");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
