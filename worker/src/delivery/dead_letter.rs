//! Messages no task can run go to [`DEAD_LETTER_QUEUE`] with the reason,
//! instead of being dropped or looping.

use broker_proto::header;
use lapin::message::Delivery;

use crate::broker::{BrokerError, DEAD_LETTER_QUEUE, Publish};
use crate::meters;
use crate::tasks::Handled;

/// Header with why the message was dead-lettered.
pub const REASON_HEADER: &str = "x-celerity-dead-reason";
/// Header with the queue (routing key) it came from.
pub const FROM_HEADER: &str = "x-celerity-dead-from";
/// Header with the exchange it was published to.
pub const EXCHANGE_HEADER: &str = "x-celerity-dead-exchange";

/// Copies the delivery, unchanged but for three headers saying why and from
/// where, into the dead-letter queue (confirmed). The caller then acks it.
pub async fn dead_letter(publisher: &impl Publish, delivery: &Delivery, reason: &str) -> Result<Handled, BrokerError> {
    tracing::error!(%reason, "message dead-lettered");
    metrics::counter!(meters::DEAD_LETTERED).increment(1);
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(REASON_HEADER.into(), header::text(reason));
    headers.insert(FROM_HEADER.into(), header::text(delivery.routing_key.as_str()));
    headers.insert(EXCHANGE_HEADER.into(), header::text(delivery.exchange.as_str()));
    // Keep the copy however long it takes an operator to look at it.
    let props = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
    publisher.publish_to_queue(DEAD_LETTER_QUEUE, None, &delivery.data, props).await?;
    Ok(Handled::DeadLettered)
}
