//! One session with the broker: declare the topology, start the consumers,
//! the events, the mailbox and the sweeper, hand each delivery to
//! [`crate::delivery::handle`], cancel and restart the consumers as the
//! worker pauses and resumes, and stop it all on shutdown or when the
//! connection breaks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use celerity_db::Db;
use lapin::Connection;
use lapin::options::BasicQosOptions;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::consumers::Consumers;
use super::{WorkerError, bounded, sweeper};
use crate::broker::{self, BrokerError, Publisher};
use crate::config::WorkerConfig;
use crate::control::endpoint::Health;
use crate::control::events::{self, Events};
use crate::control::inflight::InFlight;
use crate::control::meters;
use crate::control::pidbox;
use crate::delivery;
use crate::plugins::{Plugins, Runs};
use crate::tasks::Ctx;
use crate::tasks::messages::Sender;

/// How often a cancelled consumer's queue is tried again while it cannot be declared.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(2);

/// How a session with the broker ended.
pub(super) enum SessionEnd {
    /// Shutdown was requested and done.
    Shutdown,
    /// The connection broke; reconnect.
    Lost(String),
}

/// Consumes on one connection until shutdown or until the connection breaks.
pub(super) async fn session<F: Future<Output = ()>>(
    config: &WorkerConfig,
    db: &Db,
    plugins: &Plugins,
    conn: &Connection,
    health: &Health,
    shutdown: &mut Pin<&mut F>,
) -> Result<SessionEnd, WorkerError> {
    let consume = conn.create_channel().await.map_err(BrokerError::from)?;
    let queues = config.consumed_queues();
    broker::declare_topology(&consume, &config.declared_queues(), config.queue_kinds()).await?;
    let publisher = Publisher::new(conn.create_channel().await.map_err(BrokerError::from)?, config.eta_window).await?;
    let prefetch = config.prefetch();
    consume.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(BrokerError::from)?;
    let (feed, mut rx) = mpsc::channel(usize::from(prefetch.max(1)));
    let pause = health.pause().clone();
    // A worker paused before this session began stays so until the probe resumes it.
    let mut consumers = match pause.is_paused() {
        true => None,
        false => Some(Consumers::start(config, &queues, &consume, &feed).await?),
    };
    let mut pausing = pause.watch();
    // Queues whose consumer the broker cancelled, to subscribe again.
    let mut pending: Vec<String> = Vec::new();
    let mut retry_at = tokio::time::Instant::now();
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
                tokio::time::sleep(events::HEARTBEAT).await;
                events.worker("worker-heartbeat").await;
            }
        })
    });
    let inflight = Arc::new(InFlight::new(&config.hostname));
    let report = plugins_report(plugins.clone());
    let mailbox = match pidbox::start(conn, config, prefetch, events.clone(), inflight.clone(), report).await {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::error!(error = %e, "no remote control mailbox; celery inspect will not see this worker");
            None
        }
    };
    tracing::info!(queues = ?queues, concurrency = config.concurrency, hostname = %config.hostname, "consuming");

    let sender = Sender::new(&config.hostname);
    let sweeping = config.sweep_interval.map(|every| {
        let (db, publisher, sender, settings) = (db.clone(), publisher.clone(), sender.clone(), config.sweep);
        tokio::spawn(async move { sweeper::periodically(&db, &publisher, &sender, settings, every).await })
    });
    let ctx = Arc::new(Ctx {
        store: db.clone(),
        publisher,
        plugins: plugins.clone(),
        config: config.clone(),
        sender,
        events: events.clone(),
        inflight,
        pause: pause.clone(),
    });
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
                    let channel = consume.clone();
                    tasks.spawn(delivery::handle(ctx.clone(), channel, delivery, permits.clone(), stop_rx.clone()));
                }
                Some(Err(e)) => break SessionEnd::Lost(e.to_string()),
                // The session holds a sender: the channel never closes while it runs.
                None => break SessionEnd::Lost("the delivery feed closed".into()),
            },
            queue = async { consumers.as_mut().expect("guarded").ended().await }, if consumers.is_some() => {
                if !consume.status().connected() {
                    break SessionEnd::Lost("the consuming channel closed".into());
                }
                metrics::counter!(meters::CANCELLATIONS, "queue" => queue.clone()).increment(1);
                tracing::warn!(%queue, "the broker cancelled a consumer; the others keep running");
                pending.push(queue);
                retry_at = tokio::time::Instant::now();
            }
            () = tokio::time::sleep_until(retry_at), if !pending.is_empty() && consumers.is_some() => {
                let queues = std::mem::take(&mut pending);
                let running = consumers.as_mut().expect("guarded");
                match running.resubscribe(conn, config, &consume, &feed, queues).await {
                    Ok(refused) => pending = refused,
                    Err(e) => break SessionEnd::Lost(e.to_string()),
                }
                retry_at = tokio::time::Instant::now() + RESUBSCRIBE_EVERY;
            }
            Ok(()) = pausing.changed() => {
                let paused = pausing.borrow_and_update().is_some();
                consumers = match (paused, consumers.take()) {
                    (true, Some(running)) => {
                        running.cancel(&consume).await;
                        tracing::warn!("consumers cancelled while paused");
                        None
                    }
                    (false, None) => match Consumers::start(config, &queues, &consume, &feed).await {
                        // Every queue is subscribed again, cancelled ones included.
                        Ok(started) => {
                            pending.clear();
                            tracing::info!(queues = ?queues, "consuming again");
                            Some(started)
                        }
                        Err(e) => break SessionEnd::Lost(e.to_string()),
                    },
                    (_, unchanged) => unchanged,
                };
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "delivery handler panicked; its message will be redelivered");
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    drop(rx);
    for task in [sweeping, mailbox, heartbeat].into_iter().flatten() {
        task.abort();
    }
    match end {
        SessionEnd::Shutdown => {
            // Stop taking deliveries; those not yet running stay unacked and go back.
            if let Some(running) = consumers.take() {
                running.cancel(&consume).await;
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

/// The plugins as `celery inspect registered` and `stats` show them.
fn plugins_report(plugins: Plugins) -> pidbox::PluginsReport {
    Arc::new(move || {
        let versions = plugins.versions();
        let registered = versions
            .iter()
            .map(|(version, runs)| match runs {
                Runs::Rust(type_name) => format!("plugin {version} (rust: {type_name})"),
                Runs::Python(class) => format!("plugin {version} (python: {class})"),
            })
            .collect();
        let python = plugins.python().map(|pool| {
            let ready = pool.ready();
            serde_json::json!({
                "interpreter": pool.settings().interpreter.display().to_string(),
                "processes": pool.settings().workers,
                "idle-pids": pool.idle_pids(),
                "python": ready.python,
                "bk-plugin-framework": ready.framework,
                "pydantic": ready.pydantic,
            })
        });
        pidbox::PluginsView { registered, stats: serde_json::json!({"versions": versions.len(), "python": python}) }
    })
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
