//! RabbitMQ: reaching it ([`connect`]), declaring the framework's topology
//! with the arguments Python uses ([`topology`]), publishing with confirms
//! ([`publisher`]), and converting AMQP properties ([`properties`]).

pub mod connect;
pub mod properties;
pub mod publisher;
pub mod topology;

use std::time::Duration;

use thiserror::Error;

pub use self::connect::BrokerAddr;
pub use self::properties::PropertyTooLong;
pub use self::publisher::{Publish, Publisher};
pub use self::topology::{
    DEAD_LETTER_QUEUE, QueueKinds, QueueType, declare_destination, declare_framework_queue, declare_topology,
};

/// Everything that can go wrong with the broker.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// Start-up could not connect within the configured wait.
    #[error("cannot reach the broker at {url} within {waited:?}: {last_error}")]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// How long start-up tried.
        waited: Duration,
        /// The last connection error, or that no attempt ended in time.
        last_error: String,
    },
    /// A queue or exchange exists with other arguments (406 PRECONDITION_FAILED).
    #[error(
        "cannot declare {what}: {source} (it exists with other arguments: the framework's queues are classic with x-max-priority = 255 unless --queue-type says quorum; a queue's type, and a quorum queue's x-delivery-limit = --max-deliveries, cannot change once it is declared)"
    )]
    Topology {
        /// Which queue or exchange.
        what: String,
        /// The broker's answer.
        #[source]
        source: lapin::Error,
    },
    /// Any other AMQP failure.
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker nacked a publish: it did not take the message.
    #[error("the broker refused the message to {0}")]
    Nacked(String),
    /// The message reached no queue.
    #[error("the message to {0} reached no queue")]
    Unroutable(String),
    /// The message cannot be encoded for Python consumers.
    #[error(transparent)]
    Encode(#[from] broker_proto::EncodeError),
    /// A property too long for AMQP.
    #[error(transparent)]
    Property(#[from] PropertyTooLong),
}
