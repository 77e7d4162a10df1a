//! What the broker's refusal of a declaration, a binding or a consume means
//! for the worker: wait for the queue, reconnect, or stop. Each AMQP 0-9-1
//! reply code is decided in one exhaustive match ([`ReplyCode::refusal`]),
//! as `MysqlCode::class` decides each MySQL error.
//!
//! Seen on RabbitMQ 3.10 with a classic queue's home node down: declare,
//! passive declare, bind and consume all answer `404 NOT_FOUND - home node
//! ... is down or inaccessible` (closing the channel), and a mandatory
//! publish comes back `312 NO_ROUTE`. A quorum queue without a quorum
//! declares and binds, but `basic.consume` never answers and a publish is
//! nacked: hence the timeout on every step.

use lapin::ErrorKind;

/// What a refused step means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue cannot be used now (its node down, no quorum, no answer
    /// in time): try it again on its own, keep everything else running.
    Unavailable,
    /// It can never succeed as configured (other arguments, no access):
    /// the worker stops with the broker's reason.
    Never,
    /// The connection itself is gone: the session ends and the worker
    /// reconnects.
    Disconnected,
}

/// The reply codes of AMQP 0-9-1 (the spec's constants), and any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    /// 311: a message too large for the server.
    ContentTooLarge,
    /// 312: a mandatory message reached no queue (RabbitMQ: also a queue whose node is down).
    NoRoute,
    /// 313: an immediate message found no consumer.
    NoConsumers,
    /// 320: an operator or the server closed the connection.
    ConnectionForced,
    /// 402: no such virtual host.
    InvalidPath,
    /// 403: the user may not do this.
    AccessRefused,
    /// 404: no such entity (RabbitMQ: also a durable classic queue whose home node is down).
    NotFound,
    /// 405: another connection holds an exclusive queue.
    ResourceLocked,
    /// 406: the entity exists with other arguments (or an ack of an unknown tag).
    PreconditionFailed,
    /// 501: a malformed frame.
    FrameError,
    /// 502: a frame with bad field values.
    SyntaxError,
    /// 503: a method not allowed now.
    CommandInvalid,
    /// 504: a channel not open.
    ChannelError,
    /// 505: a frame not expected now.
    UnexpectedFrame,
    /// 506: the server is out of a resource (channels, memory).
    ResourceError,
    /// 530: not allowed (RabbitMQ: vhost access refused, an argument it rejects).
    NotAllowed,
    /// 540: a feature the server does not have.
    NotImplemented,
    /// 541: the server failed inside.
    InternalError,
    /// A number the spec does not name.
    Other(u16),
}

impl ReplyCode {
    /// The code for a reply number.
    pub fn from_number(n: u16) -> ReplyCode {
        use ReplyCode::*;
        match n {
            311 => ContentTooLarge,
            312 => NoRoute,
            313 => NoConsumers,
            320 => ConnectionForced,
            402 => InvalidPath,
            403 => AccessRefused,
            404 => NotFound,
            405 => ResourceLocked,
            406 => PreconditionFailed,
            501 => FrameError,
            502 => SyntaxError,
            503 => CommandInvalid,
            504 => ChannelError,
            505 => UnexpectedFrame,
            506 => ResourceError,
            530 => NotAllowed,
            540 => NotImplemented,
            541 => InternalError,
            other => Other(other),
        }
    }

    /// What this reply to a declaration, a binding or a consume means.
    pub fn refusal(self) -> Refusal {
        use ReplyCode::*;
        match self {
            // The queue, for now: its node is down, another connection
            // holds it, a route through it is missing. Trying again later may work.
            NoRoute | NoConsumers | NotFound | ResourceLocked => Refusal::Unavailable,
            // The configuration against what exists: other arguments, no
            // permission, no vhost, something this broker will not do.
            // Trying again gives the same answer.
            PreconditionFailed | AccessRefused | InvalidPath | NotAllowed | NotImplemented | ContentTooLarge => {
                Refusal::Never
            }
            // Connection-level errors close the connection: a new one starts afresh.
            ConnectionForced | FrameError | SyntaxError | CommandInvalid | ChannelError | UnexpectedFrame
            | ResourceError | InternalError => Refusal::Disconnected,
            // A code no spec names: assume it passes, as an unknown MySQL code does.
            Other(_) => Refusal::Unavailable,
        }
    }
}

