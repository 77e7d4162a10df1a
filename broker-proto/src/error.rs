//! Why a delivery could not be read as a Celery task, or a task could not be
//! written as one. Every message names the field at fault so an operator can
//! find the producer that sent it.

use thiserror::Error;

/// A delivery that is not a Celery task this crate can run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DecodeError {
    /// Pickle, yaml, msgpack and the like are refused: only JSON is read, and
    /// pickle is never deserialised because it runs code.
    #[error("unsupported content type {0:?}: only application/json is accepted")]
    UnsupportedContentType(String),
    /// The body claims a text encoding other than UTF-8.
    #[error("unsupported content encoding {0:?}: only utf-8 is accepted")]
    UnsupportedContentEncoding(String),
    /// The `compression` header names a codec this crate does not inflate.
    #[error("unsupported compression {0:?}: only zlib and gzip are accepted")]
    UnsupportedCompression(String),
    /// The compressed body is corrupt.
    #[error("compressed body cannot be inflated: {0}")]
    Inflate(String),
    /// The body (before or after inflating) is larger than the configured cap.
    #[error("body is larger than the {limit} byte limit")]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The body holds more JSON values than the configured cap.
    #[error("body holds more than {limit} JSON values")]
    TooManyValues {
        /// The cap in values.
        limit: usize,
    },
    /// The body bytes are not UTF-8 text.
    #[error("body is not valid UTF-8: {0}")]
    NotUtf8(String),
    /// The body is not JSON at all.
    #[error("body is not valid JSON: {0}")]
    Json(String),
    /// A kombu `{"__type__", "__value__"}` marker that cannot be read.
    #[error("bad kombu {kind:?} value {value}: {reason}")]
    BadMarker {
        /// The marker's `__type__`.
        kind: String,
        /// The marker's `__value__`, as JSON text.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The body JSON has the wrong shape for the protocol in use.
    #[error("body has the wrong shape: {0}")]
    BodyShape(String),
    /// A required field (task name, task id) is absent.
    #[error("message has no {0}")]
    Missing(&'static str),
    /// A header or body field has a value of the wrong type or range.
    #[error("field {field:?} is invalid: {reason}")]
    InvalidField {
        /// The header or body key.
        field: String,
        /// What was expected and what was found.
        reason: String,
    },
    /// A date-time field is not ISO-8601, or names a local time that does not exist.
    #[error("field {field:?} is not a usable ISO-8601 time ({value:?}): {reason}")]
    BadTime {
        /// The header or body key.
        field: String,
        /// The text as received.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl DecodeError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        DecodeError::InvalidField { field: field.to_owned(), reason: reason.into() }
    }
}

/// A task that cannot be published in a form Python workers read correctly.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EncodeError {
    /// A header value py-amqp would misread, with no lossless safe form.
    #[error("header {name:?} cannot be sent safely to Python consumers: {reason}")]
    UnsafeHeader {
        /// The header key (dotted path for nested tables).
        name: String,
        /// Why no safe form exists.
        reason: String,
    },
}
