//! Publishing with confirms, behind the narrow [`Publish`] trait the tasks
//! and deliveries use, so their logic is tested with an in-process fake.

use std::future::Future;
use std::time::Duration;

use broker_proto::{TaskMessage, delay, encode, topology};
use chrono::{DateTime, FixedOffset, Utc};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};

use super::BrokerError;
use super::properties::basic_properties;

/// What tasks and deliveries publish: a message to a queue, due at its eta.
pub trait Publish: Send + Sync + 'static {
    /// Publishes a message as it is (body and properties untouched) to the
    /// queue `queue`, waiting in the delay topology until `eta`; returns once
    /// the broker has taken it.
    fn publish_to_queue(
        &self,
        queue: &str,
        eta: Option<DateTime<FixedOffset>>,
        body: &[u8],
        properties: BasicProperties,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Encodes `msg` as Celery does and publishes it to `queue`, due at its eta.
    fn publish_task_to_queue(
        &self,
        queue: &str,
        msg: &TaskMessage,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send {
        async move {
            let out = encode(msg, Utc::now())?;
            let props = basic_properties(&out.properties)?;
            self.publish_to_queue(queue, msg.eta, &out.body, props).await
        }
    }
}

/// Publishes on a channel in confirm mode: a publish returns only once the
/// broker has taken responsibility for the message.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    /// Messages due within this window are published straight to their
    /// queue; the consuming worker holds them in memory until due.
    direct_within: Duration,
}

impl Publisher {
    /// Puts `channel` in confirm mode. Messages due within `direct_within`
    /// (the eta window) skip the delay topology.
    pub async fn new(channel: Channel, direct_within: Duration) -> Result<Publisher, BrokerError> {
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { channel, direct_within })
    }

    /// Publishes raw bytes, confirmed; a message that reaches no queue is an error.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let target = || format!("exchange {exchange:?} routing key {routing_key:?}");
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable(target())),
            Confirmation::Nack(_) | Confirmation::NotRequested => Err(BrokerError::Nacked(target())),
        }
    }
}

/// Through the delay topology when the eta is a second or more away and
/// beyond the eta window, straight to the queue otherwise. The message is
/// the same either way; only when it arrives differs.
impl Publish for Publisher {
    async fn publish_to_queue(
        &self,
        queue: &str,
        eta: Option<DateTime<FixedOffset>>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let wait = eta.map_or(0, |eta| (eta.with_timezone(&Utc) - Utc::now()).num_milliseconds().max(0) as u64);
        // Whole seconds, to the nearest: the delay queues count in seconds,
        // and what arrives early is waited out in memory (the eta window).
        let delay = (wait + 500) / 1000;
        if delay == 0 || u128::from(wait) <= self.direct_within.as_millis() {
            self.publish(topology::DEFAULT_EXCHANGE, queue, body, properties).await
        } else {
            self.publish(&delay::entry_exchange(), &delay::routing_key(delay, queue), body, properties).await
        }
    }
}
