//! Why a task's steps end before their last one, as one type. Every step
//! returns `Result<_, Stop>` and uses `?`; [`Task::finish`] turns a stop
//! into how the delivery was handled, in one exhaustive `match`, so a poll
//! has one error boundary however many steps it has.

use celerity_db::{Attempt, DbError};

use super::{Handled, Store, Task};
use crate::broker::{BrokerError, Publish};
use crate::telemetry::spans;

/// Why a task's steps stopped early.
#[derive(Debug)]
pub enum Stop {
    /// Nothing more to do: the outcome is known (no such schedule; a
    /// callback re-queued while another worker holds the lock).
    Done(Handled),
    /// Nothing more to do once the `scheduling` lock is released, if this
    /// message holds it (stale, parked, already final, not in CALLBACK).
    Release(Handled),
    /// This message's own earlier try had landed the poll that made this
    /// invoke_count; its next poll may never have been published.
    Landed(i32, Attempt),
    /// The plugin host died during the step, as this says.
    HostDied(String),
    /// Something that may work later failed, as this says: retry after the
    /// backoff, or FAIL when the retries are spent.
    Retry(RetryCause, String),
    /// The schedule fails with this `err`.
    Fail(String),
    /// The database said no; its class decides.
    Db(DbError),
    /// A publish was not confirmed: the delivery is handed back.
    Broker(BrokerError),
}

impl From<DbError> for Stop {
    fn from(e: DbError) -> Self {
        Stop::Db(e)
    }
}

impl From<BrokerError> for Stop {
    fn from(e: BrokerError) -> Self {
        Stop::Broker(e)
    }
}

/// What failed, for a task retried with a countdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// A transient database error.
    Database,
    /// No plugin host could take the step.
    PluginHost,
}

/// How a [`RetryCause`] reads in metrics, logs and the FAIL it ends in.
pub struct CauseText {
    /// The `class` label of `celerity_retries_total` and `last_error_class`
    /// of the retry bookkeeping.
    pub label: &'static str,
    /// The log line of a retry published.
    pub retried: &'static str,
    /// What a FAIL after the last retry says kept failing.
    pub failures: &'static str,
}

impl RetryCause {
    /// Every cause, for the metric families shown before the first retry.
    pub const ALL: [RetryCause; 2] = [RetryCause::Database, RetryCause::PluginHost];

    /// How this cause reads, decided once.
    pub fn text(self) -> CauseText {
        match self {
            RetryCause::Database => CauseText {
                label: "transient",
                retried: "transient database error; retry published",
                failures: "database errors",
            },
            RetryCause::PluginHost => CauseText {
                label: "plugin host",
                retried: "transient failure; retry published",
                failures: "plugin host failures",
            },
        }
    }
}

impl<S: Store, P: Publish> Task<'_, S, P> {
    /// How the steps of this task on `trace_id` ended, settled: the one
    /// place a stop becomes an outcome. `holds_lock` says whether this
    /// message holds the schedule's `scheduling` lock, which an early end
    /// releases.
    pub(super) async fn finish(
        &self,
        trace_id: &str,
        holds_lock: bool,
        steps: Result<Handled, Stop>,
    ) -> Result<Handled, BrokerError> {
        let stop = match steps {
            Ok(handled) => return Ok(handled),
            Err(Stop::Release(handled)) if holds_lock => match self.ctx.store.unlock(trace_id, &self.msg.id).await {
                Ok(()) => return Ok(handled),
                Err(e) => Stop::Db(e),
            },
            Err(stop) => stop,
        };
        match stop {
            Stop::Done(handled) | Stop::Release(handled) => Ok(handled),
            Stop::Landed(invoke_count, landed) => self.republish_next_poll(trace_id, invoke_count, &landed).await,
            Stop::HostDied(status) => {
                spans::record_error("plugin host died", &status);
                self.after_host_death(trace_id, status).await
            }
            Stop::Retry(cause, err) => {
                spans::record_error(cause.text().label, &err);
                self.retry_later(Some(trace_id), cause, err).await
            }
            Stop::Fail(err) => {
                spans::record_error("fail", &err);
                self.fail_schedule(trace_id, err).await
            }
            Stop::Db(e) => {
                spans::record_error(e.class().as_str(), &e.to_string());
                self.on_db_error(Some(trace_id), e).await
            }
            Stop::Broker(e) => {
                spans::record_error("broker", &e.to_string());
                Err(e)
            }
        }
    }
}
