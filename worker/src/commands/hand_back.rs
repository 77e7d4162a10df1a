//! `celerity hand-back`: Celerity's next polls go back to the framework's
//! queue, for Python workers after Celerity's are stopped (a rollback).

use broker_proto::{FieldTable, delay, topology};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::{Channel, Connection};

use crate::broker::{BrokerError, Publisher, connect};
use crate::config::DEFAULT_ETA_WINDOW;
use crate::config::flags::{BrokerFlags, HandBackArgs};

/// Moves the next polls and says how many.
pub async fn run(args: HandBackArgs) -> Result<String, String> {
    let (conn, publisher) = connect_publisher(&args.broker).await?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    // A deployment whose workers predate the countdown queue has none: a
    // passive declare on a channel of its own (a 404 closes it) tells.
    let probe = conn.create_channel().await.map_err(|e| e.to_string())?;
    let countdowns = probe
        .queue_declare(
            topology::COUNTDOWN_QUEUE.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .is_ok();
    let moved = hand_back(&channel, &publisher, countdowns).await.map_err(|e| e.to_string())?;
    let _ = conn.close(200, "hand-back done".into()).await;
    Ok(format!("{moved} next poll(s) moved to plugin_schedule; countdowns still waiting will arrive there"))
}

/// Countdowns still in the delay queues are routed to `plugin_schedule` from
/// now on, and every message ready in `celerity.schedule` (and in
/// `celerity.countdown` when `countdowns`: it exists) is moved there,
/// published with confirms, then acked; Python workers hold a countdown's
/// eta in memory as Celery does. Returns how many were moved. A Celerity
/// worker started later routes countdowns back to its own queue.
pub async fn hand_back(channel: &Channel, publisher: &Publisher, countdowns: bool) -> Result<u64, BrokerError> {
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
    let queues = if countdowns { vec![own, topology::COUNTDOWN_QUEUE] } else { vec![own] };
    for queue in queues {
        while let Some(got) = channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await? {
            let delivery = got.delivery;
            publisher
                .publish(topology::DEFAULT_EXCHANGE, framework, &delivery.data, delivery.properties.clone())
                .await?;
            delivery.acker.ack(BasicAckOptions::default()).await?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// A connection to the broker the flags name, and a confirm-mode publisher on it.
pub async fn connect_publisher(flags: &BrokerFlags) -> Result<(Connection, Publisher), String> {
    connect::connect_publisher(&flags.addr()?, flags.broker_wait.0, DEFAULT_ETA_WINDOW).await
}
