//! How a delivery ends at the broker: the one function that acks or hands
//! back, decided by [`Handled::settlement`].

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

use crate::tasks::{Handled, Settlement};

/// Acks a delivery whose effect is durable and any message it caused
/// confirmed; hands back (nack with requeue) one whose effect could not be
/// made durable, so it is delivered again; leaves unacked one that shutdown
/// interrupted, which the channel's close hands back.
pub async fn settle(delivery: &Delivery, handled: Handled) {
    match handled.settlement() {
        Settlement::Ack => {
            tracing::debug!(outcome = handled.label(), "done");
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
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
