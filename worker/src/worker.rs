//! `run(config, shutdown)`: consume until `shutdown` resolves, then stop
//! taking deliveries, let in-flight polls finish within the grace period,
//! hand the rest back and close.

use std::future::Future;
use std::sync::Arc;

use celerity_db::{Db, DbError, repo};
use futures_lite::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use thiserror::Error;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::broker::{self, BrokerError, Publisher};
use crate::config::WorkerConfig;
use crate::context::Ctx;
use crate::dispatch;
use crate::plugin::Registry;

/// Why the worker stopped other than by a shutdown signal.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The broker failed (unreachable at start-up, topology refused, connection lost).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The database configuration cannot work.
    #[error(transparent)]
    Db(#[from] DbError),
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
    // A database that is down at start-up is a transient condition: polls retry.
    if let Err(e) = db.call(repo::ping).await {
        tracing::warn!(error = %e, "database not reachable at start-up; polls will retry until it is");
    }
    let conn = broker::connect(&config.broker_url, config.broker_wait).await?;
    let consume = conn.create_channel().await.map_err(BrokerError::from)?;
    broker::declare_topology(&consume, &config.queues, config.queue_type).await?;
    let publisher = Publisher::new(conn.create_channel().await.map_err(BrokerError::from)?, config.eta_window).await?;
    // Concurrency for running polls, plus room for deliveries waiting on their eta.
    let prefetch = u16::try_from(config.concurrency).unwrap_or(u16::MAX).saturating_add(config.eta_hold);
    consume.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(BrokerError::from)?;

    let (tx, mut rx) = mpsc::channel(usize::from(prefetch.max(1)));
    let mut tags = Vec::new();
    for queue in &config.queues {
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
    drop(tx);
    tracing::info!(queues = ?config.queues, concurrency = config.concurrency, hostname = %config.hostname, "worker started");

    let grace = config.shutdown_grace;
    let ctx = Arc::new(Ctx {
        db,
        publisher,
        registry,
        origin: format!("{}@{}", std::process::id(), config.hostname),
        reply_to: uuid::Uuid::new_v4().to_string(),
        config,
    });
    let permits = Arc::new(Semaphore::new(ctx.config.concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut outcome = Ok(());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutdown requested");
                break;
            }
            delivery = rx.recv() => match delivery {
                Some(Ok(delivery)) => {
                    tasks.spawn(dispatch::handle(ctx.clone(), delivery, permits.clone(), stop_rx.clone()));
                }
                Some(Err(e)) => {
                    outcome = Err(WorkerError::Broker(e.into()));
                    break;
                }
                None => {
                    outcome = Err(WorkerError::Broker(BrokerError::Nacked("consumers: the broker closed them".into())));
                    break;
                }
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "delivery handler panicked; its message will be redelivered");
                }
            }
        }
    }

    // Stop taking deliveries; those not yet running stay unacked and go back.
    for tag in &tags {
        let _ = consume.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
    }
    let _ = stop_tx.send(true);
    drop(rx);
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
    let _ = consume.close(200, "worker stopping".into()).await;
    let _ = conn.close(200, "worker stopping".into()).await;
    tracing::info!("worker stopped");
    outcome
}
