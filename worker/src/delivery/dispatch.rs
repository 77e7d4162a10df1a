//! One delivery, from bytes to how it was handled: poison check, decode,
//! route by task name, wait for the eta, run the task. Settling is the
//! caller's, in one place ([`super::settle`]).

use std::sync::Arc;

use broker_proto::{DecodeOptions, TaskMessage, delay};
use chrono::Utc;
use lapin::message::Delivery;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use super::dead_letter::dead_letter;
use super::decoding::decode;
use super::job::Job;
use super::poison::{self, Verdict};
use super::tracking::Tracked;
use crate::broker::Publish;
use crate::tasks::{Ctx, Handled, Origin, Store, Task};

/// Decides how one delivery is handled. Returns [`Handled::Interrupted`]
/// only when shutdown comes while it waits for its eta.
pub async fn dispatch<S: Store, P: Publish>(
    ctx: &Ctx<S, P>,
    delivery: &Delivery,
    permits: &Semaphore,
    stopping: watch::Receiver<bool>,
) -> Handled {
    let routing_key = delivery.routing_key.as_str();
    let origin = Origin {
        queue: delay::destination(routing_key).unwrap_or(routing_key).to_owned(),
        redelivered: poison::deliveries(delivery) > 1,
    };
    let opts = DecodeOptions { naive_zone: ctx.config.db.time_zone, ..DecodeOptions::default() };
    match poison::check(&ctx.publisher, ctx.config.max_deliveries, &origin, delivery).await {
        Ok(Verdict::Run) => {}
        Ok(Verdict::Poison(reason)) => {
            return poisoned(ctx, delivery, &origin, decode(delivery, opts).await.ok(), &reason).await;
        }
        Ok(Verdict::Settled(handled)) => return handled,
        Err(e) => return Handled::HandedBack(e),
    }
    // Shared with the in-flight view without a copy.
    let msg = match decode(delivery, opts).await {
        Ok(msg) => Arc::new(msg),
        Err(e) => return dead_letter(&ctx.publisher, delivery, &format!("cannot decode: {e}")).await.into(),
    };
    let span = tracing::info_span!(
        "delivery",
        task_id = %msg.id,
        trace_id = %msg.kwarg_str("trace_id").unwrap_or_default(),
        retries = msg.retries,
        redelivered = delivery.redelivered,
    );
    async move {
        let job = match Job::of(&msg) {
            Ok(job) => job,
            Err(reason) => return dead_letter(&ctx.publisher, delivery, &reason).await.into(),
        };
        let seen = (delivery.exchange.as_str(), routing_key, delivery.redelivered);
        let mut tracked = Tracked::received(job.name(), &msg, ctx.events.as_ref(), &ctx.inflight, seen).await;
        let handled = run_when_due(ctx, delivery, &origin, &msg, job, permits, stopping, &mut tracked).await;
        tracked.finish(&handled).await;
        handled
    }
    .instrument(span)
    .await
}

/// A poison message goes to the dead-letter queue, and the schedule it
/// polls ends FAIL with the reason: left open, the sweeper would send it
/// again forever. Both are confirmed before the delivery is acked.
async fn poisoned<S: Store, P: Publish>(
    ctx: &Ctx<S, P>,
    delivery: &Delivery,
    origin: &Origin,
    msg: Option<TaskMessage>,
    reason: &str,
) -> Handled {
    if let Err(e) = dead_letter(&ctx.publisher, delivery, reason).await {
        return Handled::HandedBack(e);
    }
    let schedule = msg.as_ref().and_then(|m| match Job::of(m) {
        Ok(Job::Schedule(trace_id)) => Some(trace_id),
        Ok(Job::Callback(args)) => Some(args.trace_id),
        Ok(Job::Delete) | Err(_) => None,
    });
    if let (Some(msg), Some(trace_id)) = (&msg, schedule) {
        let task = Task { ctx, origin, msg };
        if let Err(e) = task.fail_schedule(&trace_id, format!("message dead-lettered: {reason}")).await {
            return Handled::HandedBack(e);
        }
    }
    Handled::DeadLettered
}

/// Drops an expired message, moves one due later than the eta window to the
/// broker's delay queues, waits out a nearer eta, then runs the task in a
/// concurrency slot. While the worker is paused, a held message goes back
/// to its queue instead of running.
#[allow(clippy::too_many_arguments)]
async fn run_when_due<S: Store, P: Publish>(
    ctx: &Ctx<S, P>,
    delivery: &Delivery,
    origin: &Origin,
    msg: &TaskMessage,
    job: Job,
    permits: &Semaphore,
    mut stopping: watch::Receiver<bool>,
    tracked: &mut Tracked,
) -> Handled {
    let task = Task { ctx, origin, msg };
    let mut pause = ctx.pause.watch();
    let now = Utc::now();
    if let Some(expires) = msg.expires
        && expires < now
    {
        tracing::warn!(%expires, "task expired before it ran; discarded as Celery does");
        return Handled::Expired;
    }
    if let Some(eta) = msg.eta
        && let Ok(wait) = (eta.with_timezone(&Utc) - now).to_std()
    {
        if wait > ctx.config.eta_window {
            // Not due soon: the broker keeps it, not this worker's memory.
            let moved = ctx
                .publisher
                .publish_to_queue(&origin.queue, Some(eta), &delivery.data, delivery.properties.clone())
                .await;
            return moved.map(|()| Handled::MovedToDelay).into();
        }
        tracked.scheduled(eta);
        let paused = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stopping.wait_for(|s| *s) => return Handled::Interrupted,
            _ = pause.wait_for(Option::is_some) => true,
        };
        if paused {
            return task.set_aside().await.into();
        }
        tracked.reserved();
    }
    let Ok(_permit) = permits.acquire().await else { return Handled::Interrupted };
    if ctx.pause.is_paused() {
        return task.set_aside().await.into();
    }
    tracked.start().await;
    let ran = match job {
        Job::Schedule(trace_id) => task.schedule(&trace_id).await,
        Job::Callback(args) => task.callback(&args).await,
        Job::Delete => task.delete_expired().await,
    };
    ran.into()
}
