//! `bk_plugin_framework.runtime.callback.celery.tasks.callback(trace_id, callback_id, callback_data)`.

use broker_proto::{header, topology};
use celerity_db::{DbError, HeldCallback, State};

use super::headers::{LOCK_HELD_HEADER, holds_lock, pending_fail};
use super::stop::Stop;
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
    /// task holds it), polls the schedule with the callback if it is in CALLBACK,
    /// and releases the lock.
    pub async fn callback(&self, args: &CallbackArgs) -> Result<Handled, BrokerError> {
        let trace_id = args.trace_id.as_str();
        if let Some(err) = pending_fail(self.msg) {
            return self.fail_schedule(trace_id, err).await;
        }
        if !holds_lock(self.msg)
            && let Err(stop) = self.take_lock(args).await
        {
            return self.finish(trace_id, false, Err(stop)).await;
        }
        // From here the lock is ours: a retry must say so, or it would wait for itself.
        let mut held = self.msg.clone();
        held.extra_headers.insert(LOCK_HELD_HEADER.into(), header::text("1"));
        let task = self.with_message(&held);
        let steps = task.poll_with_callback(args).await;
        task.finish(trace_id, true, steps).await
    }

    /// Takes the `scheduling` lock (or finds it taken by an earlier delivery
    /// of this very task, whose worker died mid-step), or stops having sent
    /// the callback again for later.
    async fn take_lock(&self, args: &CallbackArgs) -> Result<(), Stop> {
        let callback = HeldCallback {
            trace_id: args.trace_id.clone(),
            task_id: self.msg.id.clone(),
            callback_id: args.callback_id.clone(),
            callback_data: args.callback_data.clone(),
        };
        if self.ctx.store.try_lock(callback).await? {
            return Ok(());
        }
        Err(Stop::Done(self.requeue_later(args).await?))
    }

    /// With the lock held: polls the schedule with the callback's data if it
    /// waits for a callback.
    async fn poll_with_callback(&self, args: &CallbackArgs) -> Result<Handled, Stop> {
        let trace_id = args.trace_id.as_str();
        let row = match self.ctx.store.load(trace_id).await {
            Err(DbError::NotFound(_)) => return Err(Stop::Done(Handled::NoSuchSchedule)),
            loaded => loaded?,
        };
        if row.state != State::Callback.code() {
            tracing::warn!(state = row.state, "schedule is not waiting for a callback");
            return Err(Stop::Release(Handled::NotInCallback));
        }
        let data: serde_json::Value = serde_json::from_str(&args.callback_data)
            .map_err(|e| Stop::Fail(format!("callback data is not JSON: {e}")))?;
        self.poll(trace_id, Some(Callback { id: args.callback_id.clone(), data })).await
    }

    /// Another worker holds the lock: send the callback again in 1–5 s, as a new
    /// task, as the Python task does.
    async fn requeue_later(&self, args: &CallbackArgs) -> Result<Handled, BrokerError> {
        let m = self.ctx.sender.callback(&args.trace_id, &args.callback_id, &args.callback_data, fastrand::i64(1..=5));
        self.ctx.publisher.publish_task_to_queue(topology::CALLBACK_QUEUE.name, &m).await?;
        tracing::info!("scheduling lock held elsewhere; callback re-queued");
        Ok(Handled::LockBusy)
    }
}
