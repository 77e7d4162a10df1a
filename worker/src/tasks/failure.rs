//! A database error at any step of a task, by whose fault it is: a
//! transient one publishes the message again after a backoff countdown
//! (Celery's retry), and when retries are spent the schedule fails; an
//! environment fault pauses the worker and sets the message aside unchanged;
//! a schedule-fatal one fails the schedule. A FAIL the database cannot take
//! yet stays in flight until it can, whatever the reason.

use broker_proto::{eta_after, header};
use celerity_db::{DbError, ErrorClass, MysqlCode, RetryState};
use chrono::Utc;

use super::headers::PENDING_FAIL_HEADER;
use super::stop::RetryCause;
use super::{Handled, Store, Task};
use crate::broker::{BrokerError, Publish};
use crate::control::pause::Fault;
use crate::meters;

impl<S: Store, P: Publish> Task<'_, S, P> {
    /// Transient errors are retried, environment faults pause the worker,
    /// schedule-fatal ones fail the schedule; one exhaustive match decides.
    pub(super) async fn on_db_error(&self, trace_id: Option<&str>, err: DbError) -> Result<Handled, BrokerError> {
        let class = err.class();
        let code = err.mysql_code();
        let number = code.and_then(|c| c.number()).map_or_else(|| "none".to_owned(), |n| n.to_string());
        metrics::counter!(meters::DB_ERRORS, "class" => class.as_str(), "code" => number.clone()).increment(1);
        match (class, trace_id) {
            (ErrorClass::Transient, _) => {
                if let Some(code @ (MysqlCode::Other(_) | MysqlCode::Unrecognised)) = code {
                    // Retried as the framework would; logged so it can be classified.
                    tracing::warn!(code = number, error = %err, "database error of no known class ({code}); retried as transient");
                }
                self.retry_later(trace_id, RetryCause::Database, err.to_string()).await
            }
            (ErrorClass::Environment, _) => {
                self.ctx.pause.trip(Fault::database(&err));
                self.set_aside().await
            }
            (ErrorClass::ScheduleFatal, Some(trace_id)) => {
                tracing::error!(error = %err, "database error of this schedule's own; failing it");
                self.fail_schedule(trace_id, format!("database error: {err}")).await
            }
            (ErrorClass::ScheduleFatal, None) => {
                tracing::error!(error = %err, "database error of this task's own");
                Ok(Handled::Fatal)
            }
        }
    }

    /// Sends the message back to the queue it came from as it is (its
    /// retries unspent, no delivery counted), for a worker that is not
    /// paused or for this one when it resumes; then it can be acked.
    pub async fn set_aside(&self) -> Result<Handled, BrokerError> {
        self.ctx.publisher.publish_task_to_queue(&self.origin.queue, self.msg).await?;
        tracing::info!("set aside while the worker is paused");
        Ok(Handled::SetAside)
    }

    /// Publishes the message again the Celery way (same id, `retries + 1`,
    /// eta = now + the backoff's countdown) to the queue it came from, waiting
    /// in the broker's delay topology, then records the retry bookkeeping; or
    /// fails the schedule when the retries are spent. `cause` says what
    /// failed and `err` how.
    pub(super) async fn retry_later(
        &self,
        trace_id: Option<&str>,
        cause: RetryCause,
        err: String,
    ) -> Result<Handled, BrokerError> {
        let ctx = self.ctx;
        let text = cause.text();
        let Some(countdown) = ctx.config.backoff.countdown(self.msg.retries) else {
            tracing::error!(error = %err, retries = self.msg.retries, "retries exhausted");
            return match trace_id {
                Some(trace_id) => {
                    let retries = self.msg.retries;
                    let failures = text.failures;
                    self.fail_schedule(
                        trace_id,
                        format!("gave up after {retries} retries of transient {failures}; last error: {err}"),
                    )
                    .await
                }
                None => Ok(Handled::GaveUp),
            };
        };
        let retried = self
            .msg
            .retried(eta_after(Utc::now(), chrono::Duration::from_std(countdown).unwrap_or(chrono::Duration::MAX)));
        ctx.publisher.publish_task_to_queue(&self.origin.queue, &retried).await?;
        tracing::warn!(class = text.label, error = %err, retries = retried.retries, countdown = ?countdown, "{}", text.retried);
        metrics::counter!(meters::RETRIES, "class" => text.label).increment(1);
        if let Some(trace_id) = trace_id {
            // Bookkeeping for operators; the database may well still be down.
            let at = ctx.store.now();
            let state = RetryState {
                trace_id: trace_id.to_owned(),
                retries: retried.retries as i32,
                first_failure_at: at,
                last_failure_at: at,
                next_retry_at: chrono::Duration::from_std(countdown).ok().map(|d| at + d),
                last_error_class: text.label.to_owned(),
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
            // Whatever the class, the FAIL is kept in flight until the database takes it.
            Err(e) => {
                if e.class() == ErrorClass::Environment {
                    ctx.pause.trip(Fault::database(&e));
                }
                let mut pending = self.msg.clone();
                pending.extra_headers.insert(PENDING_FAIL_HEADER.into(), header::text(&err));
                let countdown = chrono::Duration::from_std(ctx.config.backoff.max).unwrap_or(chrono::Duration::MAX);
                pending.eta = eta_after(Utc::now(), countdown);
                ctx.publisher.publish_task_to_queue(&self.origin.queue, &pending).await?;
                tracing::warn!(error = %e, class = e.class().as_str(), "FAIL not written yet; it stays in flight until the database takes it");
                Ok(Handled::FailPending)
            }
        }
    }
}
