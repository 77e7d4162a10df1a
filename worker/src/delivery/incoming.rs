//! One delivery, from bytes to how it was handled. [`Incoming`] is the
//! delivery and where it came from; once decoded and routed, [`Routed`]
//! adds the message, its task and its tracking. Each stage returns
//! `Result<_, Handled>`: an `Err` is an outcome reached early. Settling is
//! [`super::settle`]'s.

use std::sync::Arc;
use std::time::Duration;

use broker_proto::{DecodeOptions, TaskMessage, delay, topology};
use chrono::Utc;
use lapin::message::Delivery;
use opentelemetry::context::FutureExt;
use tracing::Instrument;

use super::dead_letter::dead_letter;
use super::decoding::decode;
use super::handler::Handler;
use super::job::Job;
use super::poison::{self, Verdict};
use super::tracking::Tracked;
use crate::broker::Publish;
use crate::tasks::{Ctx, Handled, Origin, Store, Task};
use crate::telemetry::Run;

/// A delivery in hand.
pub struct Incoming<'h, S, P> {
    /// What the session's deliveries share.
    pub handler: &'h Handler<S, P>,
    /// The delivery.
    pub delivery: Delivery,
    /// The queue it came from and whether it was delivered before.
    pub origin: Origin,
    /// How long it may wait in memory for its eta: longer for the
    /// countdown queue, whose consumer has room for that.
    pub hold_window: Duration,
}

/// A delivery decoded and routed to a task, tracked from `task-received`
/// to its outcome.
struct Routed<'i, 'h, S, P> {
    incoming: &'i Incoming<'h, S, P>,
    msg: Arc<TaskMessage>,
    job: Job,
    tracked: Tracked,
}

impl<'h, S: Store, P: Publish> Incoming<'h, S, P> {
    /// `delivery`, as its session's `handler` receives it.
    pub fn new(handler: &'h Handler<S, P>, delivery: Delivery) -> Self {
        let routing_key = delivery.routing_key.as_str();
        let hold_window = handler.ctx.config.hold_window(routing_key);
        // A held countdown is a next poll: when it moves, is set aside or is
        // retried, it goes where next polls go (and from there, by its eta,
        // back to the countdown queue or to the delay levels).
        let queue = match delay::destination(routing_key).unwrap_or(routing_key) {
            topology::COUNTDOWN_QUEUE => topology::NEXT_POLL_QUEUE,
            queue => queue,
        };
        let origin = Origin { queue: queue.to_owned(), redelivered: poison::deliveries(&delivery) > 1 };
        Incoming { handler, delivery, origin, hold_window }
    }

    fn ctx(&self) -> &'h Ctx<S, P> {
        &self.handler.ctx
    }

    /// Decides how the delivery is handled. Returns [`Handled::Interrupted`]
    /// only when shutdown comes while it waits for its eta.
    pub async fn dispatch(&self) -> Handled {
        let stages = async {
            self.poison_check().await?;
            let msg = self.decode().await?;
            let span = tracing::info_span!(
                "delivery",
                task_id = %msg.id,
                trace_id = %msg.kwarg_str("trace_id").unwrap_or_default(),
                retries = msg.retries,
                redelivered = self.delivery.redelivered,
            );
            Ok(self.route(msg).instrument(span).await)
        };
        match stages.await {
            Ok(handled) | Err(handled) => handled,
        }
    }

    /// Poison check: a message delivered too often is dead-lettered; a
    /// redelivered classic-queue one is published again with its count.
    async fn poison_check(&self) -> Result<(), Handled> {
        let ctx = self.ctx();
        match poison::check(&ctx.publisher, ctx.config.max_deliveries, &self.origin, &self.delivery).await {
            Ok(Verdict::Run) => Ok(()),
            Ok(Verdict::Poison(reason)) => Err(self.poisoned(&reason).await),
            Ok(Verdict::Settled(handled)) => Err(handled),
            Err(e) => Err(Handled::HandedBack(e)),
        }
    }

    /// Decode: the task message, without the delivery counters (a copy a
    /// task publishes is a fresh message), or the dead-letter queue.
    async fn decode(&self) -> Result<Arc<TaskMessage>, Handled> {
        match self.decoded().await {
            // Shared with the in-flight view without a copy.
            Ok(msg) => Ok(Arc::new(msg)),
            Err(e) => Err(self.dead_letter(&format!("cannot decode: {e}")).await),
        }
    }

    async fn decoded(&self) -> Result<TaskMessage, broker_proto::DecodeError> {
        let opts = DecodeOptions { naive_zone: self.ctx().config.db.time_zone, ..DecodeOptions::default() };
        let mut msg = decode(&self.delivery, opts).await?;
        poison::uncount(&mut msg);
        Ok(msg)
    }

    /// Route: the task the message names, tracked from here on; then its
    /// stages until it is handled.
    async fn route(&self, msg: Arc<TaskMessage>) -> Handled {
        let job = match Job::of(&msg) {
            Ok(job) => job,
            Err(reason) => return self.dead_letter(&reason).await,
        };
        let d = &self.delivery;
        let seen = (d.exchange.as_str(), d.routing_key.as_str(), d.redelivered);
        let ctx = self.ctx();
        let tracked = Tracked::received(job.name(), &msg, ctx.events.as_ref(), &ctx.inflight, seen).await;
        let mut routed = Routed { incoming: self, msg, job, tracked };
        let handled = match routed.wait_until_due().await {
            Ok(()) => routed.run().await,
            Err(handled) => handled,
        };
        routed.tracked.finish(&handled).await;
        handled
    }

    /// A poison message goes to the dead-letter queue, and the schedule it
    /// polls ends FAIL with the reason: left open, the sweeper would send it
    /// again forever. Both are confirmed before the delivery is acked.
    async fn poisoned(&self, reason: &str) -> Handled {
        if let Err(e) = dead_letter(&self.ctx().publisher, &self.delivery, reason).await {
            return Handled::HandedBack(e);
        }
        let Ok(msg) = self.decoded().await else { return Handled::DeadLettered };
        let trace_id = match Job::of(&msg) {
            Ok(Job::Schedule(trace_id)) => trace_id,
            Ok(Job::Callback(args)) => args.trace_id,
            Ok(Job::Delete) | Err(_) => return Handled::DeadLettered,
        };
        let task = Task { ctx: self.ctx(), origin: &self.origin, msg: &msg };
        match task.fail_schedule(&trace_id, format!("message dead-lettered: {reason}")).await {
            Ok(_) => Handled::DeadLettered,
            Err(e) => Handled::HandedBack(e),
        }
    }

    /// Copies the delivery to the dead-letter queue, saying why.
    async fn dead_letter(&self, reason: &str) -> Handled {
        dead_letter(&self.ctx().publisher, &self.delivery, reason).await.into()
    }
}

