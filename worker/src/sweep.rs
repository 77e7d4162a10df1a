//! The sweeper: finds schedules in POLL with no sign of life for longer than
//! a margin (a producer that died between its insert and its publish, a
//! message purged by an operator) and re-enqueues their next poll.
//!
//! Safe against a message that was only late: the re-enqueued message
//! carries the invoke_count it expects, so whichever of the two runs first
//! polls and the other finds the row moved on and is dropped (see
//! `tasks::poll`). One sweeper runs at a time: each round takes the MySQL
//! named lock `celerity.sweeper`, and a worker that finds it held skips the
//! round. The lock belongs to the database session, so a sweeper that dies
//! frees it.

use std::time::Duration;

use celerity_db::sweep::{self, Stranded};
use celerity_db::{Db, DbError};
use thiserror::Error;

use crate::broker::{BrokerError, Publisher};
use crate::tasks::schedule_message;
use broker_proto::topology;

/// When the sweeper runs and what it counts as stranded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepSettings {
    /// A schedule is stranded when its last sign of life is older than this.
    pub margin: Duration,
    /// Most schedules re-enqueued per round.
    pub batch: i64,
}

impl SweepSettings {
    /// Schedules with no sign of life since this time are stranded.
    fn cutoff(&self, db: &Db) -> chrono::NaiveDateTime {
        db.now() - chrono::Duration::from_std(self.margin).unwrap_or(chrono::Duration::MAX)
    }
}

/// How a round went.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepOutcome {
    /// Another sweeper held the lock.
    Busy,
    /// These schedules were re-enqueued.
    Swept(Vec<Stranded>),
}

/// Why a round did not finish.
#[derive(Debug, Error)]
pub enum SweepError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Who the re-enqueued messages say sent them.
#[derive(Debug, Clone)]
pub struct Sender {
    /// `origin`, `pid@hostname`.
    pub origin: String,
    /// `reply_to`.
    pub reply_to: String,
}

/// One round: take the lock (waiting up to `lock_wait`), find up to a batch
/// of stranded schedules, publish each one's next poll with confirms, then
/// record the sweep. A crash before the record only means the schedule is
/// swept again a margin later, which the expected invoke_count makes harmless.
pub async fn sweep_once(
    db: &Db,
    publisher: &Publisher,
    sender: &Sender,
    settings: SweepSettings,
    lock_wait: Duration,
) -> Result<SweepOutcome, SweepError> {
    let (db, publisher, sender) = (db.clone(), publisher.clone(), sender.clone());
    let runtime = tokio::runtime::Handle::current();
    // The named lock is the session's, so the whole round runs on one
    // connection, on a blocking thread that waits for the publishes.
    tokio::task::spawn_blocking(move || {
        db.blocking(|conn| {
            if !sweep::try_lock(conn, lock_wait.as_secs() as u32)? {
                return Ok(Ok(SweepOutcome::Busy));
            }
            let round = (|| {
                let stranded = sweep::stranded(conn, settings.cutoff(&db), settings.batch)?;
                for schedule in &stranded {
                    let msg =
                        schedule_message(&sender.origin, &sender.reply_to, &schedule.trace_id, schedule.invoke_count, 0);
                    if let Err(e) = runtime.block_on(publisher.publish_task_to_queue(topology::SCHEDULE_QUEUE.name, &msg)) {
                        return Ok(Err(e));
                    }
                    sweep::record(conn, schedule, db.now())?;
                    tracing::warn!(trace_id = %schedule.trace_id, invoke_count = schedule.invoke_count, "stranded schedule re-enqueued");
                }
                Ok(Ok(SweepOutcome::Swept(stranded)))
            })();
            sweep::unlock(conn)?;
            round
        })
    })
    .await
    .unwrap_or_else(|join| panic!("sweeper thread panicked: {join}"))?
    .map_err(SweepError::from)
}

/// The schedules a round would re-enqueue now, without re-enqueueing them.
pub async fn stranded_now(db: &Db, settings: SweepSettings) -> Result<Vec<Stranded>, DbError> {
    let cutoff = settings.cutoff(db);
    db.call(move |c| sweep::stranded(c, cutoff, settings.batch)).await
}

/// A worker's sweeper: a round every `every`, skipped when another worker
/// holds the lock. Errors are logged; the next round tries again.
pub(crate) async fn periodically(ctx: std::sync::Arc<crate::context::Ctx>, every: Duration) {
    let sender = Sender { origin: ctx.origin.clone(), reply_to: ctx.reply_to.clone() };
    loop {
        tokio::time::sleep(every).await;
        match sweep_once(&ctx.db, &ctx.publisher, &sender, ctx.config.sweep, Duration::ZERO).await {
            Ok(SweepOutcome::Busy) => tracing::debug!("another worker is sweeping"),
            Ok(SweepOutcome::Swept(done)) if !done.is_empty() => {
                tracing::warn!(count = done.len(), "sweep re-enqueued stranded schedules");
            }
            Ok(SweepOutcome::Swept(_)) => tracing::debug!("sweep found nothing stranded"),
            Err(e) => tracing::warn!(error = %e, "sweep round failed; the next one tries again"),
        }
    }
}
