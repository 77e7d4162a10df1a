//! How a delivery ends: acknowledgement is decided here, in one place.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};

use crate::broker::BrokerError;

/// A handled delivery: its effect is durable and any message it caused is
/// confirmed by the broker, so it may be acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled(pub &'static str);

/// Acks a handled delivery; hands back (nack with requeue) one whose effect
/// could not be made durable, so it is delivered again.
pub async fn settle(delivery: &Delivery, result: Result<Handled, BrokerError>) {
    match result {
        Ok(Handled(how)) => {
            tracing::debug!(how, "done");
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                // The channel is gone: the broker redelivers the message.
                tracing::warn!(error = %e, "ack failed; the message will be redelivered");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "handing the message back for redelivery");
            if let Err(e) = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await {
                tracing::warn!(error = %e, "nack failed; the message will be redelivered");
            }
        }
    }
}
