//! The topology Celerity declares: the framework's queues exactly as Python
//! declares them (or as quorum queues), Celerity's own queues (next polls,
//! the delay levels of [`broker_proto::delay`], dead letters), classic or
//! quorum on their own, so that on a cluster everything after a schedule's
//! first message can live in replicated queues.
//!
//! RabbitMQ 4.x: every queue declared here is durable (4.3 refuses transient
//! non-exclusive ones), and quorum queues carry `x-delivery-limit` equal to
//! `--max-deliveries` (4.x would apply 20 otherwise).

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

/// Deliveries of a message before it counts as poison, when nothing else is said.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 10;

/// How the worker declares queues: the framework's (`--queue-type`),
/// Celerity's own (`--celerity-queue-type`), and the delivery limit of the
/// quorum ones (`--max-deliveries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueKinds {
    /// `plugin_schedule`, `plugin_callback`, `schedule_delete`.
    pub framework: QueueType,
    /// Every other queue: `celerity.schedule`, the delay levels,
    /// `celerity.dead`, and consumed queues the framework does not name.
    pub own: QueueType,
    /// `x-delivery-limit` of the quorum queues.
    pub delivery_limit: u32,
}

impl From<QueueType> for QueueKinds {
    /// Every queue of one type, with the default delivery limit.
    fn from(queue_type: QueueType) -> QueueKinds {
        QueueKinds { framework: queue_type, own: queue_type, delivery_limit: DEFAULT_DELIVERY_LIMIT }
    }
}

impl QueueKinds {
    /// The arguments `name` is declared with: a framework queue as Python
    /// declares it (`x-max-priority = 255`) or as a quorum queue, any other
    /// as Celery declares its default queue or as a quorum queue.
    pub fn args(&self, name: &str) -> FieldTable {
        if topology::queue(name).is_some() { self.framework_args() } else { self.type_args(self.own) }
    }

    /// The arguments of a queue declared as the framework declares its own.
    pub fn framework_args(&self) -> FieldTable {
        let mut args = self.type_args(self.framework);
        if self.framework == QueueType::Classic {
            args.insert(topology::MAX_PRIORITY_ARG.into(), AMQPValue::LongInt(topology::MAX_PRIORITY.into()));
        }
        args
    }

    fn type_args(&self, queue_type: QueueType) -> FieldTable {
        let mut args = FieldTable::default();
        if queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), broker_proto::header::text("quorum"));
            let limit = i32::try_from(self.delivery_limit).unwrap_or(i32::MAX);
            args.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
        }
        args
    }
}

/// Declares what the worker consumes and publishes to: the framework's
/// queues as Python declares them (or as quorum queues), other queues as
/// Celery declares its default queue, the dead-letter queue, and the delay
/// topology with a delivery binding for every destination queue.
pub async fn declare_topology(
    channel: &Channel,
    queues: &[String],
    kinds: impl Into<QueueKinds>,
) -> Result<(), BrokerError> {
    let kinds = kinds.into();
    let mut destinations: Vec<&str> = queues.iter().map(String::as_str).collect();
    // Next polls and re-queued callbacks go to these, whatever is consumed.
    for q in [topology::SCHEDULE_QUEUE.name, topology::CALLBACK_QUEUE.name] {
        if !destinations.contains(&q) {
            destinations.push(q);
        }
    }
    for name in &destinations {
        declare_destination_queue(channel, name, kinds).await?;
    }
    declare_queue(channel, DEAD_LETTER_QUEUE, kinds.args(DEAD_LETTER_QUEUE)).await?;
    declare_delay_topology(channel, &destinations, kinds).await?;
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
pub async fn declare_destination(channel: &Channel, name: &str, kinds: QueueKinds) -> Result<(), BrokerError> {
    declare_destination_queue(channel, name, kinds).await?;
    declare_exchange(channel, delay::DELIVERY_EXCHANGE, ExchangeKind::Topic).await?;
    bind_delivery(channel, name).await
}

async fn declare_destination_queue(channel: &Channel, name: &str, kinds: QueueKinds) -> Result<(), BrokerError> {
    if topology::queue(name).is_some() {
        declare_framework_queue(channel, name, kinds).await
    } else {
        declare_queue(channel, name, kinds.args(name)).await
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
pub async fn declare_framework_queue(
    channel: &Channel,
    name: &str,
    kinds: impl Into<QueueKinds>,
) -> Result<(), BrokerError> {
    declare_exchange(channel, topology::EXCHANGE, ExchangeKind::Direct).await?;
    declare_queue(channel, name, kinds.into().framework_args()).await?;
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
    kinds: QueueKinds,
) -> Result<(), BrokerError> {
    declare_exchange(channel, delay::DELIVERY_EXCHANGE, ExchangeKind::Topic).await?;
    for q in destinations {
        bind_delivery(channel, q).await?;
    }
    for n in 0..delay::LEVELS {
        let level = delay::level_name(n);
        let next = delay::next_exchange(n);
        declare_exchange(channel, &level, ExchangeKind::Topic).await?;
        let mut args = kinds.args(&level);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(args: &FieldTable, key: &str) -> Option<String> {
        args.inner().get(key).and_then(broker_proto::header::as_text).map(str::to_owned)
    }

    fn int(args: &FieldTable, key: &str) -> Option<i64> {
        args.inner().get(key).and_then(broker_proto::header::as_int)
    }

    #[test]
    fn framework_queues_stay_as_python_declares_them_while_our_own_are_quorum() {
        let kinds = QueueKinds { framework: QueueType::Classic, own: QueueType::Quorum, delivery_limit: 7 };
        let framework = kinds.args(topology::SCHEDULE_QUEUE.name);
        assert_eq!(int(&framework, topology::MAX_PRIORITY_ARG), Some(255));
        assert_eq!(text(&framework, "x-queue-type"), None);
        assert_eq!(int(&framework, "x-delivery-limit"), None, "classic queues have no delivery limit");
        for own in [topology::NEXT_POLL_QUEUE, DEAD_LETTER_QUEUE, delay::level_name(3).as_str(), "my_queue"] {
            let args = kinds.args(own);
            assert_eq!(text(&args, "x-queue-type").as_deref(), Some("quorum"), "{own}");
            assert_eq!(int(&args, "x-delivery-limit"), Some(7), "{own}: RabbitMQ 4 would apply 20");
            assert_eq!(int(&args, topology::MAX_PRIORITY_ARG), None, "{own}");
        }
    }

    #[test]
    fn one_type_for_all_keeps_the_old_meaning_of_queue_type() {
        let quorum = QueueKinds::from(QueueType::Quorum);
        let args = quorum.args(topology::CALLBACK_QUEUE.name);
        assert_eq!(text(&args, "x-queue-type").as_deref(), Some("quorum"));
        assert_eq!(int(&args, "x-delivery-limit"), Some(i64::from(DEFAULT_DELIVERY_LIMIT)));
        assert_eq!(int(&args, topology::MAX_PRIORITY_ARG), None, "quorum queues have no priorities");
        let classic = QueueKinds::from(QueueType::Classic);
        assert!(classic.args(topology::NEXT_POLL_QUEUE).inner().is_empty(), "as Celery declares its default queue");
        // Any queue declared the framework's way gets its arguments, whatever its name.
        assert_eq!(int(&classic.framework_args(), topology::MAX_PRIORITY_ARG), Some(255));
    }
}
