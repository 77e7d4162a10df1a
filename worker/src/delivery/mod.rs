//! Where a delivery enters and how it ends. A [`Handler`] holds what the
//! deliveries of one consumer session share; each delivery becomes an
//! [`Incoming`], whose methods are the stages: poison check, decode, route,
//! wait for the eta, run ([`incoming`]); [`handle`] then settles it
//! ([`settle`]), the one place a delivery is acked or handed back.

pub mod dead_letter;
pub mod decoding;
pub mod handler;
pub mod incoming;
pub mod job;
pub mod poison;
pub mod settle;
pub mod tracking;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use lapin::message::Delivery;

pub use self::handler::Handler;
pub use self::incoming::Incoming;
pub use self::settle::Settle;
use crate::broker::Publish;
use crate::tasks::Store;

/// Handles one delivery of `handler`'s session, from decoding to settlement
/// on `channel`, the channel it came on.
pub async fn handle<S: Store, P: Publish>(handler: Arc<Handler<S, P>>, channel: impl Settle, delivery: Delivery) {
    let incoming = Incoming::new(&handler, delivery);
    let handled = incoming.dispatch().await;
    settle::settle(&channel, incoming.delivery.delivery_tag, handled).await;
}
