//! A database error at any step of a task: a transient one publishes the
//! message again after a backoff countdown (Celery's retry), a fatal one
//! fails the schedule, and when retries are spent the schedule fails. A FAIL
//! the database cannot take yet stays in flight until it can.

use broker_proto::{eta_after, header};
use celerity_db::{DbError, ErrorClass, RetryState};
use chrono::Utc;

use super::headers::{DELIVERIES_HEADER, PENDING_FAIL_HEADER, without};
use super::{Handled, Store, Task};
use crate::broker::{BrokerError, Publish};
use crate::control::meters;

impl<S: Store, P: Publish> Task<'_, S, P> {
    /// Transient errors are retried, fatal ones fail the schedule; one
    /// exhaustive match decides.
    pub async fn on_db_error(&self, trace_id: Option<&str>, err: DbError) -> Result<Handled, BrokerError> {
        match (err.class(), trace_id) {
            (ErrorClass::Transient, _) => self.retry_later(trace_id, err.class().as_str(), err.to_string()).await,
            (ErrorClass::Fatal, Some(trace_id)) => {
                tracing::error!(error = %err, "fatal database error; failing the schedule");
                self.fail_schedule(trace_id, format!("database error: {err}")).await
            }
            (ErrorClass::Fatal, None) => {
                tracing::error!(error = %err, "fatal database error");
                Ok(Handled::Fatal)
            }
        }
    }

    /// Publishes the message again the Celery way (same id, `retries + 1`,
    /// eta = now + the backoff's countdown) to the queue it came from, waiting
    /// in the broker's delay topology, then records the retry bookkeeping; or
    /// fails the schedule when the retries are spent. `class` says what
    /// failed (`transient` for the database, `plugin host`) and `err` how.
    pub(super) async fn retry_later(
        &self,
        trace_id: Option<&str>,
        class: &'static str,
        err: String,
    ) -> Result<Handled, BrokerError> {
        let ctx = self.ctx;
        let Some(countdown) = ctx.config.backoff.countdown(self.msg.retries) else {
            tracing::error!(error = %err, retries = self.msg.retries, "retries exhausted");
            return match trace_id {
                Some(trace_id) => {
                    let text = format!(
                        "gave up after {} retries of transient {}; last error: {err}",
                        self.msg.retries,
                        if class == ErrorClass::Transient.as_str() {
                            "database errors"
                        } else {
                            "plugin host failures"
                        }
                    );
                    self.fail_schedule(trace_id, text).await
                }
                None => Ok(Handled::GaveUp),
            };
        };
        let mut retried = self
            .msg
            .retried(eta_after(Utc::now(), chrono::Duration::from_std(countdown).unwrap_or(chrono::Duration::MAX)));
        // A retry is a fresh delivery, not a redelivery of a crashed one.
        retried.extra_headers = without(&retried.extra_headers, DELIVERIES_HEADER);
        ctx.publisher.publish_task_to_queue(&self.origin.queue, &retried).await?;
        if class == ErrorClass::Transient.as_str() {
            tracing::warn!(error = %err, retries = retried.retries, countdown = ?countdown, "transient database error; retry published");
        } else {
            tracing::warn!(class, error = %err, retries = retried.retries, countdown = ?countdown, "transient failure; retry published");
        }
        metrics::counter!(meters::RETRIES, "class" => class).increment(1);
        if let Some(trace_id) = trace_id {
            // Bookkeeping for operators; the database may well still be down.
            let at = ctx.store.now();
            let state = RetryState {
                trace_id: trace_id.to_owned(),
                retries: retried.retries as i32,
                first_failure_at: at,
                last_failure_at: at,
                next_retry_at: chrono::Duration::from_std(countdown).ok().map(|d| at + d),
                last_error_class: class.to_owned(),
                last_error: err,
            };
            if let Err(e) = ctx.store.record_retry(state).await {
                tracing::debug!(error = %e, "retry bookkeeping not written");
            }
        }
        Ok(Handled::Retried)
    }

    /// Writes FAIL with `err`; if the database cannot take it now, keeps a
    /// message in flight that will write it later (see the module docs).
    pub async fn fail_schedule(&self, trace_id: &str, err: String) -> Result<Handled, BrokerError> {
        let ctx = self.ctx;
        match ctx.store.fail(trace_id, &err, ctx.store.now()).await {
            Ok(applied) => {
                tracing::info!(applied, %err, "schedule failed");
                Ok(Handled::Failed)
            }
            Err(e) if e.is_transient() => {
                let mut pending = self.msg.clone();
                // A fresh message: the deliveries of this one are not its own.
                pending.extra_headers = without(&pending.extra_headers, DELIVERIES_HEADER);
                pending.extra_headers.insert(PENDING_FAIL_HEADER.into(), header::text(&err));
                let countdown = chrono::Duration::from_std(ctx.config.backoff.max).unwrap_or(chrono::Duration::MAX);
                pending.eta = eta_after(Utc::now(), countdown);
                ctx.publisher.publish_task_to_queue(&self.origin.queue, &pending).await?;
                tracing::warn!(error = %e, "FAIL not written yet; it stays in flight until the database takes it");
                Ok(Handled::FailPending)
            }
            Err(e) => {
                tracing::error!(error = %e, %err, "FAIL could not be written");
                Ok(Handled::FailNotWritten)
            }
        }
    }
}
