//! RabbitMQ: reaching it ([`connect`]), declaring the framework's topology
//! with the arguments Python uses ([`topology`]), what a refusal means
//! ([`refusal`]), publishing with confirms ([`publisher`]), and converting
//! AMQP properties ([`properties`]).

pub mod connect;
pub mod patient;
pub mod properties;
pub mod publisher;
pub mod refusal;
pub mod topology;

use std::time::Duration;

use backon::ExponentialBuilder;
use thiserror::Error;

pub use self::connect::BrokerAddr;
pub use self::patient::Patient;
pub use self::properties::PropertyTooLong;
pub use self::publisher::{Publish, Publisher};
pub use self::refusal::Refusal;
pub use self::topology::{
    DEAD_LETTER_QUEUE, Part, QueueKinds, QueueType, declare_framework_queue, declare_part, declare_topology,
};

/// Pauses from `first`, doubling, at most `longest`, never giving up: how
/// the worker tries the broker again, to connect or to publish.
fn doubling(first: Duration, longest: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new().with_min_delay(first).with_max_delay(longest).with_factor(2.0).without_max_times()
}

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
    /// The broker refused to declare, bind or consume for another reason
    /// (a queue's node down, no access, no answer): [`BrokerError::refusal`] says which.
    #[error("cannot declare {what}: {source}")]
    Declare {
        /// Which queue, exchange or binding.
        what: String,
        /// The broker's answer.
        #[source]
        source: lapin::Error,
    },
    /// The broker did not answer a declaration or a consume in time (a
    /// quorum queue without a quorum never answers a consume).
    #[error("no answer from the broker within {within:?} to {what}")]
    NoAnswer {
        /// Which queue, part or consumer.
        what: String,
        /// How long it waited.
        within: Duration,
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

impl BrokerError {
    /// A refused declaration of `what`: with other arguments (406) it is
    /// [`BrokerError::Topology`], whose message says so; anything else is
    /// [`BrokerError::Declare`].
    pub fn declaring(what: impl Into<String>, source: lapin::Error) -> BrokerError {
        let other_arguments = matches!(source.kind(), lapin::ErrorKind::ProtocolError(amqp)
            if refusal::ReplyCode::from_number(amqp.get_id()) == refusal::ReplyCode::PreconditionFailed);
        match other_arguments {
            true => BrokerError::Topology { what: what.into(), source },
            false => BrokerError::Declare { what: what.into(), source },
        }
    }

    /// The broker could not route the message now: it reached no queue, or
    /// a queue refused it (a quorum queue without a quorum). Publishing
    /// again later may work.
    pub fn route_missing(&self) -> bool {
        matches!(self, BrokerError::Unroutable(_) | BrokerError::Nacked(_))
    }

    /// What this error means for a declaration, a binding or a consume,
    /// given whether the connection is still open.
    pub fn refusal(&self, connection_open: bool) -> Refusal {
        match self {
            BrokerError::Topology { source, .. } | BrokerError::Declare { source, .. } | BrokerError::Amqp(source) => {
                refusal::refusal_of(source, connection_open)
            }
            BrokerError::Unreachable { .. } => Refusal::Disconnected,
            // A route through a queue that is down, or a queue without a quorum.
            BrokerError::Nacked(_) | BrokerError::Unroutable(_) | BrokerError::NoAnswer { .. } => Refusal::Unavailable,
            BrokerError::Encode(_) | BrokerError::Property(_) => Refusal::Never,
        }
    }
}