impl<S: Store, P: Publish> Routed<'_, '_, S, P> {
    fn task(&self) -> Task<'_, S, P> {
        let incoming = self.incoming;
        Task { ctx: incoming.ctx(), origin: &incoming.origin, msg: &self.msg }
    }

    /// Wait for the eta: drops an expired message, moves one due later than
    /// the eta window to the broker's delay queues, waits out a nearer eta.
    /// While the worker is paused, a held message goes back to its queue.
    async fn wait_until_due(&mut self) -> Result<(), Handled> {
        let incoming = self.incoming;
        let (ctx, handler) = (incoming.ctx(), incoming.handler);
        let now = Utc::now();
        if let Some(expires) = self.msg.expires
            && expires < now
        {
            tracing::warn!(%expires, "task expired before it ran; discarded as Celery does");
            return Err(Handled::Expired);
        }
        let Some((eta, Ok(wait))) = self.msg.eta.map(|eta| (eta, (eta.with_timezone(&Utc) - now).to_std())) else {
            return Ok(());
        };
        // Under a second is always waited out here: the delay levels count
        // whole seconds and would hand it straight back.
        if wait > incoming.hold_window.max(Duration::from_secs(1)) {
            // Not due soon: the broker keeps it, not this worker's memory.
            let d = &incoming.delivery;
            // A producer's schedule task with a countdown (the framework's
            // first poll after `wait_poll`) waits where Celerity's own next
            // polls wait: held in the countdown queue when due soon enough.
            let to = match incoming.origin.queue.as_str() {
                q if q == topology::SCHEDULE_QUEUE.name && ctx.config.countdowns_queued() => topology::NEXT_POLL_QUEUE,
                q => q,
            };
            let moved = ctx.publisher.publish_to_queue(to, Some(eta), &d.data, d.properties.clone()).await;
            return Err(moved.map(|()| Handled::MovedToDelay).into());
        }
        self.tracked.scheduled(eta);
        let (mut stopping, mut pause) = (handler.stopping.clone(), ctx.pause.watch());
        let paused = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stopping.wait_for(|s| *s) => return Err(Handled::Interrupted),
            _ = pause.wait_for(Option::is_some) => true,
        };
        if paused {
            return Err(self.task().set_aside().await.into());
        }
        self.tracked.reserved();
        Ok(())
    }

    /// Run: the task, in a concurrency slot; unless the worker was paused
    /// meanwhile, when the message goes back to its queue instead.
    async fn run(&mut self) -> Handled {
        let incoming = self.incoming;
        let Ok(_permit) = incoming.handler.permits.acquire().await else { return Handled::Interrupted };
        let task = Task { ctx: incoming.ctx(), origin: &incoming.origin, msg: &self.msg };
        if incoming.ctx().pause.is_paused() {
            return task.set_aside().await.into();
        }
        self.tracked.start().await;
        let running = async {
            match &self.job {
                Job::Schedule(trace_id) => task.schedule(trace_id).await,
                Job::Callback(args) => task.callback(args).await,
                Job::Delete => task.delete_expired().await,
            }
        };
        let Some(span) = Run::start(&self.msg, incoming.delivery.routing_key.as_str()) else {
            return running.await.into();
        };
        // Every log line of the run carries its span's ids, so log search
        // finds the trace (`otel{trace_id=… span_id=…}` in text, the current
        // span's fields in JSON).
        let (trace_id, span_id) = span.ids();
        let logged = tracing::info_span!("otel", %trace_id, %span_id);
        let handled: Handled = running.with_context(span.context()).instrument(logged).await.into();
        span.end(handled.span_end());
        handled
    }
}
