//! Where a delivery enters and how it ends: [`handle`] decides how it is
//! handled ([`dispatch`]: poison check, decode, route, eta, task) and then
//! settles it ([`settle`]), the one place a delivery is acked or handed back.

pub mod dead_letter;
pub mod decoding;
pub mod dispatch;
pub mod job;
pub mod poison;
pub mod settle;
pub mod tracking;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use lapin::Channel;
use lapin::message::Delivery;
use tokio::sync::{Semaphore, watch};

use crate::tasks::Ctx;

/// Handles one delivery of a running worker, from decoding to settlement
/// on `channel`, the channel it came on.
pub async fn handle(
    ctx: Arc<Ctx>,
    channel: Channel,
    delivery: Delivery,
    permits: Arc<Semaphore>,
    stopping: watch::Receiver<bool>,
) {
    let handled = dispatch::dispatch(&ctx, &delivery, &permits, stopping).await;
    settle::settle(&channel, &delivery, handled).await;
}
