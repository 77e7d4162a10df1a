//! Conversions between lapin's AMQP property type and the protocol crate's
//! [`Properties`], so the protocol crate stays free of the client.

use broker_proto::Properties;
use lapin::BasicProperties;

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
pub fn basic_properties(props: &Properties) -> BasicProperties {
    let mut out = BasicProperties::default().with_headers(props.headers.clone());
    if let Some(v) = &props.content_type {
        out = out.with_content_type(v.as_str().into());
    }
    if let Some(v) = &props.content_encoding {
        out = out.with_content_encoding(v.as_str().into());
    }
    if let Some(v) = &props.correlation_id {
        out = out.with_correlation_id(v.as_str().into());
    }
    if let Some(v) = &props.reply_to {
        out = out.with_reply_to(v.as_str().into());
    }
    if let Some(v) = props.priority {
        out = out.with_priority(v);
    }
    if let Some(v) = props.delivery_mode {
        out = out.with_delivery_mode(v);
    }
    if let Some(v) = &props.expiration {
        out = out.with_expiration(v.as_str().into());
    }
    out
}
