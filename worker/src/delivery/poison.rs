//! Poison messages: a message that never completes (it crashes the worker or
//! its handler fails on every delivery) is dead-lettered after
//! `max_deliveries` instead of looping forever.
//!
//! Quorum queues count deliveries themselves (`x-delivery-count`). On
//! classic queues a redelivery only says "at least once before", so the
//! worker re-publishes a redelivered message with its own counter
//! ([`DELIVERIES_HEADER`]), confirmed, and acks the old copy; only
//! redeliveries pay for that.

use broker_proto::{AMQPValue, TaskMessage, header};
use lapin::message::Delivery;

use crate::broker::{BrokerError, Publish};
use crate::tasks::headers::without;
use crate::tasks::{Handled, Origin};

/// Celerity's delivery counter on classic queues: deliveries of earlier copies.
pub const DELIVERIES_HEADER: &str = "x-celerity-deliveries";
/// The broker's delivery counter on quorum queues (previous deliveries).
pub const QUORUM_COUNT_HEADER: &str = "x-delivery-count";

/// What to do with a delivery before decoding it.
#[derive(Debug)]
pub enum Verdict {
    /// Go on and run it.
    Run,
    /// Delivered too often: dead-letter it, for this reason.
    Poison(String),
    /// Already dealt with (re-published with its count).
    Settled(Handled),
}

/// How many times this message has been delivered, this delivery included.
pub fn deliveries(delivery: &Delivery) -> u32 {
    let headers = delivery.properties.headers().as_ref();
    let count = |name: &str| {
        headers.and_then(|h| h.inner().get(name)).and_then(header::as_int).map(|n| n.clamp(0, u32::MAX.into()) as u32)
    };
    match count(QUORUM_COUNT_HEADER) {
        Some(previous) => previous.saturating_add(1),
        None => count(DELIVERIES_HEADER).unwrap_or(1).saturating_add(u32::from(delivery.redelivered)),
    }
}

/// Finds a message delivered `max_deliveries` times poison; re-publishes a
/// redelivered classic-queue message with its count.
pub async fn check(
    publisher: &impl Publish,
    max_deliveries: u32,
    origin: &Origin,
    delivery: &Delivery,
) -> Result<Verdict, BrokerError> {
    let n = deliveries(delivery);
    if n >= max_deliveries {
        return Ok(Verdict::Poison(format!(
            "delivered {n} times without completing (max_deliveries {max_deliveries})"
        )));
    }
    let quorum = delivery.properties.headers().as_ref().is_some_and(|h| h.contains_key(QUORUM_COUNT_HEADER));
    if !delivery.redelivered || quorum {
        return Ok(Verdict::Run);
    }
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(DELIVERIES_HEADER.into(), AMQPValue::LongInt(i32::try_from(n).unwrap_or(i32::MAX)));
    let props = delivery.properties.clone().with_headers(headers);
    publisher.publish_to_queue(&origin.queue, None, &delivery.data, props).await?;
    tracing::warn!(deliveries = n, "redelivered message re-published with its delivery count");
    Ok(Verdict::Settled(Handled::Recounted))
}

/// Removes the delivery counters from a decoded message: they count this
/// delivery's copies, and any copy a task publishes (a retry, a message
/// set aside or parked, a pending FAIL, a step sent again) is a fresh message.
pub fn uncount(msg: &mut TaskMessage) {
    // Most deliveries carry neither: leave their headers as they are.
    if [DELIVERIES_HEADER, QUORUM_COUNT_HEADER].iter().any(|name| msg.extra_headers.contains_key(name)) {
        msg.extra_headers = without(&without(&msg.extra_headers, DELIVERIES_HEADER), QUORUM_COUNT_HEADER);
    }
}
