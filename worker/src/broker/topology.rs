//! The topology Celerity declares: the framework's queues exactly as Python
//! declares them (or as quorum queues), Celerity's own queues (next polls,
//! the delay levels of [`broker_proto::delay`], dead letters), classic or
//! quorum on their own, so that on a cluster everything after a schedule's
//! first message can live in replicated queues. A worker declares it in
//! [`Part`]s, each on a channel of its own, so that a queue the broker
//! cannot serve now holds back only itself.
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

/// A piece of the topology that is declared on a channel of its own: a
/// refusal (a classic queue whose node is down answers 404 and closes the
/// channel) holds back that piece alone, and the worker goes on with the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A queue the worker consumes or sends to, with its bindings: the
    /// framework's exchange for the framework's queues, the delay
    /// topology's delivery exchange for all.
    Destination(String),
    /// The dead-letter queue, [`DEAD_LETTER_QUEUE`].
    DeadLetters,
    /// The level exchanges and queues of [`broker_proto::delay`].
    DelayLevels,
    /// After a hand-back, countdowns due for Celerity's next-poll queue were
    /// routed to the framework's schedule queue; with a Celerity worker back
    /// they come home again: that binding is removed.
    NextPollsHome,
}

impl Part {
    /// The name in logs, on `/healthz` and in metric labels.
    pub fn name(&self) -> String {
        match self {
            Part::Destination(queue) => queue.clone(),
            Part::DeadLetters => DEAD_LETTER_QUEUE.to_owned(),
            Part::DelayLevels => "celerity.delay".to_owned(),
            Part::NextPollsHome => {
                format!("{} (unbind from {})", topology::SCHEDULE_QUEUE.name, delay::DELIVERY_EXCHANGE)
            }
        }
    }

    /// The queue a consumer of this part reads, if it is one.
    pub fn queue(&self) -> Option<&str> {
        match self {
            Part::Destination(queue) => Some(queue),
            Part::DeadLetters | Part::DelayLevels | Part::NextPollsHome => None,
        }
    }
}

/// The parts a worker consuming `queues` declares: each queue, the queues
/// next polls and re-queued callbacks go to whatever is consumed, the
/// dead-letter queue and the delay levels.
pub fn parts(queues: &[String]) -> Vec<Part> {
    let mut destinations: Vec<&str> = queues.iter().map(String::as_str).collect();
    for q in [topology::SCHEDULE_QUEUE.name, topology::CALLBACK_QUEUE.name] {
        if !destinations.contains(&q) {
            destinations.push(q);
        }
    }
    let takes_next_polls = destinations.contains(&topology::NEXT_POLL_QUEUE);
    let mut parts: Vec<Part> = destinations.into_iter().map(|q| Part::Destination(q.to_owned())).collect();
    parts.extend([Part::DeadLetters, Part::DelayLevels]);
    if takes_next_polls {
        parts.push(Part::NextPollsHome);
    }
    parts
}

/// Declares what a worker consuming `queues` consumes and publishes to, all
/// on `channel`, stopping at the first refusal: for tools and tests that
/// need the whole topology at once. A worker declares [`parts`] one by one.
pub async fn declare_topology(
    channel: &Channel,
    queues: &[String],
    kinds: impl Into<QueueKinds>,
) -> Result<(), BrokerError> {
    let kinds = kinds.into();
    for part in parts(queues) {
        declare_part(channel, &part, kinds).await?;
    }
    Ok(())
}

/// Declares one part of the topology on `channel`.
pub async fn declare_part(channel: &Channel, part: &Part, kinds: QueueKinds) -> Result<(), BrokerError> {
    match part {
        Part::Destination(name) => {
            if topology::queue(name).is_some() {
                declare_framework_queue(channel, name, kinds).await?;
            } else {
                declare_queue(channel, name, kinds.args(name)).await?;
            }
            declare_exchange(channel, delay::DELIVERY_EXCHANGE, ExchangeKind::Topic).await?;
            bind(channel, name, delay::DELIVERY_EXCHANGE, &delay::delivery_binding(name)).await
        }
        Part::DeadLetters => declare_queue(channel, DEAD_LETTER_QUEUE, kinds.args(DEAD_LETTER_QUEUE)).await,
        Part::DelayLevels => declare_delay_levels(channel, kinds).await,
        Part::NextPollsHome => channel
            .queue_unbind(
                topology::SCHEDULE_QUEUE.name.into(),
                delay::DELIVERY_EXCHANGE.into(),
                delay::delivery_binding(topology::NEXT_POLL_QUEUE).as_str().into(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::declaring(part.name(), source)),
    }
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), BrokerError> {
    channel
        .queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .map_err(|source| BrokerError::declaring(format!("binding of queue {queue} to {exchange}"), source))
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
    bind(channel, name, topology::EXCHANGE, name).await
}

/// The level exchanges and TTL queues of [`broker_proto::delay`], each
/// level dead-lettering to the next and the last to the delivery exchange.
async fn declare_delay_levels(channel: &Channel, kinds: QueueKinds) -> Result<(), BrokerError> {
    declare_exchange(channel, delay::DELIVERY_EXCHANGE, ExchangeKind::Topic).await?;
    for n in 0..delay::LEVELS {
        let level = delay::level_name(n);
        let next = delay::next_exchange(n);
        declare_exchange(channel, &level, ExchangeKind::Topic).await?;
        let mut args = kinds.args(&level);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay::level_ttl_ms(n) as i64));
        args.insert("x-dead-letter-exchange".into(), broker_proto::header::text(&next));
        declare_queue(channel, &level, args).await?;
        bind(channel, &level, &level, &delay::level_binding(n, true)).await?;
        channel
            .exchange_bind(
                next.as_str().into(),
                level.as_str().into(),
                delay::level_binding(n, false).as_str().into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::declaring(format!("binding of exchange {next} to {level}"), source))?;
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
        .map_err(|source| BrokerError::declaring(format!("exchange {name}"), source))
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), BrokerError> {
    channel
        .queue_declare(name.into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .map(|_| ())
        .map_err(|source| BrokerError::declaring(format!("queue {name}"), source))
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

    #[test]
    fn each_queue_is_a_part_of_its_own_beside_the_dead_letters_and_the_delay_levels() {
        let queues: Vec<String> = ["plugin_schedule", "schedule_delete", "celerity.schedule"].map(String::from).into();
        let names: Vec<String> = parts(&queues).iter().map(Part::name).collect();
        assert_eq!(
            names,
            [
                "plugin_schedule",
                "schedule_delete",
                "celerity.schedule",
                "plugin_callback",
                "celerity.dead",
                "celerity.delay",
                "plugin_schedule (unbind from celerity.delay.delivery)",
            ],
            "re-queued callbacks need plugin_callback whatever is consumed"
        );
        assert_eq!(parts(&queues)[0].queue(), Some("plugin_schedule"));
        assert_eq!(Part::DelayLevels.queue(), None);
        // Next polls on the framework's queue (a hand-back's setting): nothing to unbind.
        let framework_only = parts(&["plugin_schedule".to_owned()]);
        assert!(!framework_only.contains(&Part::NextPollsHome));
    }
}
