//! `bk_plugin_framework.runtime.callback.celery.tasks.callback(trace_id, callback_id, callback_data)`.

use broker_proto::{TaskMessage, header, topology};
use celerity_db::{DbError, State, repo};

use super::{LOCK_HELD_HEADER, Origin, fail_schedule, new_task, on_db_error, pending_fail, poll};
use crate::broker::BrokerError;
use crate::context::Ctx;
use crate::plugin::Callback;
use crate::settle::Handled;

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

/// Takes the `scheduling` lock (or re-queues itself in 1–5 s when another
/// holds it), polls the schedule with the callback if it is in CALLBACK, and
/// releases the lock.
pub(crate) async fn run(
    ctx: &Ctx,
    origin: &Origin,
    msg: &TaskMessage,
    args: CallbackArgs,
) -> Result<Handled, BrokerError> {
    let trace_id = args.trace_id.as_str();
    if let Some(err) = pending_fail(msg) {
        return fail_schedule(ctx, origin, msg, trace_id, err).await;
    }
    if !msg.extra_headers.contains_key(LOCK_HELD_HEADER) {
        let id = trace_id.to_owned();
        match ctx.db.call(move |c| repo::try_lock(c, &id)).await {
            Ok(true) => {}
            Ok(false) => return requeue_later(ctx, &args).await,
            Err(e) => return on_db_error(ctx, origin, msg, Some(trace_id), e).await,
        }
    }
    // From here the lock is ours: a retry must say so, or it would wait for itself.
    let mut held = msg.clone();
    held.extra_headers.insert(LOCK_HELD_HEADER.into(), header::text("1"));
    let id = trace_id.to_owned();
    let row = match ctx.db.call(move |c| repo::load(c, &id)).await {
        Ok(row) => row,
        Err(DbError::NotFound(_)) => return Ok(Handled("no such schedule")),
        Err(e) => return on_db_error(ctx, origin, &held, Some(trace_id), e).await,
    };
    if row.state != State::Callback.code() {
        tracing::warn!(state = row.state, "schedule is not waiting for a callback");
        let id = trace_id.to_owned();
        return match ctx.db.call(move |c| repo::unlock(c, &id)).await {
            Ok(()) => Ok(Handled("not in callback")),
            Err(e) => on_db_error(ctx, origin, &held, Some(trace_id), e).await,
        };
    }
    let data: serde_json::Value = match serde_json::from_str(&args.callback_data) {
        Ok(data) => data,
        Err(e) => {
            return fail_schedule(ctx, origin, &held, trace_id, format!("callback data is not JSON: {e}")).await;
        }
    };
    poll(ctx, origin, &held, trace_id, Some(Callback { id: args.callback_id.clone(), data })).await
}

/// Another worker holds the lock: send the callback again in 1–5 s, as a new
/// task, as the Python task does.
async fn requeue_later(ctx: &Ctx, args: &CallbackArgs) -> Result<Handled, BrokerError> {
    let kwargs = [
        ("trace_id", args.trace_id.as_str()),
        ("callback_id", &args.callback_id),
        ("callback_data", &args.callback_data),
    ];
    let m = new_task(ctx, topology::CALLBACK_TASK, &kwargs, fastrand::i64(1..=5));
    ctx.publisher.publish_task_to_queue(topology::CALLBACK_QUEUE.name, &m).await?;
    tracing::info!("scheduling lock held elsewhere; callback re-queued");
    Ok(Handled("lock busy"))
}
