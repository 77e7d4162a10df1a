//! What the deliveries of one consumer session share.

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

use crate::broker::{Patient, Publish, Publisher};
use crate::tasks::{Ctx, Store};

/// Built once per session: the worker's shared state, the concurrency
/// slots and the stop signal. The channel is each delivery's own (every
/// queue is consumed on a channel of its own), so it travels with the
/// delivery into [`Incoming`].
pub struct Handler<S = celerity_db::Db, P = Patient<Publisher>> {
    /// The worker's shared state.
    pub ctx: Arc<Ctx<S, P>>,
    /// A task runs holding one of these (`--concurrency`).
    pub permits: Semaphore,
    /// Turns true when the session stops: a delivery waiting for its eta
    /// gives up and is handed back by the channel's close.
    pub stopping: watch::Receiver<bool>,
}

impl<S: Store, P: Publish> Handler<S, P> {
    /// The handler of a session running `concurrency` tasks at once.
    pub fn new(ctx: Arc<Ctx<S, P>>, concurrency: usize, stopping: watch::Receiver<bool>) -> Handler<S, P> {
        Handler { ctx, permits: Semaphore::new(concurrency), stopping }
    }
}
