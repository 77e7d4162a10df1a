//! RabbitMQ: connecting within a bounded wait, declaring the framework's
//! topology with the arguments Python uses, and publishing with confirms.

use std::time::{Duration, Instant};

use broker_proto::{AMQPValue, FieldTable, TaskMessage, delay, encode, topology};
use chrono::{DateTime, FixedOffset, Utc};
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use thiserror::Error;

use crate::amqp::{PropertyTooLong, basic_properties};
use crate::config::QueueType;

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

/// Where the broker is and which certificate authorities to trust beyond
/// the system's, for `amqps://`. Debug output never shows the password.
#[derive(Clone)]
pub struct BrokerAddr {
    /// `amqp://` or `amqps://` URL.
    pub url: String,
    /// PEM certificates of extra authorities (`--broker-ca-file`).
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerAddr")
            .field("url", &celerity_db::redact_url(&self.url))
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<PEM>"))
            .finish()
    }
}

impl BrokerAddr {
    /// A broker trusted through the system's authorities only.
    pub fn new(url: impl Into<String>) -> BrokerAddr {
        BrokerAddr { url: url.into(), ca_pem: None }
    }

    /// One connection attempt.
    pub async fn open(&self) -> lapin::Result<Connection> {
        let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: self.ca_pem.clone() };
        lapin::DefaultConnectionBuilder::new()?
            .with_uri_str(self.url.clone())
            .with_properties(ConnectionProperties::default())
            .with_tls_config(tls)
            .connect()
            .await
    }
}

