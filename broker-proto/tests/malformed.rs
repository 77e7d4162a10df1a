//! Every malformed delivery is a typed error with a message an operator can act on.

use broker_proto::{DecodeError, DecodeOptions, Properties, decode, header};
use serde_json::json;

fn props(headers: serde_json::Value) -> Properties {
    Properties {
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        headers: header::table_from_json(headers.as_object().unwrap()).unwrap(),
        ..Properties::default()
    }
}

fn v2_headers() -> serde_json::Value {
    json!({"task": "t", "id": "abc", "lang": "py", "retries": 0})
}

fn err(p: &Properties, body: &[u8]) -> DecodeError {
    decode(p, body, &DecodeOptions::default()).expect_err("should not decode")
}

const GOOD_BODY: &[u8] =
    br#"[[], {"trace_id": "x"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;

#[test]
fn the_good_body_decodes() {
    let m = decode(&props(v2_headers()), GOOD_BODY, &DecodeOptions::default()).unwrap();
    assert_eq!(m.kwarg_str("trace_id"), Some("x"));
}

#[test]
fn foreign_serializers_are_refused_by_name_and_pickle_never_read() {
    for ct in ["application/x-python-serialize", "application/x-yaml", "application/x-msgpack", "text/plain", ""] {
        let mut p = props(v2_headers());
        p.content_type = Some(ct.into());
        // A pickle payload: never deserialised, only refused.
        let e = err(&p, b"\x80\x04\x95\x00\x00\x00");
        assert_eq!(e, DecodeError::UnsupportedContentType(ct.into()));
        assert!(e.to_string().contains("only application/json"), "{e}");
    }
    let mut p = props(v2_headers());
    p.content_type = None;
    assert!(matches!(err(&p, GOOD_BODY), DecodeError::UnsupportedContentType(_)));
    p.content_type = Some("application/json; charset=utf-8".into());
    assert!(decode(&p, GOOD_BODY, &DecodeOptions::default()).is_ok());
    p.content_encoding = Some("latin-1".into());
    assert!(matches!(err(&p, GOOD_BODY), DecodeError::UnsupportedContentEncoding(_)));
}

#[test]
fn bodies_that_are_not_utf8_json_or_the_right_shape() {
    let p = props(v2_headers());
    assert!(matches!(err(&p, b"[[], {}, {}\xff]"), DecodeError::NotUtf8(_)));
    assert!(matches!(err(&p, b"[[], {"), DecodeError::Json(_)));
    assert!(matches!(err(&p, b"[NaN, {}, {}]"), DecodeError::Json(_)));
    for (body, says) in [
        (&b"[[], {}]"[..], "3 items"),
        (b"[{}, {}, {}]", "args must be a list"),
        (b"[[], [], {}]", "kwargs must be a dict"),
        (b"[[], {}, 5]", "embed must be a dict"),
        (b"\"text\"", "[args, kwargs, embed]"),
    ] {
        let e = err(&p, body);
        assert!(matches!(e, DecodeError::BodyShape(_)), "{e}");
        assert!(e.to_string().contains(says), "{e} should say {says}");
    }
    let no_task = props(json!({"id": "abc"}));
    assert!(matches!(err(&no_task, b"[[], {}, {}]"), DecodeError::BodyShape(_)), "no task header and no v1 dict");
}

