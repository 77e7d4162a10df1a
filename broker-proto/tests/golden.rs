//! Decodes every message captured from real Celery (tests/python/capture_vectors.py)
//! and checks each field against what Celery's own worker code read from it.

mod common;

use std::path::PathBuf;

use broker_proto::{DecodeOptions, TaskMessage, decode, encode, header, time};
use chrono::Utc;
use common::golden_check::{REQUIRED_VECTORS, Vector, check_against_celery, check_reencoding, is_plain_v2, vectors_in};
use serde_json::{Value as Json, json};

fn vectors() -> Vec<Vector> {
    vectors_in(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors"))
}

fn vector(name: &str) -> Vector {
    vectors().into_iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no vector {name}"))
}

#[test]
fn every_vector_decodes_as_celery_reads_it() {
    let all = vectors();
    let names: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
    for required in REQUIRED_VECTORS {
        assert!(names.contains(&required), "vector {required} missing; have {names:?}");
    }
    for v in &all {
        let m = decode(&v.props, &v.body, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        check_against_celery(v, &m);
    }
}

/// Re-encoding a Celery v2 message gives back the same headers and body.
#[test]
fn reencoding_celery_v2_messages_gives_the_same_headers_and_body() {
    let v2: Vec<Vector> = vectors().into_iter().filter(is_plain_v2).collect();
    assert!(v2.len() >= 10, "only {} v2 vectors", v2.len());
    for v in &v2 {
        check_reencoding(v);
    }
}

#[test]
fn expiration_property_follows_expires_like_celery() {
    let v = vector("expires");
    assert_eq!(v.props.expiration.as_deref(), Some("3600000"));
    let m = decode(&v.props, &v.body, &DecodeOptions::default()).unwrap();
    let sent_at = m.expires.unwrap().with_timezone(&Utc) - chrono::Duration::hours(1);
    let out = encode(&m, sent_at).unwrap();
    assert_eq!(out.properties.expiration.as_deref(), Some("3600000"));
    let late = encode(&m, sent_at + chrono::Duration::hours(2)).unwrap();
    assert_eq!(late.properties.expiration.as_deref(), Some("0"), "an expiry in the past is sent as 0, as Celery does");
}

#[test]
fn our_retry_matches_a_real_celery_retry() {
    let retry = vector("retry");
    let celery_retry = decode(&retry.props, &retry.body, &DecodeOptions::default()).unwrap();
    // Reconstruct the first delivery from the retry, then retry it ourselves.
    let original = TaskMessage { retries: 0, eta: None, parent_id: None, ..celery_retry.clone() };
    let ours = original.retried(celery_retry.eta);
    assert_eq!(ours, celery_retry);
}

#[test]
fn naive_times_use_the_configured_zone() {
    let v = vector("protocol_v1");
    let mut props = v.props.clone();
    let mut body: Json = serde_json::from_slice(&v.body).unwrap();
    body["eta"] = json!("2026-11-23T20:00:00");
    body["utc"] = json!(false);
    let opts = DecodeOptions { naive_zone: "Asia/Shanghai".parse().unwrap(), ..DecodeOptions::default() };
    let m = decode(&props, &serde_json::to_vec(&body).unwrap(), &opts).unwrap();
    assert_eq!(time::format_aware(&m.eta.unwrap()), "2026-11-23T20:00:00+08:00");
    // A v2 header without an offset is read in the configured zone too.
    let v2 = vector("send_task_kwargs");
    props = v2.props.clone();
    props.headers.insert("eta".into(), header::text("2026-11-23T20:00:00"));
    let m = decode(&props, &v2.body, &opts).unwrap();
    assert_eq!(time::format_aware(&m.eta.unwrap()), "2026-11-23T20:00:00+08:00");
    let m = decode(&props, &v2.body, &DecodeOptions::default()).unwrap();
    assert_eq!(time::format_aware(&m.eta.unwrap()), "2026-11-23T20:00:00+00:00");
}

/// The W3C trace context a producer traced with OpenTelemetry's Celery
/// instrumentation writes: read from the message headers, as it wrote it.
#[test]
fn the_trace_context_of_an_instrumented_producer_is_read_where_it_writes_it() {
    use broker_proto::trace_context::{TRACEPARENT, TRACESTATE};
    let v = vector("traced");
    let m = decode(&v.props, &v.body, &DecodeOptions::default()).unwrap();
    let sent = v.raw_headers["traceparent"].as_str().expect("the vector holds a traceparent");
    assert_eq!(m.trace_header(TRACEPARENT), Some(sent));
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[1].len(), parts[2].len()), (4, "00", 32, 16), "{sent}");
    assert_eq!(m.trace_header(TRACESTATE), None, "no tracestate was sent");
    let plain = vector("send_task_kwargs");
    let untraced = decode(&plain.props, &plain.body, &DecodeOptions::default()).unwrap();
    assert_eq!(untraced.trace_header(TRACEPARENT), None);
    // Re-encoded (a move to the delay queues), the context goes on unchanged.
    let out = encode(&m, Utc::now()).unwrap();
    let again = decode(&out.properties, &out.body, &DecodeOptions::default()).unwrap();
    assert_eq!(again.trace_header(TRACEPARENT), Some(sent));
}
