//! How a delivery ends at the broker: the one path that acks or hands
//! back, decided by [`Handled::settlement`].

use std::future::Future;

use futures_lite::future::poll_once;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::DeliveryTag;

use crate::tasks::{Handled, Settlement};

/// Where deliveries are acked or handed back: the channel they came on
/// (a recorder in unit tests).
pub trait Settle: Send + Sync + 'static {
    /// Acks the delivery `tag`.
    fn ack(&self, tag: DeliveryTag) -> impl Future<Output = Result<(), lapin::Error>> + Send;
    /// Hands the delivery `tag` back to its queue, to be delivered again.
    fn hand_back(&self, tag: DeliveryTag) -> impl Future<Output = Result<(), lapin::Error>> + Send;
}

impl Settle for Channel {
    /// The ack is not waited for: the frame is queued in order before
    /// anything this worker sends on the channel later (its close
    /// included), and an ack the socket loses is a redelivery either way.
    /// Waiting for it to be written, or going through the delivery's own
    /// acker (a task of lapin's that spawns another), cost about three
    /// thread switches per poll (BENCHMARKS.md, issue 19).
    async fn ack(&self, tag: DeliveryTag) -> Result<(), lapin::Error> {
        match poll_once(self.basic_ack(tag, BasicAckOptions::default())).await {
            Some(Err(e)) => Err(e),
            Some(Ok(())) | None => Ok(()),
        }
    }

    async fn hand_back(&self, tag: DeliveryTag) -> Result<(), lapin::Error> {
        self.basic_nack(tag, BasicNackOptions { requeue: true, multiple: false }).await
    }
}

/// Acks a delivery whose effect is durable and any message it caused
/// confirmed; hands back one whose effect could not be made durable, so it
/// is delivered again; leaves unacked one that shutdown interrupted, which
/// the channel's close hands back. All on `channel`, the one the delivery
/// `tag` came on.
pub async fn settle(channel: &impl Settle, tag: DeliveryTag, handled: Handled) {
    match handled.settlement() {
        Settlement::Ack => {
            tracing::debug!(outcome = handled.label(), "done");
            if let Err(e) = channel.ack(tag).await {
                // The channel is gone: the broker redelivers the message.
                tracing::warn!(error = %e, "ack failed; the message will be redelivered");
            }
        }
        Settlement::Requeue => {
            tracing::warn!(outcome = ?handled, "handing the message back for redelivery");
            if let Err(e) = channel.hand_back(tag).await {
                tracing::warn!(error = %e, "nack failed; the message will be redelivered");
            }
        }
        Settlement::Leave => tracing::debug!(outcome = handled.label(), "left unacked for the channel's close"),
    }
}
