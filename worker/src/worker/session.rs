//! One session with the broker: declare the topology and start the
//! consumers ([`super::subscriptions`], which waits out what the broker
//! cannot serve yet), the events, the mailbox, the sweeper and the daily
//! delete, hand each
//! delivery to the session's [`crate::delivery::Handler`], cancel and restart the consumers
//! as the worker pauses and resumes, and stop it all on shutdown or when the
//! connection breaks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use celerity_db::Db;
use lapin::Connection;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::subscriptions::{Stop, Subscriptions};
use super::{WorkerError, daily, sweeper};
use crate::broker::{BrokerError, Patient, Publisher};
use crate::config::WorkerConfig;
use crate::control::endpoint::Health;
use crate::control::events::{self, Events};
use crate::control::inflight::InFlight;
use crate::control::{pidbox, queue_stats};
use crate::delivery::{self, Handler};
use crate::plugins::{Plugins, Runs};
use crate::tasks::Ctx;
use crate::tasks::messages::Sender;

/// How a session with the broker ended.
pub(super) enum SessionEnd {
    /// Shutdown was requested and done.
    Shutdown,
    /// The connection broke; reconnect.
    Lost(String),
}

/// Consumes on one connection until shutdown or until the connection
/// breaks. `running` is false until a session of this worker has declared
/// and consumed what the broker could serve; until then a refusal that can
/// never pass stops the worker (bad configuration), afterwards it waits.
pub(super) async fn session<F: Future<Output = ()>>(
    config: &WorkerConfig,
    db: &Db,
    plugins: &Plugins,
    conn: &Connection,
    health: &Arc<Health>,
    running: &mut bool,
    shutdown: &mut Pin<&mut F>,
) -> Result<SessionEnd, WorkerError> {
    let publisher = Publisher::new(conn.create_channel().await.map_err(BrokerError::from)?, config.eta_window)
        .await?
        .with_countdowns(if config.countdowns_queued() { config.countdown_window } else { Duration::ZERO });
    let prefetch = config.prefetch();
    // As deep as one consumer's prefetch; a full feed makes the consumers wait.
    let (feed, mut rx) = mpsc::channel(usize::from(prefetch.max(1)));
    let pause = health.pause().clone();
    // A worker paused before this session began stays so until the probe resumes it.
    let mut subscriptions = Subscriptions::new(config, feed, health.clone(), pause.is_paused(), *running);
    match subscriptions.try_all(conn).await {
        Ok(()) => *running = true,
        Err(Stop::Never(e)) => return Err(e.into()),
        Err(Stop::Lost(reason)) => return Ok(SessionEnd::Lost(reason)),
    }
    // Healthy from here: everything the broker could serve is consumed.
    health.set_connection(Some(conn.status().clone()));
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
    tracing::info!(queues = ?config.consumed_queues(), concurrency = config.concurrency, hostname = %config.hostname, "consuming");

    let sender = Sender::new(&config.hostname);
    let sweeping = config.sweep_interval.map(|every| {
        let (db, publisher, sender, settings) = (db.clone(), publisher.clone(), sender.clone(), config.sweep);
        tokio::spawn(async move { sweeper::periodically(&db, &publisher, &sender, settings, every).await })
    });
    let daily = config.daily_delete.then(|| {
        let (db, publisher, sender) = (db.clone(), publisher.clone(), sender.clone());
        tokio::spawn(async move { daily::periodically(&db, &publisher, &sender).await })
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        store: db.clone(),
        publisher: Patient::new(publisher, stop_rx.clone()),
        plugins: plugins.clone(),
        config: config.clone(),
        sender,
        events: events.clone(),
        inflight,
        pause: pause.clone(),
    });
    let handler = Arc::new(Handler::new(ctx, config.concurrency, stop_rx.clone()));
    let mut tasks = JoinSet::new();
    // What the broker could not serve is tried again beside the deliveries,
    // so a queue that does not answer never holds up the others.
    let mut keeping = Box::pin(subscriptions.keep(conn, &pause));
    // The queues' counts for /metrics, on this session's connection.
    let mut counting: Pin<Box<dyn Future<Output = ()> + Send + '_>> = match config.queue_stats_interval {
        Some(every) => {
            let management =
                queue_stats::Management::for_broker(&config.broker_url, config.broker_management_url.as_deref());
            Box::pin(queue_stats::periodically(conn, management, config.consumed_queues(), every))
        }
        None => Box::pin(std::future::pending()),
    };
    let end = loop {
        tokio::select! {
            _ = shutdown.as_mut() => {
                tracing::info!("shutdown requested");
                break SessionEnd::Shutdown;
            }
            delivery = rx.recv() => match delivery {
                Some((channel, delivery)) => {
                    tasks.spawn(delivery::handle(handler.clone(), channel, delivery));
                }
                // The consumers hold a sender: the channel never closes while they run.
                None => break SessionEnd::Lost("the delivery feed closed".into()),
            },
            () = &mut counting => {}
            stop = &mut keeping => match stop {
                Stop::Lost(reason) => break SessionEnd::Lost(reason),
                Stop::Never(e) => {
                    tasks.abort_all();
                    return Err(e.into());
                }
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "delivery handler panicked; its message will be redelivered");
                }
            }
        }
    };
    drop(keeping);
    drop(counting);
    let _ = stop_tx.send(true);
    drop(rx);
    for task in [sweeping, daily, mailbox, heartbeat].into_iter().flatten() {
        task.abort();
    }
    match end {
        SessionEnd::Shutdown => {
            // Stop taking deliveries; those not yet running stay unacked and go back.
            subscriptions.cancel().await;
            drain(&mut tasks, config.shutdown_grace).await;
            if let Some(events) = &events {
                events.worker("worker-offline").await;
            }
            subscriptions.close().await;
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
