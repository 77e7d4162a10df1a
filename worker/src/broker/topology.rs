//! The topology Celerity declares: the framework's queues exactly as Python
//! declares them (or as quorum queues), Celerity's own queues, the
//! dead-letter queue, and the delay topology of [`broker_proto::delay`].

use broker_proto::{AMQPValue, FieldTable, delay, topology};
use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::{Channel, ExchangeKind};

use super::BrokerError;

/// Where undecodable or unroutable-to-a-task messages go, with the reason.
pub const DEAD_LETTER_QUEUE: &str = "celerity.dead";

/// Which kind of queue to declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Classic queues with `x-max-priority = 255`, as the framework declares them.
    Classic,
    /// Quorum queues (`x-queue-type = quorum`), replicated across a cluster.
    Quorum,
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
        declare_destination_queue(channel, name, queue_type).await?;
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

/// Declares one queue the worker consumes or sends to, with its bindings
/// (the framework's exchange for its own queues, the delay topology's
/// delivery exchange for all): what a consumer the broker cancelled needs
/// before it subscribes again.
pub async fn declare_destination(channel: &Channel, name: &str, queue_type: QueueType) -> Result<(), BrokerError> {
    declare_destination_queue(channel, name, queue_type).await?;
    declare_exchange(channel, delay::DELIVERY_EXCHANGE, ExchangeKind::Topic).await?;
    bind_delivery(channel, name).await
}

async fn declare_destination_queue(channel: &Channel, name: &str, queue_type: QueueType) -> Result<(), BrokerError> {
    if topology::queue(name).is_some() {
        declare_framework_queue(channel, name, queue_type).await
    } else {
        declare_queue(channel, name, type_args(queue_type)).await
    }
}

async fn bind_delivery(channel: &Channel, name: &str) -> Result<(), BrokerError> {
    channel
        .queue_bind(
            name.into(),
            delay::DELIVERY_EXCHANGE.into(),
            delay::delivery_binding(name).as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
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
        bind_delivery(channel, q).await?;
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
