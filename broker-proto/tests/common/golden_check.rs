//! Shared by broker-proto's golden tests and the workspace test that captures
//! fresh vectors from real Celery: loading a vector and checking a decoded
//! message against Celery's own reading of the same delivery.

use std::path::Path;

use base64::Engine as _;
use broker_proto::{DecodeOptions, Properties, Protocol, TaskMessage, decode, encode, header, time};
use chrono::Utc;
use serde_json::Value as Json;

/// The message shapes the capture script must produce: a missing one fails.
pub(crate) const REQUIRED_VECTORS: [&str; 15] = [
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
    "traced",
];

/// One captured delivery and Celery's reading of it.
pub(crate) struct Vector {
    pub(crate) name: String,
    pub(crate) props: Properties,
    pub(crate) body: Vec<u8>,
    pub(crate) raw_headers: Json,
    pub(crate) celery: Json,
}

/// Every vector in `dir`, sorted by name.
pub(crate) fn vectors_in(dir: &Path) -> Vec<Vector> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("vectors directory") {
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
                    headers: header::table_from_json(d["headers"].as_object().unwrap()).unwrap(),
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

fn opt_text(v: &Json) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Every field of the decoded message equals Celery's reading of the same delivery.
pub(crate) fn check_against_celery(v: &Vector, m: &TaskMessage) {
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

/// A v2 vector with an uncompressed body (encoding never compresses).
pub(crate) fn is_plain_v2(v: &Vector) -> bool {
    v.celery["protocol"] == "v2" && !v.props.headers.contains_key("compression")
}

/// Re-encoding a Celery v2 message gives back the same header table (up to
/// `ignore_result: null`, which we send as `false`), the same body JSON and
/// the same message when decoded again.
pub(crate) fn check_reencoding(v: &Vector) {
    let m = decode(&v.props, &v.body, &DecodeOptions::default()).unwrap();
    let out = encode(&m, Utc::now()).unwrap();
    let mut ours = header::to_json(&broker_proto::AMQPValue::FieldTable(out.properties.headers.clone()));
    let mut theirs = v.raw_headers.clone();
    for h in [&mut ours, &mut theirs] {
        if h["ignore_result"].is_null() {
            h["ignore_result"] = Json::Bool(false);
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
