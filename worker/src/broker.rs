//! RabbitMQ: connecting within a bounded wait, declaring the framework's
//! topology with the arguments Python uses, and publishing with confirms.

use std::time::{Duration, Instant};

use broker_proto::{AMQPValue, FieldTable, TaskMessage, encode, topology};
use chrono::Utc;
use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use thiserror::Error;

use crate::amqp::{PropertyTooLong, basic_properties};

/// Where undecodable or unroutable-to-a-task messages go, with the reason.
pub const DEAD_LETTER_QUEUE: &str = "celerity.dead";

/// Everything that can go wrong with the broker.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// Start-up could not connect within the configured wait.
    #[error("cannot reach the broker at {url} within {waited:?}: {source}")]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// How long start-up tried.
        waited: Duration,
        /// The last connection error.
        #[source]
        source: lapin::Error,
    },
    /// A queue or exchange exists with other arguments (406 PRECONDITION_FAILED).
    #[error(
        "cannot declare {what}: {source} (it exists with other arguments; declare it as the framework does, x-max-priority = 255)"
    )]
    Topology {
        /// Which queue or exchange.
        what: String,
        /// The broker's answer.
        #[source]
        source: lapin::Error,
    },
    /// Any other AMQP failure.
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker nacked a publish: it did not take the message.
    #[error("the broker refused the message to {0}")]
    Nacked(String),
    /// The message reached no queue.
    #[error("the message to {0} reached no queue")]
    Unroutable(String),
    /// The message cannot be encoded for Python consumers.
    #[error(transparent)]
    Encode(#[from] broker_proto::EncodeError),
    /// A property too long for AMQP.
    #[error(transparent)]
    Property(#[from] PropertyTooLong),
}

/// Connects, retrying until `wait` has passed.
pub async fn connect(url: &str, wait: Duration) -> Result<Connection, BrokerError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(conn) => return Ok(conn),
            Err(source) if started.elapsed() >= wait => {
                return Err(BrokerError::Unreachable {
                    url: celerity_db::redact_url(url),
                    waited: started.elapsed(),
                    source,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "broker not reachable yet, retrying");
                tokio::time::sleep(delay.min(wait.saturating_sub(started.elapsed()))).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Declares what the worker consumes: the framework's queues exactly as
/// Python declares them, other queues as Celery declares its default queue
/// (durable, no arguments), and the dead-letter queue.
pub async fn declare_topology(channel: &Channel, queues: &[String]) -> Result<(), BrokerError> {
    for name in queues {
        if topology::queue(name).is_some() {
            declare_framework_queue(channel, name).await?;
        } else {
            declare_queue(channel, name, FieldTable::default()).await?;
        }
    }
    declare_queue(channel, DEAD_LETTER_QUEUE, FieldTable::default()).await
}

/// Declares `name` as the framework declares its queues: durable,
/// `x-max-priority = 255`, bound to the direct exchange `default` with
/// routing key = queue name.
pub async fn declare_framework_queue(channel: &Channel, name: &str) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            topology::EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|source| BrokerError::Topology { what: format!("exchange {}", topology::EXCHANGE), source })?;
    let mut args = FieldTable::default();
    args.insert(topology::MAX_PRIORITY_ARG.into(), AMQPValue::LongInt(topology::MAX_PRIORITY.into()));
    declare_queue(channel, name, args).await?;
    channel
        .queue_bind(
            name.into(),
            topology::EXCHANGE.into(),
            name.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), BrokerError> {
    channel
        .queue_declare(name.into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .map(|_| ())
        .map_err(|source| BrokerError::Topology { what: format!("queue {name}"), source })
}

/// Publishes on a channel in confirm mode: a publish returns only once the
/// broker has taken responsibility for the message.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Puts `channel` in confirm mode.
    pub async fn new(channel: Channel) -> Result<Publisher, BrokerError> {
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { channel })
    }

    /// Encodes `msg` as Celery would and publishes it, confirmed.
    pub async fn publish_task(&self, exchange: &str, routing_key: &str, msg: &TaskMessage) -> Result<(), BrokerError> {
        let out = encode(msg, Utc::now())?;
        self.publish(exchange, routing_key, &out.body, basic_properties(&out.properties)?).await
    }

    /// Publishes raw bytes, confirmed; a message that reaches no queue is an error.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let target = format!("exchange {exchange:?} routing key {routing_key:?}");
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
            Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable(target)),
            Confirmation::Nack(_) | Confirmation::NotRequested => Err(BrokerError::Nacked(target)),
        }
    }
}
