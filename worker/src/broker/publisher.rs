//! Publishing with confirms, behind the narrow [`Publish`] trait the tasks
//! and deliveries use, so their logic is tested with an in-process fake.

use std::future::Future;
use std::time::Duration;

use broker_proto::{FieldTable, TaskMessage, delay, encode, topology};
use chrono::{DateTime, FixedOffset, Utc};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};

use super::BrokerError;
use super::properties::basic_properties;
use crate::telemetry::Publishing;

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
            // Sent from inside a traced run: the message carries a new
            // producer span's context, as the Celery instrumentation's would.
            let traced = Publishing::start(msg, queue);
            let msg = traced.as_ref().map_or(msg, |t| &t.msg);
            let sent = async {
                let out = encode(msg, Utc::now())?;
                let props = basic_properties(&out.properties)?;
                self.publish_to_queue(queue, msg.eta, &out.body, props).await
            }
            .await;
            if let Some(traced) = traced {
                traced.end(sent.as_ref().err().map(ToString::to_string).as_deref());
            }
            sent
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
    /// Next polls for Celerity's own queue due within this window go to the
    /// countdown queue (zero: never).
    countdowns_within: Duration,
}

impl Publisher {
    /// Puts `channel` in confirm mode. Messages due within `direct_within`
    /// (the eta window) skip the delay topology.
    pub async fn new(channel: Channel, direct_within: Duration) -> Result<Publisher, BrokerError> {
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { channel, direct_within, countdowns_within: Duration::ZERO })
    }

    /// Sends messages for [`topology::NEXT_POLL_QUEUE`] due within `window`
    /// to [`topology::COUNTDOWN_QUEUE`] (declared by the caller), where a
    /// worker holds them until due.
    pub fn with_countdowns(self, window: Duration) -> Publisher {
        Publisher { countdowns_within: window, ..self }
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

/// Where a message goes by when it is due: straight to its queue when due
/// within the eta window (or under a second, the delay levels'
/// resolution); to the countdown queue when it is a next poll for
/// Celerity's own queue due within the countdown window; through the delay
/// levels otherwise. The message is the same either way; only where it
/// waits differs.
impl Publish for Publisher {
    async fn publish_to_queue(
        &self,
        queue: &str,
        eta: Option<DateTime<FixedOffset>>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let properties = without_dead_letter_history(properties);
        let wait = eta.map_or(0, |eta| (eta.with_timezone(&Utc) - Utc::now()).num_milliseconds().max(0) as u64);
        // Whole seconds, rounded down: the delay levels count in seconds, and
        // what arrives up to a second early is waited out in memory, so a
        // countdown is never late by the rounding.
        let delay = wait / 1000;
        if delay == 0 || u128::from(wait) <= self.direct_within.as_millis() {
            self.publish(topology::DEFAULT_EXCHANGE, queue, body, properties).await
        } else if queue == topology::NEXT_POLL_QUEUE && u128::from(wait) <= self.countdowns_within.as_millis() {
            self.publish(topology::DEFAULT_EXCHANGE, topology::COUNTDOWN_QUEUE, body, properties).await
        } else {
            self.publish(&delay::entry_exchange_for(delay), &delay::routing_key(delay, queue), body, properties).await
        }
    }
}

/// The headers RabbitMQ writes when it dead-letters a message.
const DEAD_LETTER_HISTORY: [&str; 7] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

/// `properties` without the dead-letter history of an earlier trip through
/// the delay levels. A retry or a moved message is a new publish; carrying
/// the old `x-death` would make RabbitMQ see a cycle when the new trip
/// passes a level queue the old one passed, and drop the message silently.
fn without_dead_letter_history(properties: BasicProperties) -> BasicProperties {
    let Some(headers) = properties.headers().as_ref() else { return properties };
    if !DEAD_LETTER_HISTORY.iter().any(|h| headers.contains_key(h)) {
        return properties;
    }
    let mut kept = FieldTable::default();
    for (k, v) in headers {
        if !DEAD_LETTER_HISTORY.contains(&k.as_str()) {
            kept.insert(k.clone(), v.clone());
        }
    }
    properties.with_headers(kept)
}

#[cfg(test)]
mod tests {
    use broker_proto::AMQPValue;

    use super::*;

    #[test]
    fn the_dead_letter_history_is_not_sent_again() {
        let mut headers = FieldTable::default();
        headers.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        headers.insert("x-first-death-queue".into(), broker_proto::header::text("celerity.delay.00"));
        headers.insert("id".into(), broker_proto::header::text("kept"));
        let out = without_dead_letter_history(BasicProperties::default().with_headers(headers));
        let out = out.headers().as_ref().unwrap();
        assert_eq!(out.inner().keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["id"]);
        let none = without_dead_letter_history(BasicProperties::default());
        assert!(none.headers().is_none());
    }
}