/// Connects, retrying until `wait` has passed.
pub async fn connect(addr: &BrokerAddr, wait: Duration) -> Result<Connection, BrokerError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match addr.open().await {
            Ok(conn) => return Ok(conn),
            Err(source) if started.elapsed() >= wait => {
                return Err(BrokerError::Unreachable {
                    url: celerity_db::redact_url(&addr.url),
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

/// Declares what the worker consumes and publishes to: the framework's
/// queues as Python declares them (or as quorum queues), other queues as
/// Celery declares its default queue, the dead-letter queue, and the delay
/// topology with a delivery binding for every destination queue.
pub async fn declare_topology(channel: &Channel, queues: &[String], queue_type: QueueType) -> Result<(), BrokerError> {
    let mut destinations: Vec<&str> = queues.iter().map(String::as_str).collect();
    // Next polls and re-queued callbacks go to these, whatever is consumed.
    for q in [topology::SCHEDULE_QUEUE.name, topology::CALLBACK_QUEUE.name] {
        if !destinations.contains(&q) {
            destinations.push(q);
        }
    }
    for name in &destinations {
        if topology::queue(name).is_some() {
            declare_framework_queue(channel, name, queue_type).await?;
        } else {
            declare_queue(channel, name, type_args(queue_type)).await?;
        }
    }
    declare_queue(channel, DEAD_LETTER_QUEUE, type_args(queue_type)).await?;
    declare_delay_topology(channel, &destinations, queue_type).await?;
    if destinations.contains(&topology::NEXT_POLL_QUEUE) {
        // A hand-back left countdowns due for Celerity's queue routed to the
        // framework's; with a Celerity worker back they come home again.
        channel
            .queue_unbind(
                topology::SCHEDULE_QUEUE.name.into(),
                delay::DELIVERY_EXCHANGE.into(),
                delay::delivery_binding(topology::NEXT_POLL_QUEUE).as_str().into(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Hands the next polls waiting in Celerity's queue back to the framework's,
/// for Python workers after Celerity's are stopped (a rollback): countdowns
/// still in the delay queues are routed to `plugin_schedule` from now on, and
/// every message ready in `celerity.schedule` is moved there (published with
/// confirms, then acked). Returns how many were moved. A Celerity worker
/// started later routes countdowns back to its own queue.
pub async fn hand_back(channel: &Channel, publisher: &Publisher) -> Result<u64, BrokerError> {
    let (own, framework) = (topology::NEXT_POLL_QUEUE, topology::SCHEDULE_QUEUE.name);
    let binding = delay::delivery_binding(own);
    channel
        .queue_bind(
            framework.into(),
            delay::DELIVERY_EXCHANGE.into(),
            binding.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_unbind(own.into(), delay::DELIVERY_EXCHANGE.into(), binding.as_str().into(), FieldTable::default())
        .await?;
    let mut moved = 0;
    while let Some(got) = channel.basic_get(own.into(), BasicGetOptions { no_ack: false }).await? {
        let delivery = got.delivery;
        publisher.publish(topology::DEFAULT_EXCHANGE, framework, &delivery.data, delivery.properties.clone()).await?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    Ok(moved)
}

/// Declares `name` as the framework declares its queues (durable,
/// `x-max-priority = 255`, bound to the direct exchange `default` with
/// routing key = queue name), or as a quorum queue with the same binding.
pub async fn declare_framework_queue(channel: &Channel, name: &str, queue_type: QueueType) -> Result<(), BrokerError> {
    declare_exchange(channel, topology::EXCHANGE, ExchangeKind::Direct).await?;
    let mut args = type_args(queue_type);
    if queue_type == QueueType::Classic {
        args.insert(topology::MAX_PRIORITY_ARG.into(), AMQPValue::LongInt(topology::MAX_PRIORITY.into()));
    }
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

/// The level exchanges and TTL queues of [`broker_proto::delay`], and the
/// delivery exchange bound to each destination queue.
async fn declare_delay_topology(
    channel: &Channel,
    destinations: &[&str],
    queue_type: QueueType,
) -> Result<(), BrokerError> {
    declare_exchange(channel, delay::DELIVERY_EXCHANGE, ExchangeKind::Topic).await?;
    for q in destinations {
        channel
            .queue_bind(
                (*q).into(),
                delay::DELIVERY_EXCHANGE.into(),
                delay::delivery_binding(q).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    for n in 0..delay::LEVELS {
        let level = delay::level_name(n);
        let next = delay::next_exchange(n);
        declare_exchange(channel, &level, ExchangeKind::Topic).await?;
        let mut args = type_args(queue_type);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay::level_ttl_ms(n) as i64));
        args.insert("x-dead-letter-exchange".into(), broker_proto::header::text(&next));
        declare_queue(channel, &level, args).await?;
        channel
            .queue_bind(
                level.as_str().into(),
                level.as_str().into(),
                delay::level_binding(n, true).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_bind(
                next.as_str().into(),
                level.as_str().into(),
                delay::level_binding(n, false).as_str().into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

fn type_args(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), broker_proto::header::text("quorum"));
    }
    args
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|source| BrokerError::Topology { what: format!("exchange {name}"), source })
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

    /// Publishes `msg` to the queue `routing_key`: through the delay topology
    /// when its eta is a second or more away, directly otherwise. The
    /// message is the same either way; only when it arrives differs.
    pub async fn publish_task_to_queue(&self, routing_key: &str, msg: &TaskMessage) -> Result<(), BrokerError> {
        let out = encode(msg, Utc::now())?;
        let props = basic_properties(&out.properties)?;
        self.publish_to_queue(routing_key, msg.eta, &out.body, props).await
    }

    /// Publishes a message as it is (body and properties untouched) to the
    /// queue `routing_key`, waiting in the delay topology until `eta`.
    pub async fn publish_to_queue(
        &self,
        routing_key: &str,
        eta: Option<DateTime<FixedOffset>>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let wait = eta.map_or(0, |eta| (eta.with_timezone(&Utc) - Utc::now()).num_milliseconds().max(0) as u64);
        // Whole seconds, to the nearest: the delay queues count in seconds,
        // and what arrives early is waited out in memory (the eta window).
        let delay = (wait + 500) / 1000;
        if delay == 0 || u128::from(wait) <= self.direct_within.as_millis() {
            self.publish(topology::DEFAULT_EXCHANGE, routing_key, body, properties).await
        } else {
            self.publish(&delay::entry_exchange(), &delay::routing_key(delay, routing_key), body, properties).await
        }
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
