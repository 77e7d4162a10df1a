//! Conversions between lapin's AMQP property type and the protocol crate's
//! [`Properties`], so the protocol crate stays free of the client.

use broker_proto::{Properties, ShortString};
use lapin::BasicProperties;
use thiserror::Error;

/// A property that AMQP cannot carry: short strings hold at most 255 bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("AMQP property {name} is {len} bytes long; at most 255 fit")]
pub struct PropertyTooLong {
    /// The property name.
    pub name: &'static str,
    /// Its length in bytes.
    pub len: usize,
}

/// The Celery-relevant properties of a delivery.
pub fn properties_of(props: &BasicProperties) -> Properties {
    Properties {
        content_type: props.content_type().as_ref().map(|s| s.to_string()),
        content_encoding: props.content_encoding().as_ref().map(|s| s.to_string()),
        correlation_id: props.correlation_id().as_ref().map(|s| s.to_string()),
        reply_to: props.reply_to().as_ref().map(|s| s.to_string()),
        priority: *props.priority(),
        delivery_mode: *props.delivery_mode(),
        expiration: props.expiration().as_ref().map(|s| s.to_string()),
        headers: props.headers().clone().unwrap_or_default(),
    }
}

/// lapin properties for publishing a message with these properties.
pub fn basic_properties(props: &Properties) -> Result<BasicProperties, PropertyTooLong> {
    fn short(name: &'static str, value: &str) -> Result<ShortString, PropertyTooLong> {
        ShortString::try_new(value).map_err(|_| PropertyTooLong { name, len: value.len() })
    }
    let mut out = BasicProperties::default().with_headers(props.headers.clone());
    if let Some(v) = &props.content_type {
        out = out.with_content_type(short("content_type", v)?);
    }
    if let Some(v) = &props.content_encoding {
        out = out.with_content_encoding(short("content_encoding", v)?);
    }
    if let Some(v) = &props.correlation_id {
        out = out.with_correlation_id(short("correlation_id", v)?);
    }
    if let Some(v) = &props.reply_to {
        out = out.with_reply_to(short("reply_to", v)?);
    }
    if let Some(v) = props.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = props.delivery_mode {
        out = out.with_delivery_mode(v);
    }
    if let Some(v) = &props.expiration {
        out = out.with_expiration(short("expiration", v)?);
    }
    Ok(out)
}

/// Properties of a kombu JSON message that need not survive a broker restart
/// (events, remote-control replies): JSON in UTF-8, transient, `headers`.
pub fn json_transient(headers: lapin::types::FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding(ShortString::from("utf-8"))
        .with_delivery_mode(1)
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip_through_lapin() {
        let mut props = Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            correlation_id: Some("id".into()),
            reply_to: Some("r".into()),
            priority: Some(9),
            delivery_mode: Some(2),
            expiration: Some("1000".into()),
            headers: Default::default(),
        };
        props.headers.insert("task".into(), broker_proto::header::text("t"));
        assert_eq!(properties_of(&basic_properties(&props).unwrap()), props);
    }

    #[test]
    fn overlong_short_strings_are_errors() {
        let props = Properties { correlation_id: Some("x".repeat(256)), ..Properties::default() };
        assert_eq!(basic_properties(&props).unwrap_err(), PropertyTooLong { name: "correlation_id", len: 256 });
    }
}
