//! `bk_plugin_framework.runtime.callback.celery.tasks.callback(trace_id, callback_id, callback_data)`.

use broker_proto::{header, topology};
use celerity_db::{DbError, State};

use super::headers::{LOCK_HELD_HEADER, holds_lock, pending_fail};
use super::{Handled, Store, Task};
use crate::broker::{BrokerError, Publish};
use crate::plugins::Callback;

/// The callback task's arguments.
#[derive(Debug, Clone)]
pub struct CallbackArgs {
    /// The schedule.
    pub trace_id: String,
    /// The callback's id.
    pub callback_id: String,
    /// The callback's data, as JSON text.
    pub callback_data: String,
}

impl<S: Store, P: Publish> Task<'_, S, P> {
    /// Takes the `scheduling` lock (or re-queues itself in 1–5 s when another
    /// holds it), polls the schedule with the callback if it is in CALLBACK,
    /// and releases the lock.
    pub async fn callback(&self, args: &CallbackArgs) -> Result<Handled, BrokerError> {
        let (ctx, trace_id) = (self.ctx, args.trace_id.as_str());
        if let Some(err) = pending_fail(self.msg) {
            return self.fail_schedule(trace_id, err).await;
        }
        if !holds_lock(self.msg) {
            match ctx.store.try_lock(trace_id).await {
                Ok(true) => {}
                Ok(false) => return self.requeue_later(args).await,
                Err(e) => return self.on_db_error(Some(trace_id), e).await,
            }
        }
        // From here the lock is ours: a retry must say so, or it would wait for itself.
        let mut held = self.msg.clone();
        held.extra_headers.insert(LOCK_HELD_HEADER.into(), header::text("1"));
        let task = self.with_message(&held);
        let row = match ctx.store.load(trace_id).await {
            Ok(row) => row,
            Err(DbError::NotFound(_)) => return Ok(Handled::NoSuchSchedule),
            Err(e) => return task.on_db_error(Some(trace_id), e).await,
        };
        if row.state != State::Callback.code() {
            tracing::warn!(state = row.state, "schedule is not waiting for a callback");
            return match ctx.store.unlock(trace_id).await {
                Ok(()) => Ok(Handled::NotInCallback),
                Err(e) => task.on_db_error(Some(trace_id), e).await,
            };
        }
        let data: serde_json::Value = match serde_json::from_str(&args.callback_data) {
            Ok(data) => data,
            Err(e) => return task.fail_schedule(trace_id, format!("callback data is not JSON: {e}")).await,
        };
        task.poll(trace_id, Some(Callback { id: args.callback_id.clone(), data })).await
    }

    /// Another worker holds the lock: send the callback again in 1–5 s, as a new
    /// task, as the Python task does.
    async fn requeue_later(&self, args: &CallbackArgs) -> Result<Handled, BrokerError> {
        let kwargs = [
            ("trace_id", args.trace_id.as_str()),
            ("callback_id", &args.callback_id),
            ("callback_data", &args.callback_data),
        ];
        let m = self.ctx.sender.task(topology::CALLBACK_TASK, &kwargs, fastrand::i64(1..=5));
        self.ctx.publisher.publish_task_to_queue(topology::CALLBACK_QUEUE.name, &m).await?;
        tracing::info!("scheduling lock held elsewhere; callback re-queued");
        Ok(Handled::LockBusy)
    }
}