/// What a failed step means, given whether the connection is still open.
pub fn refusal_of(error: &lapin::Error, connection_open: bool) -> Refusal {
    if !connection_open {
        return Refusal::Disconnected;
    }
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => ReplyCode::from_number(amqp.get_id()).refusal(),
        // The step's channel closed (by an earlier refusal) or ran out of
        // numbers, with the connection up: a fresh channel may do.
        ErrorKind::InvalidChannel(_) | ErrorKind::InvalidChannelState(..) | ErrorKind::ChannelsLimitReached => {
            Refusal::Unavailable
        }
        ErrorKind::InvalidConnectionState(_)
        | ErrorKind::IOError(_)
        | ErrorKind::RuntimeShutdownError(_)
        | ErrorKind::ParsingError(_)
        | ErrorKind::SerialisationError(_)
        | ErrorKind::MissingHeartbeatError => Refusal::Disconnected,
        ErrorKind::InvalidProtocolVersion(_) | ErrorKind::AuthProviderError(_) | ErrorKind::NoDefaultRuntime => {
            Refusal::Never
        }
        // Our own misuse of a confirm future; nothing to learn about the queue.
        ErrorKind::FutureCompleted => Refusal::Unavailable,
        // lapin's kinds are non-exhaustive: one added later starts afresh
        // on a new connection rather than stopping the worker.
        _ => Refusal::Disconnected,
    }
}

#[cfg(test)]
mod tests {
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPHardError, AMQPSoftError};

    use super::*;

    fn protocol(kind: AMQPErrorKind) -> lapin::Error {
        ErrorKind::ProtocolError(AMQPError::new(kind, "from the broker".into())).into()
    }

    #[test]
    fn a_queue_whose_node_is_down_is_waited_for() {
        for code in [312, 313, 404, 405] {
            assert_eq!(ReplyCode::from_number(code).refusal(), Refusal::Unavailable, "{code}");
        }
        let home_down = protocol(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND));
        assert_eq!(refusal_of(&home_down, true), Refusal::Unavailable);
    }

    #[test]
    fn other_arguments_or_no_access_stop_the_worker() {
        for code in [311, 402, 403, 406, 530, 540] {
            assert_eq!(ReplyCode::from_number(code).refusal(), Refusal::Never, "{code}");
        }
        let inequivalent = protocol(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED));
        assert_eq!(refusal_of(&inequivalent, true), Refusal::Never);
        let vhost = protocol(AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED));
        assert_eq!(refusal_of(&vhost, true), Refusal::Never);
    }

    #[test]
    fn connection_level_codes_reconnect() {
        for code in [320, 501, 502, 503, 504, 505, 506, 541] {
            assert_eq!(ReplyCode::from_number(code).refusal(), Refusal::Disconnected, "{code}");
        }
        let forced = protocol(AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED));
        assert_eq!(refusal_of(&forced, true), Refusal::Disconnected);
    }

    #[test]
    fn a_code_no_spec_names_is_waited_for() {
        assert_eq!(ReplyCode::from_number(999), ReplyCode::Other(999));
        assert_eq!(ReplyCode::Other(999).refusal(), Refusal::Unavailable);
    }

    #[test]
    fn every_spec_code_round_trips_through_its_number() {
        let named = [311, 312, 313, 320, 402, 403, 404, 405, 406, 501, 502, 503, 504, 505, 506, 530, 540, 541];
        for n in named {
            assert!(!matches!(ReplyCode::from_number(n), ReplyCode::Other(_)), "{n} is a spec code");
        }
    }

    #[test]
    fn anything_on_a_closed_connection_reconnects_and_a_closed_channel_waits() {
        let refused = protocol(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED));
        assert_eq!(refusal_of(&refused, false), Refusal::Disconnected, "the connection went first");
        let io: lapin::Error = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert_eq!(refusal_of(&io, true), Refusal::Disconnected);
        let closed: lapin::Error = ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "queue.declare").into();
        assert_eq!(refusal_of(&closed, true), Refusal::Unavailable);
        let heartbeat: lapin::Error = ErrorKind::MissingHeartbeatError.into();
        assert_eq!(refusal_of(&heartbeat, true), Refusal::Disconnected);
    }
}
