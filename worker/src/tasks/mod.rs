//! The three tasks of the framework (`schedule`, `callback`, `delete`) and
//! what they share: one poll run against the store, retries after transient
//! database errors, and the FAIL fallback.
//!
//! Guarantee: a schedule in POLL always has a message in flight. A poll's
//! delivery is acked only after its update is committed and the message it
//! causes (next poll, retry) is confirmed. When retries run out or an error is
//! fatal, the FAIL write is attempted; if the database refuses it for a
//! transient reason, the message is re-published with the pending FAIL in a
//! header and the write is tried again when it is due, for as long as it
//! takes. Only then is the delivery acked.

pub mod callback;
pub mod context;
pub mod decide;
pub mod delete;
pub mod failure;
pub mod handled;
pub mod headers;
pub mod messages;
pub mod parking;
pub mod poll;
pub mod stop;
pub mod store;

#[cfg(test)]
pub(crate) mod fakes;
#[cfg(test)]
mod tests;

use broker_proto::TaskMessage;

pub use self::context::Ctx;
pub use self::handled::{Handled, Settlement};
pub use self::store::Store;
use crate::broker::Publish;

/// Where a delivery came from: retries go back to the same queue.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The queue (routing key) it was delivered for, with any delay bits removed.
    pub queue: String,
    /// Whether an earlier delivery of this message did not complete (a worker
    /// died or handed it back), so its effects may be half done.
    pub redelivered: bool,
}

/// One task message being handled: the worker's shared state, where the
/// message came from, and the message. Every step of a task is a method.
pub struct Task<'a, S, P> {
    /// The worker's shared state.
    pub ctx: &'a Ctx<S, P>,
    /// Where the message came from.
    pub origin: &'a Origin,
    /// The message.
    pub msg: &'a TaskMessage,
}

impl<S, P> Clone for Task<'_, S, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, P> Copy for Task<'_, S, P> {}

impl<'a, S: Store, P: Publish> Task<'a, S, P> {
    /// The same task, carrying `msg` from now on (a copy with a header added).
    pub fn with_message<'b>(&self, msg: &'b TaskMessage) -> Task<'b, S, P>
    where
        'a: 'b,
    {
        Task { ctx: self.ctx, origin: self.origin, msg }
    }
}
