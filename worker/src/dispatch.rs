//! One delivery, from bytes to a settled message: decode, route by task name,
//! wait for the eta, run the task, ack or hand back.

use std::sync::Arc;
use std::time::Instant;

use broker_proto::{DecodeOptions, TaskMessage, delay, topology};
use chrono::Utc;
use lapin::message::Delivery;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::amqp::properties_of;
use crate::broker::BrokerError;
use crate::context::Ctx;
use crate::dead_letter::dead_letter;
use crate::meters;
use crate::poison;
use crate::settle::{Handled, settle};
use crate::tasks::{self, Origin, callback::CallbackArgs};

/// The task a message names, with its arguments checked.
enum Job {
    Schedule(String),
    Callback(CallbackArgs),
    Delete,
}

impl Job {
    /// The task's short name, for metrics.
    fn name(&self) -> &'static str {
        match self {
            Job::Schedule(_) => "schedule",
            Job::Callback(_) => "callback",
            Job::Delete => "delete",
        }
    }
}

/// Handles one delivery. Returns without settling only at shutdown, while
/// waiting for an eta: closing the channel then hands the message back.
pub(crate) async fn handle(
    ctx: Arc<Ctx>,
    delivery: Delivery,
    permits: Arc<Semaphore>,
    mut stopping: watch::Receiver<bool>,
) {
    let origin = Origin {
        queue: delay::destination(delivery.routing_key.as_str()).unwrap_or(delivery.routing_key.as_str()).to_owned(),
        redelivered: poison::deliveries(&delivery) > 1,
    };
    match poison::check(&ctx, &origin, &delivery).await {
        Ok(poison::Verdict::Run) => {}
        Ok(poison::Verdict::Settled(handled)) => return settle(&delivery, Ok(handled)).await,
        Err(e) => return settle(&delivery, Err(e)).await,
    }
    let opts = DecodeOptions { naive_zone: ctx.config.db.time_zone, ..DecodeOptions::default() };
    // Shared with the in-flight view without a copy.
    let msg = match broker_proto::decode(&properties_of(&delivery.properties), &delivery.data, &opts) {
        Ok(msg) => Arc::new(msg),
        Err(e) => {
            let result = dead_letter(&ctx.publisher, &delivery, &format!("cannot decode: {e}")).await;
            return settle(&delivery, result).await;
        }
    };
    let trace_id = msg.kwarg_str("trace_id").unwrap_or_default().to_owned();
    let span = tracing::info_span!(
        "delivery",
        task_id = %msg.id,
        trace_id = %trace_id,
        retries = msg.retries,
        redelivered = delivery.redelivered,
    );
    async move {
        let job = match job(&msg) {
            Ok(job) => job,
            Err(reason) => return settle(&delivery, dead_letter(&ctx.publisher, &delivery, &reason).await).await,
        };
        if let Some(events) = &ctx.events {
            events.received(&msg).await;
        }
        let held = ctx.inflight.hold(
            msg.clone(),
            delivery.exchange.as_str(),
            delivery.routing_key.as_str(),
            delivery.redelivered,
        );
        let now = Utc::now();
        if let Some(expires) = msg.expires
            && expires < now
        {
            tracing::warn!(%expires, "task expired before it ran; discarded as Celery does");
            return settle(&delivery, Ok(Handled("expired"))).await;
        }
        if let Some(eta) = msg.eta
            && let Ok(wait) = (eta.with_timezone(&Utc) - now).to_std()
        {
            if wait > ctx.config.eta_window {
                // Not due soon: the broker keeps it, not this worker's memory.
                let moved = ctx
                    .publisher
                    .publish_to_queue(&origin.queue, Some(eta), &delivery.data, delivery.properties.clone())
                    .await
                    .map(|()| Handled("moved to the delay queues"));
                return settle(&delivery, moved).await;
            }
            held.scheduled(eta);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            held.reserved();
        }
        let Ok(_permit) = permits.acquire().await else { return };
        held.active();
        if let Some(eta) = msg.eta {
            let late = (Utc::now() - eta.with_timezone(&Utc)).to_std().unwrap_or_default();
            metrics::histogram!(meters::ETA_LATENESS).record(late);
        }
        let task = job.name();
        let started = Instant::now();
        metrics::gauge!(meters::IN_FLIGHT).increment(1.0);
        if let Some(events) = &ctx.events {
            events.started(&msg.id).await;
        }
        let result: Result<Handled, BrokerError> = match job {
            Job::Schedule(trace_id) => tasks::schedule::run(&ctx, &origin, &msg, &trace_id).await,
            Job::Callback(args) => tasks::callback::run(&ctx, &origin, &msg, args).await,
            Job::Delete => tasks::delete::run(&ctx, &origin, &msg).await,
        };
        metrics::gauge!(meters::IN_FLIGHT).decrement(1.0);
        metrics::histogram!(meters::POLL_SECONDS, "task" => task).record(started.elapsed());
        let outcome = match &result {
            Ok(Handled(how)) => *how,
            Err(_) => "handed back",
        };
        metrics::counter!(meters::TASKS, "task" => task, "outcome" => outcome).increment(1);
        if let Some(events) = &ctx.events {
            let ended = if result.is_ok() { Ok(outcome) } else { Err(outcome) };
            events.ended(&msg.id, ended, started.elapsed()).await;
        }
        settle(&delivery, result).await;
    }
    .instrument(span)
    .await
}

/// Routes by task name and checks the arguments, or says why it cannot run.
fn job(msg: &TaskMessage) -> Result<Job, String> {
    let text = |name: &str| {
        msg.kwarg_str(name).map(str::to_owned).ok_or_else(|| format!("task {} has no string kwarg {name:?}", msg.task))
    };
    match msg.task.as_str() {
        topology::SCHEDULE_TASK => Ok(Job::Schedule(text("trace_id")?)),
        topology::CALLBACK_TASK => Ok(Job::Callback(CallbackArgs {
            trace_id: text("trace_id")?,
            callback_id: text("callback_id")?,
            callback_data: text("callback_data")?,
        })),
        topology::DELETE_TASK => Ok(Job::Delete),
        other => Err(format!("unknown task {other:?}")),
    }
}
