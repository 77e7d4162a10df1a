//! Celery's task message protocol as the BlueKing plugin framework's Python
//! producers speak it over RabbitMQ: decoding deliveries (protocol v2, v1 and
//! the hybrid form), encoding v2 messages Python workers accept, retries the
//! Celery way, and the framework's queue names.
//!
//! Pure: no I/O. The worker converts between its AMQP client's types and
//! [`Properties`]; header values use `amq-protocol-types`, the types lapin is
//! built on.

mod budget;
mod compression;
mod decode;
pub mod delay;
mod encode;
mod error;
pub mod header;
mod message;
pub mod repr;
mod retry;
pub mod time;
pub mod topology;
pub mod trace_context;
mod value;

pub use amq_protocol_types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
pub use budget::DEFAULT_MAX_VALUES;
pub use chrono_tz::Tz;
pub use decode::{DEFAULT_MAX_BODY_BYTES, DecodeOptions, decode};
pub use encode::{Outgoing, PERSISTENT, encode};
pub use error::{DecodeError, EncodeError};
pub use message::{Embed, Properties, Protocol, TaskMessage, TimeLimit};
pub use retry::eta_after;
pub use value::Value;
