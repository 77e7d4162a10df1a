//! Decodes every message captured from real Celery (scripts/capture-vectors.py)
//! and checks each field against what Celery's own worker code read from it.

use std::path::PathBuf;

use base64::Engine as _;
use broker_proto::{DecodeOptions, Properties, Protocol, TaskMessage, decode, encode, header, time};
use chrono::Utc;
use serde_json::{Value as Json, json};

struct Vector {
    name: String,
    props: Properties,
    body: Vec<u8>,
    raw_headers: Json,
    celery: Json,
}

fn vectors() -> Vec<Vector> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("vectors directory") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let d = &v["delivery"];
            let p = &d["properties"];
            let text = |k: &str| p[k].as_str().map(str::to_owned);
            out.push(Vector {
                name: v["name"].as_str().unwrap().to_owned(),
                props: Properties {
                    content_type: text("content_type"),
                    content_encoding: text("content_encoding"),
                    correlation_id: text("correlation_id"),
                    reply_to: text("reply_to"),
                    priority: p["priority"].as_u64().map(|x| x as u8),
                    delivery_mode: p["delivery_mode"].as_u64().map(|x| x as u8),
                    expiration: text("expiration"),
                    headers: header::table_from_json(d["headers"].as_object().unwrap()),
                },
                body: base64::engine::general_purpose::STANDARD.decode(d["body_base64"].as_str().unwrap()).unwrap(),
                raw_headers: d["headers"].clone(),
                celery: v["celery_view"].clone(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn vector(name: &str) -> Vector {
    vectors().into_iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no vector {name}"))
}

fn opt_text(v: &Json) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Every field of the decoded message equals Celery's reading of the same delivery.
fn check_against_celery(v: &Vector, m: &TaskMessage) {
    let c = &v.celery;
    let ctx = &v.name;
    let protocol = match m.protocol {
        Protocol::V1 => "v1",
        Protocol::V2 => "v2",
        Protocol::Hybrid => "hybrid",
    };
    assert_eq!(protocol, c["protocol"], "{ctx}: protocol");
    assert_eq!(m.task, c["task"], "{ctx}: task");
    assert_eq!(m.id, c["id"], "{ctx}: id");
    assert_eq!(Json::Array(m.args.iter().map(|a| a.to_json()).collect()), c["args"], "{ctx}: args");
    let kwargs: serde_json::Map<_, _> = m.kwargs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    assert_eq!(Json::Object(kwargs), c["kwargs"], "{ctx}: kwargs");
    let link = |l: &Option<broker_proto::Value>| l.as_ref().map_or(Json::Null, |v| v.to_json());
    assert_eq!(link(&m.embed.callbacks), c["embed"]["callbacks"], "{ctx}: callbacks");
    assert_eq!(link(&m.embed.errbacks), c["embed"]["errbacks"], "{ctx}: errbacks");
    assert_eq!(link(&m.embed.chain), c["embed"]["chain"], "{ctx}: chain");
    assert_eq!(link(&m.embed.chord), c["embed"]["chord"], "{ctx}: chord");
    assert_eq!(u64::from(m.retries), c["retries"].as_u64().unwrap(), "{ctx}: retries");
    for (field, ours) in [("eta", m.eta), ("expires", m.expires)] {
        match c[field].as_str() {
            None => assert_eq!(ours, None, "{ctx}: {field}"),
            Some(text) => {
                let theirs = time::parse_iso(text).unwrap().in_zone(broker_proto::Tz::UTC).unwrap();
                assert_eq!(ours, Some(theirs), "{ctx}: {field} instant");
                assert_eq!(time::format_aware(&ours.unwrap()), text, "{ctx}: {field} re-encodes to the same text");
            }
        }
    }
    assert_eq!(m.root_id, opt_text(&c["root_id"]), "{ctx}: root_id");
    assert_eq!(m.parent_id, opt_text(&c["parent_id"]), "{ctx}: parent_id");
    assert_eq!(m.group, opt_text(&c["group"]), "{ctx}: group");
    assert_eq!(m.group_index, c["group_index"].as_i64(), "{ctx}: group_index");
    assert_eq!(m.shadow, opt_text(&c["shadow"]), "{ctx}: shadow");
    assert_eq!(m.lang, opt_text(&c["lang"]), "{ctx}: lang");
    assert_eq!(m.timelimit.hard, c["timelimit"][0].as_f64(), "{ctx}: hard time limit");
    assert_eq!(m.timelimit.soft, c["timelimit"][1].as_f64(), "{ctx}: soft time limit");
    assert_eq!(m.argsrepr, opt_text(&c["argsrepr"]), "{ctx}: argsrepr");
    assert_eq!(m.kwargsrepr, opt_text(&c["kwargsrepr"]), "{ctx}: kwargsrepr");
    assert_eq!(m.origin, opt_text(&c["origin"]), "{ctx}: origin");
    assert_eq!(Json::Bool(m.ignore_result), c["ignore_result"], "{ctx}: ignore_result");
    assert_eq!(m.replaced_task_nesting, c["replaced_task_nesting"].as_i64().unwrap(), "{ctx}: replaced_task_nesting");
    let stamped: Option<Vec<String>> =
        c["stamped_headers"].as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect());
    assert_eq!(m.stamped_headers, stamped, "{ctx}: stamped_headers");
    assert_eq!(header::to_json(&broker_proto::AMQPValue::FieldTable(m.stamps.clone())), c["stamps"], "{ctx}: stamps");
    assert_eq!(m.priority.map(u64::from), c["priority"].as_u64(), "{ctx}: priority");
    assert_eq!(m.reply_to, opt_text(&c["reply_to"]), "{ctx}: reply_to");
    assert_eq!(m.correlation_id, opt_text(&c["correlation_id"]), "{ctx}: correlation_id");
    assert_eq!(
        header::to_json(&broker_proto::AMQPValue::FieldTable(m.extra_headers.clone())),
        c["extra_headers"],
        "{ctx}: extra headers kept verbatim"
    );
}

#[test]
fn every_vector_decodes_as_celery_reads_it() {
    let all = vectors();
    let names: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
    // The shapes the protocol issue asks for; a missing capture fails here.
    for required in [
        "send_task_kwargs",
        "countdown",
        "countdown_zero",
        "eta_offset",
        "local_timezone",
        "expires",
        "priority",
        "custom_headers",
        "kombu_types",
        "options",
        "compressed",
        "protocol_v1",
        "hybrid",
        "retry",
    ] {
        assert!(names.contains(&required), "vector {required} missing; have {names:?}");
    }
    for v in &all {
        let m = decode(&v.props, &v.body, &DecodeOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        check_against_celery(v, &m);
    }
}

/// Re-encoding a Celery v2 message gives back the same header table (up to
/// `ignore_result: null`, which we send as `false`) and the same body JSON.
#[test]
fn reencoding_celery_v2_messages_gives_the_same_headers_and_body() {
    let v2: Vec<Vector> =
        vectors().into_iter().filter(|v| v.celery["protocol"] == "v2" && v.name != "compressed").collect();
    assert!(v2.len() >= 10, "only {} v2 vectors", v2.len());
    for v in v2 {
        let m = decode(&v.props, &v.body, &DecodeOptions::default()).unwrap();
        let out = encode(&m, Utc::now()).unwrap();
        let mut ours = header::to_json(&broker_proto::AMQPValue::FieldTable(out.properties.headers.clone()));
        let mut theirs = v.raw_headers.clone();
        for h in [&mut ours, &mut theirs] {
            if h["ignore_result"].is_null() {
                h["ignore_result"] = json!(false);
            }
        }
        assert_eq!(ours, theirs, "{}: headers", v.name);
        let ours: Json = serde_json::from_slice(&out.body).unwrap();
        let theirs: Json = serde_json::from_slice(&v.body).unwrap();
        assert_eq!(ours, theirs, "{}: body", v.name);
        assert_eq!(out.properties.correlation_id, v.props.correlation_id, "{}", v.name);
        assert_eq!(out.properties.content_type.as_deref(), Some("application/json"));
        assert_eq!(out.properties.delivery_mode, Some(2));
        assert_eq!(decode(&out.properties, &out.body, &DecodeOptions::default()).unwrap(), m, "{}", v.name);
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