#[test]
fn missing_or_mistyped_fields_are_named() {
    let body = GOOD_BODY;
    assert_eq!(err(&props(json!({"task": "t"})), body), DecodeError::Missing("task id"));
    assert_eq!(err(&props(json!({"task": "t", "id": ""})), body), DecodeError::Missing("task id"));
    assert_eq!(err(&props(json!({"task": "", "id": "x"})), body), DecodeError::Missing("task name"));
    assert_eq!(err(&props(json!({"task": "t", "id": null})), body), DecodeError::Missing("task id"));
    assert_eq!(err(&props(json!({})), br#"{"id": "x", "args": []}"#), DecodeError::Missing("task name"));
    for (field, value) in [
        ("id", json!(5)),
        ("retries", json!("many")),
        ("retries", json!(-1)),
        ("timelimit", json!([1])),
        ("timelimit", json!(["a", 1])),
        ("ignore_result", json!("yes")),
        ("stamps", json!([1])),
        ("stamped_headers", json!([1])),
        ("group_index", json!("x")),
        ("compression", json!(5)),
    ] {
        let mut h = v2_headers();
        h[field] = value;
        let e = err(&props(h), body);
        assert!(matches!(&e, DecodeError::InvalidField { field: f, .. } if f == field), "{field}: {e}");
    }
    for bad_time in ["tomorrow", "2026-02-30T00:00:00", ""] {
        let mut h = v2_headers();
        h["eta"] = json!(bad_time);
        let e = err(&props(h), body);
        assert!(matches!(&e, DecodeError::BadTime { field, .. } if field == "eta"), "{e}");
    }
}

#[test]
fn v1_fields_that_cannot_be_amqp_values_are_errors() {
    // Found by the fuzzer: a table key over 255 bytes used to panic.
    let body = json!({"task": "t", "id": "x", "stamps": {"k".repeat(300): 1}});
    let e = err(&props(json!({})), body.to_string().as_bytes());
    assert!(matches!(&e, DecodeError::InvalidField { field, .. } if field == "stamps"), "{e}");
}

#[test]
fn oversize_bodies_and_compression_bombs_are_refused() {
    let opts = DecodeOptions { max_body_bytes: 64, ..DecodeOptions::default() };
    let p = props(v2_headers());
    let big = format!("[[], {{\"x\": \"{}\"}}, {{}}]", "a".repeat(100));
    assert_eq!(decode(&p, big.as_bytes(), &opts).unwrap_err(), DecodeError::TooLarge { limit: 64 });
    use flate2::{Compression, write::ZlibEncoder};
    use std::io::Write;
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    z.write_all(big.as_bytes()).unwrap();
    let mut h = v2_headers();
    h["compression"] = json!("application/x-gzip");
    assert_eq!(
        decode(&props(h.clone()), &z.finish().unwrap(), &opts).unwrap_err(),
        DecodeError::TooLarge { limit: 64 }
    );
    h["compression"] = json!("application/x-bz2");
    assert!(matches!(err(&props(h), GOOD_BODY), DecodeError::UnsupportedCompression(_)));
}

#[test]
fn error_messages_quote_at_most_a_little_of_the_input() {
    let huge = format!("[[], {{}}, \"{}\"]", "x".repeat(10_000));
    let e = err(&props(v2_headers()), huge.as_bytes());
    assert!(e.to_string().len() < 300, "{} chars", e.to_string().len());
}

#[test]
fn a_body_of_many_small_values_is_refused_before_it_is_parsed() {
    // 15 MiB of zeros: under the byte cap, ~8M values once parsed.
    let bomb = format!("[[{}0], {{}}, {{}}]", "0,".repeat(15 * 512 * 1024));
    let limit = broker_proto::DEFAULT_MAX_VALUES;
    assert_eq!(err(&props(v2_headers()), bomb.as_bytes()), DecodeError::TooManyValues { limit });
    // At the cap it decodes: a bound, not a ban on lists.
    let at_cap = format!("[[{}0], {{}}, {{}}]", "0,".repeat(limit - 7));
    let m = decode(&props(v2_headers()), at_cap.as_bytes(), &DecodeOptions::default()).unwrap();
    assert_eq!(m.args.len(), limit - 6);
    // A long string is one value, however many commas it quotes.
    let quoted = format!("[[\"{}\"], {{}}, {{}}]", ",".repeat(1 << 20));
    assert!(decode(&props(v2_headers()), quoted.as_bytes(), &DecodeOptions::default()).is_ok());
}
