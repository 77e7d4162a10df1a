//! Interop with real Python Celery over the real RabbitMQ, both directions:
//! messages encoded by broker-proto are run by a Python Celery worker, and
//! messages published by Python Celery decode in Rust with the same values.

use std::process::Command;
use std::time::Duration;

use broker_proto::{DecodeOptions, TaskMessage, Value, decode, encode, eta_after, header, repr, time, topology};
use celerity::broker::properties::{basic_properties, properties_of};
use celerity_tests::{
    ChildGuard, Vhost, connect, declare_framework_queue, python, python_script, temp_dir, unique, wait_for_json_lines,
};
use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use serde_json::{Value as Json, json};

const RECORD_TASK: &str = "celerity.interop.record";
const CUSTOM_HEADER: &str = "x-celerity-test";

fn instant(text: &str) -> DateTime<FixedOffset> {
    time::parse_iso(text).unwrap_or_else(|e| panic!("{text}: {e}")).in_zone(broker_proto::Tz::UTC).unwrap()
}

fn args_json(m: &TaskMessage) -> Json {
    Json::Array(m.args.iter().map(Value::to_json).collect())
}

fn kwargs_json(m: &TaskMessage) -> Json {
    Json::Object(m.kwargs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_runs_messages_encoded_in_rust() {
    let vhost = Vhost::create();
    let queue = unique("interop-rust-to-py");
    let conn = connect(&vhost.url()).await;
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    declare_framework_queue(&channel, &queue).await;

    let dir = temp_dir();
    let out = dir.join("ran.jsonl");
    let mut cmd = Command::new(python());
    cmd.arg(python_script("interop.py"))
        .args(["worker", "--broker", &vhost.url(), "--queue", &queue, "--out"])
        .arg(&out);
    let worker = ChildGuard::spawn(cmd, dir.join("worker.log"));

    let now = Utc::now();
    // A task using every kombu value type, custom header, priority and an eta.
    let mut rich = TaskMessage::new(RECORD_TASK, uuid::Uuid::new_v4().to_string());
    let shanghai = FixedOffset::east_opt(8 * 3600).unwrap();
    rich.args = vec![
        Value::Number(7.into()),
        Value::String("seven".into()),
        Value::DateTime(shanghai.with_ymd_and_hms(2026, 11, 23, 20, 41, 33).unwrap()),
        Value::Decimal("3.14".into()),
        Value::Uuid(uuid::Uuid::from_u128(99)),
        Value::Bytes(vec![0, 159, 255]),
        Value::Array(vec![Value::Bool(true), Value::Null]),
    ];
    rich.kwargs.insert("trace_id".into(), Value::String("abc".into()));
    rich.kwargs.insert("day".into(), Value::Date(chrono::NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()));
    rich.retries = 3;
    rich.eta = eta_after(now, chrono::Duration::seconds(3));
    rich.priority = Some(5);
    rich.origin = Some("celerity-test@host".into());
    rich.argsrepr = Some(repr::args_repr(&rich.args));
    rich.kwargsrepr = Some(repr::kwargs_repr(&rich.kwargs));
    rich.extra_headers.insert(CUSTOM_HEADER.into(), header::text("from-rust"));

    // A schedule poll and its retry built by our retry builder.
    let mut poll = TaskMessage::new(topology::SCHEDULE_TASK, uuid::Uuid::new_v4().to_string());
    poll.kwargs.insert("trace_id".into(), Value::String(uuid::Uuid::new_v4().simple().to_string()));
    let retry = poll.retried(eta_after(now, chrono::Duration::seconds(1)));

    for m in [&rich, &retry] {
        let outgoing = encode(m, now).unwrap();
        let confirm = channel
            .basic_publish(
                topology::DEFAULT_EXCHANGE.into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &outgoing.body,
                basic_properties(&outgoing.properties).unwrap(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "broker did not confirm the publish");
    }

    let ran = wait_for_json_lines(&out, 2, Duration::from_secs(90), || worker.log()).await;
    let by_id =
        |id: &str| ran.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("task {id} not run: {ran:?}")).clone();

    let r = by_id(&rich.id);
    assert_eq!(r["task"], RECORD_TASK);
    assert_eq!(r["args"], args_json(&rich), "args as Python received them");
    assert_eq!(r["kwargs"], kwargs_json(&rich), "kwargs as Python received them");
    assert_eq!(r["retries"], 3);
    assert_eq!(instant(r["eta"].as_str().unwrap()), rich.eta.unwrap());
    assert!(instant(r["ran_at"].as_str().unwrap()) >= rich.eta.unwrap(), "Python ran it before its eta: {r}");
    assert_eq!(r["custom_header"], "from-rust");
    assert_eq!(r["priority"], 5);
    assert_eq!(r["correlation_id"], rich.id.as_str());
    assert_eq!(r["root_id"], rich.id.as_str());

    let r = by_id(&retry.id);
    assert_eq!(r["task"], topology::SCHEDULE_TASK);
    assert_eq!(r["kwargs"], kwargs_json(&poll));
    assert_eq!(r["args"], json!([]));
    assert_eq!(r["retries"], 1, "the retry carries retries + 1");
    assert_eq!(r["parent_id"], poll.id.as_str(), "a retry's parent is the task itself, as in Celery");
    assert_eq!(instant(r["eta"].as_str().unwrap()), retry.eta.unwrap());
    drop(worker);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_by_python_decode_in_rust() {
    let vhost = Vhost::create();
    let queue = unique("interop-py-to-rust");
    let conn = connect(&vhost.url()).await;
    let channel = conn.create_channel().await.unwrap();
    declare_framework_queue(&channel, &queue).await;

    let output = Command::new(python())
        .arg(python_script("interop.py"))
        .args(["produce", "--broker", &vhost.url(), "--queue", &queue])
        .output()
        .expect("run the Python producer");
    assert!(output.status.success(), "Python producer failed: {}", String::from_utf8_lossy(&output.stderr));
    let sent: Vec<Json> = serde_json::from_slice(&output.stdout).expect("producer prints a JSON list");
    assert_eq!(sent.len(), 3);

    for _ in 0..sent.len() {
        let got = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message for every task Python sent");
        let props = properties_of(&got.delivery.properties);
        let m = decode(&props, &got.delivery.data, &DecodeOptions::default()).unwrap();
        // The priority queue may reorder; match by id.
        let e = sent.iter().find(|s| s["id"] == m.id.as_str()).unwrap_or_else(|| panic!("unexpected task {}", m.id));
        assert_eq!(m.task, e["task"].as_str().unwrap());
        assert_eq!(args_json(&m), e["args"], "{}", m.id);
        assert_eq!(kwargs_json(&m), e["kwargs"], "{}", m.id);
        assert_eq!(m.retries, 0);
        assert_eq!(m.eta, e["eta"].as_str().map(instant), "{}", m.id);
        assert_eq!(m.expires, e["expires"].as_str().map(instant), "{}", m.id);
        assert_eq!(m.priority.map(u64::from), e["priority"].as_u64(), "{}", m.id);
        assert_eq!(m.correlation_id.as_deref(), Some(m.id.as_str()));
        assert_eq!(m.root_id.as_deref(), Some(m.id.as_str()));
        assert_eq!(m.lang.as_deref(), Some("py"));
        assert!(m.origin.is_some(), "Python sets origin");
        let custom = m.extra_headers.inner().get(CUSTOM_HEADER).map(|v| header::as_text(v).unwrap().to_owned());
        assert_eq!(custom.as_deref(), e["custom_header"].as_str(), "{}", m.id);
    }
    assert!(
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().is_none(),
        "no message beyond those Python reported"
    );
}
