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
//!
//! A schedule in CALLBACK whose `scheduling` lock a callback has held with
//! no sign of life for longer than the margin has lost every copy of that
//! callback (a retry the broker dropped on its way to a queue whose node
//! was out): the sweeper sends the callback again, from the lock's record,
//! under its own task id, so it holds the lock and runs the step.
//!
//! It also sends the parked messages of resumed schedules that a resume
//! released and did not send (it died, or the broker refused): a schedule
//! is never left waiting on a message in a table.

use std::time::Duration;

use broker_proto::topology;
use celerity_db::stranded::{self, Stranded};
use celerity_db::{Db, DbError, operator};
use thiserror::Error;

use crate::broker::{BrokerError, Publish, Publisher};
use crate::config::SweepSettings;
use crate::operator::resend;
use crate::tasks::messages::Sender;

/// Schedules with no sign of life since this time are stranded.
fn cutoff(settings: SweepSettings, db: &Db) -> chrono::NaiveDateTime {
    db.now() - chrono::Duration::from_std(settings.margin).unwrap_or(chrono::Duration::MAX)
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
            if !stranded::try_lock(conn, lock_wait.as_secs() as u32)? {
                return Ok(Ok(SweepOutcome::Busy));
            }
            let round = (|| {
                let mut found = stranded::stranded(conn, cutoff(settings, &db), settings.batch)?;
                for schedule in &found {
                    let msg = sender.schedule(&schedule.trace_id, schedule.invoke_count, 0);
                    if let Err(e) = runtime.block_on(publisher.publish_task_to_queue(topology::SCHEDULE_QUEUE.name, &msg)) {
                        return Ok(Err(e));
                    }
                    stranded::record(conn, schedule, db.now())?;
                    tracing::warn!(trace_id = %schedule.trace_id, invoke_count = schedule.invoke_count, "stranded schedule re-enqueued");
                }
                // Callbacks holding a lock with every copy gone: sent again
                // under their own id, which holds the lock (see tasks::callback).
                for held in stranded::held_callbacks(conn, cutoff(settings, &db), settings.batch)? {
                    let msg = sender.callback_again(&held.callback());
                    if let Err(e) = runtime.block_on(publisher.publish_task_to_queue(topology::CALLBACK_QUEUE.name, &msg)) {
                        return Ok(Err(e));
                    }
                    stranded::record(conn, &held.schedule, db.now())?;
                    tracing::warn!(trace_id = %held.schedule.trace_id, task_id = %held.task_id, "callback holding the scheduling lock sent again");
                    found.push(held.schedule);
                }
                // Parked messages a resume released and did not send (it
                // died): sent as a resume sends them, under the lock so that
                // two sweepers do not both send them.
                let released = operator::released_before(conn, cutoff(settings, &db), settings.batch)?;
                if !released.is_empty() {
                    let sent = runtime.block_on(resend::resend(&db, &publisher, &released));
                    tracing::warn!(sent = sent.sent, "a resumed schedule's parked messages sent again");
                    if let Some(problem) = sent.problem() {
                        tracing::warn!(%problem, "the next round tries again");
                    }
                }
                Ok(Ok(SweepOutcome::Swept(found)))
            })();
            stranded::unlock(conn)?;
            round
        })
    })
    .await
    .unwrap_or_else(|join| panic!("sweeper thread panicked: {join}"))?
    .map_err(SweepError::from)
}

/// The schedules a round would re-enqueue now (and those whose callback it
/// would send again), without re-enqueueing them.
pub async fn stranded_now(db: &Db, settings: SweepSettings) -> Result<Vec<Stranded>, DbError> {
    let cutoff = cutoff(settings, db);
    db.call(move |c| {
        let mut found = stranded::stranded(c, cutoff, settings.batch)?;
        found.extend(stranded::held_callbacks(c, cutoff, settings.batch)?.into_iter().map(|h| h.schedule));
        Ok(found)
    })
    .await
}

/// A worker's sweeper: a round every `every`, skipped when another worker
/// holds the lock. Errors are logged; the next round tries again.
pub async fn periodically(db: &Db, publisher: &Publisher, sender: &Sender, settings: SweepSettings, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match sweep_once(db, publisher, sender, settings, Duration::ZERO).await {
            Ok(SweepOutcome::Busy) => tracing::debug!("another worker is sweeping"),
            Ok(SweepOutcome::Swept(done)) if !done.is_empty() => {
                tracing::warn!(count = done.len(), "sweep re-enqueued stranded schedules");
            }
            Ok(SweepOutcome::Swept(_)) => tracing::debug!("sweep found nothing stranded"),
            Err(e) => tracing::warn!(error = %e, "sweep round failed; the next one tries again"),
        }
    }
}
