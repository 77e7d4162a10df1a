//! A delivery's body read as a task, with memory bounded: the byte and
//! value caps hold inside [`broker_proto::decode`], and a body over
//! [`LARGE_BODY`] bytes decodes off the runtime threads and one at a time,
//! so the prefetch's worth of large bodies never parses at once.

use broker_proto::{DecodeError, DecodeOptions, TaskMessage};
use lapin::message::Delivery;
use tokio::sync::Semaphore;

use crate::broker::properties::properties_of;

/// Bodies above this size take the one large-decoding slot. The framework's
/// messages are a few hundred bytes.
pub const LARGE_BODY: usize = 1024 * 1024;

static LARGE_DECODES: Semaphore = Semaphore::const_new(1);

/// Decodes `delivery`, waiting for the large-decoding slot if it is large.
pub async fn decode(delivery: &Delivery, opts: DecodeOptions) -> Result<TaskMessage, DecodeError> {
    let props = properties_of(&delivery.properties);
    if delivery.data.len() <= LARGE_BODY {
        return broker_proto::decode(&props, &delivery.data, &opts);
    }
    let _slot = LARGE_DECODES.acquire().await.expect("the large-decoding slot is never closed");
    let body = delivery.data.clone();
    match tokio::task::spawn_blocking(move || broker_proto::decode(&props, &body, &opts)).await {
        Ok(decoded) => decoded,
        // Decoding never panics; were it to, the panic stays a panic.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
