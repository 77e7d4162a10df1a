//! How a delivery ends at the broker: the one function that acks or hands
//! back, decided by [`Handled::settlement`].

use futures_lite::future::poll_once;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

use crate::tasks::{Handled, Settlement};

/// Acks a delivery whose effect is durable and any message it caused
/// confirmed; hands back (nack with requeue) one whose effect could not be
/// made durable, so it is delivered again; leaves unacked one that shutdown
/// interrupted, which the channel's close hands back.
///
/// The ack goes on `channel`, the one `delivery` came on, and is not waited
/// for: the frame is queued in order before anything this worker sends on
/// the channel later (its close included), and an ack the socket loses is
/// a redelivery either way. Waiting for it to be written, or going through
/// the delivery's own acker (a task of lapin's that spawns another), cost
/// about three thread switches per poll (BENCHMARKS.md, issue 19).
pub async fn settle(channel: &Channel, delivery: &Delivery, handled: Handled) {
    match handled.settlement() {
        Settlement::Ack => {
            tracing::debug!(outcome = handled.label(), "done");
            let queued = poll_once(channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default())).await;
            if let Some(Err(e)) = queued {
                // The channel is gone: the broker redelivers the message.
                tracing::warn!(error = %e, "ack failed; the message will be redelivered");
            }
        }
        Settlement::Requeue => {
            tracing::warn!(outcome = ?handled, "handing the message back for redelivery");
            if let Err(e) = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await {
                tracing::warn!(error = %e, "nack failed; the message will be redelivered");
            }
        }
        Settlement::Leave => tracing::debug!(outcome = handled.label(), "left unacked for the channel's close"),
    }
}
