//! The daily `delete_expired_schedule`, sent by the workers themselves so a
//! plugin app needs no `celery beat`: the framework's beat sends it to
//! `schedule_delete` every day at 00:00 UTC, and so do the workers, once a
//! day for all of them on one database ([`celerity_db::daily`] holds the
//! last day sent, claimed in a transaction that commits after the broker
//! confirmed the message). A worker checks at start and then at every UTC
//! midnight, and at least every [`CHECK_EVERY`]: a day whose midnight no
//! worker saw (all were down) is sent by the first worker up that day.

use std::time::Duration;

use broker_proto::topology;
use celerity_db::Db;
use celerity_db::daily::{self, NotSent};
use chrono::{DateTime, NaiveDate, Utc};

use crate::broker::{BrokerError, Publish};
use crate::tasks::messages::Sender;

/// Longest wait between two checks, so a clock step or a failed send is
/// caught up within minutes.
pub const CHECK_EVERY: Duration = Duration::from_secs(300);

/// How one check went.
#[derive(Debug, Clone, PartialEq)]
pub enum Daily {
    /// This worker sent the day's message.
    Sent(NaiveDate),
    /// The day's message was sent already (by any worker, or the beat this replaced).
    AlreadySent(NaiveDate),
}

/// Sends the day's `delete_expired_schedule` if no worker has: the day is
/// the UTC date of `now`.
pub async fn check<P: Publish + Clone + Send + Sync + 'static>(
    db: &Db,
    publisher: &P,
    sender: &Sender,
    now: DateTime<Utc>,
) -> Result<Daily, String> {
    let day = now.date_naive();
    let (db, publisher, message, by) =
        (db.clone(), publisher.clone(), sender.task(topology::DELETE_TASK, &[], 0), sender.origin.clone());
    let runtime = tokio::runtime::Handle::current();
    let at = db.now();
    // The claim's row lock is the session's: claim, publish and commit run on
    // one connection, on a blocking thread that waits for the confirm.
    let sent = tokio::task::spawn_blocking(move || {
        db.blocking(|conn| {
            let send = || runtime.block_on(publisher.publish_task_to_queue(topology::DELETE_QUEUE.name, &message));
            Ok(daily::send_once::<BrokerError>(conn, topology::DELETE_TASK, day, at, &by, send))
        })
    })
    .await
    .unwrap_or_else(|join| panic!("daily delete thread panicked: {join}"));
    match sent {
        Ok(Ok(true)) => Ok(Daily::Sent(day)),
        Ok(Ok(false)) => Ok(Daily::AlreadySent(day)),
        Ok(Err(NotSent::Db(e))) | Err(e) => Err(format!("database: {e}")),
        Ok(Err(NotSent::Send(e))) => Err(format!("the broker did not take the message: {e}")),
    }
}

/// How long to wait after `now` before the next check: until the next UTC
/// midnight, or [`CHECK_EVERY`] if that comes first.
pub fn next_check(now: DateTime<Utc>) -> Duration {
    let midnight = (now.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    (midnight - now).to_std().unwrap_or(Duration::ZERO).min(CHECK_EVERY)
}

/// A worker's daily sender: a check now, then one at each UTC midnight (and
/// every [`CHECK_EVERY`]). Errors are logged; the next check tries again.
pub async fn periodically<P: Publish + Clone + Send + Sync + 'static>(db: &Db, publisher: &P, sender: &Sender) {
    loop {
        match check(db, publisher, sender, Utc::now()).await {
            Ok(Daily::Sent(day)) => tracing::info!(%day, "daily delete_expired_schedule sent to schedule_delete"),
            Ok(Daily::AlreadySent(day)) => tracing::debug!(%day, "daily delete_expired_schedule already sent"),
            Err(e) => tracing::warn!(error = %e, "daily delete_expired_schedule not sent; the next check tries again"),
        }
        // A second past midnight, so the check lands on the new day.
        tokio::time::sleep(next_check(Utc::now()) + Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn checks_land_on_each_midnight_and_every_few_minutes_between() {
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 12, 3, h, m, s).unwrap();
        assert_eq!(next_check(at(23, 59, 0)), Duration::from_secs(60));
        assert_eq!(next_check(at(23, 59, 59)), Duration::from_secs(1));
        assert_eq!(next_check(at(12, 0, 0)), CHECK_EVERY);
        assert_eq!(next_check(at(0, 0, 0)), CHECK_EVERY);
    }
}
