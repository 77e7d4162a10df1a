//! The callback lock, the plugin callback POST, the delete task and a trace
//! id with no row, each through a running worker on the real services.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_proto::topology;
use celerity::config::WorkerConfig;
use celerity::plugins::{Callbacks, Context, Outcome, Plugin, Registry};
use celerity_db::State;
use celerity_tests::ChildGuard;
use celerity_tests::tls::TestCerts;
use celerity_tests::{
    InProcessWorker, TestDatabase, Vhost, confirmed_channel, declare_framework_queue, insert_schedule,
    migrated_database, publish_task, rows, task_message, unique, wait_for_rows, worker_config,
};
use diesel::prelude::*;
use lapin::options::BasicGetOptions;
use serde::{Deserialize, Serialize};

/// Succeeds at once and asks for the plugin callback.
struct CallsBack;

#[derive(Deserialize, Serialize)]
struct CallbackContext {
    plugin_callback_info: serde_json::Value,
}

impl Plugin for CallsBack {
    type Inputs = serde_json::Value;
    type ContextData = CallbackContext;
    const PLUGIN_CALLBACK: bool = true;

    fn execute(&self, _: serde_json::Value, ctx: &mut Context<CallbackContext>) -> Outcome {
        ctx.outputs.insert("done".into(), true.into());
        Outcome::Success
    }
}

/// Waits for a callback, then succeeds.
struct WaitsForCallback;

impl Plugin for WaitsForCallback {
    type Inputs = serde_json::Value;
    type ContextData = serde_json::Map<String, serde_json::Value>;

    fn execute(&self, _: serde_json::Value, ctx: &mut Context<Self::ContextData>) -> Outcome {
        match &ctx.callback {
            None => Outcome::WaitCallback,
            Some(cb) => {
                ctx.outputs.insert("got".into(), cb.data.clone());
                Outcome::Success
            }
        }
    }
}

fn registry() -> Registry {
    let mut r = Registry::with_builtin();
    r.register("callsback-1.0.0", CallsBack).register("callback-1.0.0", WaitsForCallback);
    r
}

fn insert(url: &str, trace_id: &str, version: &str, state: State, context_data: serde_json::Value) {
    let data = serde_json::json!({"inputs": {}, "context": {"storage": {}, "outputs": {}, "data": context_data}, "outputs": {}});
    insert_schedule(url, trace_id, version, state, &data.to_string());
}

/// A schedule of the plugin that succeeds at once and asks for a POST of
/// `{"k": "v", "n": 1}` to `url`; its trace id.
fn calling_back(tdb: &TestDatabase, url: &str) -> String {
    let trace_id = unique("cb").replace('-', "");
    let info = serde_json::json!({"plugin_callback_info": {"url": url, "data": {"k": "v", "n": 1}}});
    insert(&tdb.url(), &trace_id, "callsback-1.0.0", State::Poll, info);
    trace_id
}

async fn channel(vhost: &Vhost) -> (lapin::Connection, lapin::Channel) {
    let (conn, ch) = confirmed_channel(vhost).await;
    for q in broker_proto::topology::FRAMEWORK_QUEUES {
        declare_framework_queue(&ch, q.name).await;
    }
    (conn, ch)
}

async fn send(ch: &lapin::Channel, queue: &str, task: &str, kwargs: &[(&str, &str)]) {
    publish_task(ch, "", queue, &task_message(task, kwargs)).await;
}

/// A one-thread HTTP server recording request bodies; answers `statuses` in turn.
fn http_server(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/callback", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for (stream, status) in listener.incoming().zip(statuses) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            seen.lock().unwrap().push(String::from_utf8(body).unwrap());
            write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugin_callback_info_is_posted_on_a_final_state_with_three_tries() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = channel(&vhost).await;
    let (url, bodies) = http_server(vec![500, 503, 200]);
    let trace_id = calling_back(&tdb, &url);
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), registry());
    send(&ch, topology::SCHEDULE_QUEUE.name, topology::SCHEDULE_TASK, &[("trace_id", &trace_id)]).await;
    wait_for_rows(&tdb, Duration::from_secs(20), |r| r[&trace_id].state == 4).await;
    let start = std::time::Instant::now();
    while bodies.lock().unwrap().len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(20), "posts: {:?}", bodies.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bodies = bodies.lock().unwrap().clone();
    for b in &bodies {
        assert_eq!(serde_json::from_str::<serde_json::Value>(b).unwrap(), serde_json::json!({"k": "v", "n": 1}));
    }
    worker.stop().await.unwrap();
}

/// An HTTPS server of Python's standard library with a certificate of the
/// test CA: answers `{"result": true}` and writes each body it gets to `log`, one line each.
const HTTPS_SERVER: &str = r#"
import http.server, json, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with open(sys.argv[3], "a") as log:
            log.write(json.dumps(body) + "\n")
        answer = b'{"result": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = tls.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A callback to an `https://` URL whose certificate an operator's CA
/// signed: refused by a worker that trusts only the system's authorities,
/// posted by one given the CA with `--callback-ca-file` (before, the
/// callback client had no TLS at all and every `https://` callback failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_https_callback_is_posted_when_its_ca_is_trusted() {
    let dir = celerity_tests::temp_dir();
    let certs = TestCerts::create(&dir);
    let log = dir.join("posted.log");
    let mut cmd = Command::new(celerity_tests::python());
    cmd.args(["-c", HTTPS_SERVER]).args([&certs.cert, &certs.key, &log]);
    let server = ChildGuard::spawn(cmd, dir.join("server.log"));
    let start = std::time::Instant::now();
    let port = loop {
        if let Some(port) = server.log().lines().next().and_then(|l| l.trim().parse::<u16>().ok()) {
            break port;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the HTTPS server did not start: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = format!("https://127.0.0.1:{port}/callback");
    let data = serde_json::json!({"k": "v"}).as_object().unwrap().clone();

    let refused = Callbacks::system().post_with_retry(&url, &data).expect_err("an unknown CA is refused");
    assert!(refused.contains("failed 3 times"), "{refused}");
    assert!(!log.exists(), "nothing was posted");

    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = channel(&vhost).await;
    let trace_id = calling_back(&tdb, &url);
    let config = WorkerConfig {
        callback_ca_pem: Some(std::fs::read_to_string(&certs.ca).unwrap()),
        ..worker_config(&vhost.url(), &tdb.url())
    };
    let worker = InProcessWorker::start(config, registry());
    send(&ch, topology::SCHEDULE_QUEUE.name, topology::SCHEDULE_TASK, &[("trace_id", &trace_id)]).await;
    wait_for_rows(&tdb, Duration::from_secs(20), |r| r[&trace_id].state == 4).await;
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.ends_with('\n')) {
        assert!(start.elapsed() < Duration::from_secs(20), "no callback was posted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posted = std::fs::read_to_string(&log).unwrap();
    assert_eq!(posted.lines().count(), 1, "one try was enough: {posted}");
    let body: serde_json::Value = serde_json::from_str(posted.trim()).unwrap();
    assert_eq!(body, serde_json::json!({"k": "v", "n": 1}));
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callback_waits_for_the_scheduling_lock_then_runs_and_releases_it() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = channel(&vhost).await;
    let trace_id = unique("cb").replace('-', "");
    insert(&tdb.url(), &trace_id, "callback-1.0.0", State::Callback, serde_json::json!({}));
    // Someone else holds the lock.
    diesel::sql_query(format!("UPDATE schedule_schedule SET scheduling = 1 WHERE trace_id = '{trace_id}'"))
        .execute(&mut tdb.connect())
        .unwrap();
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), registry());
    send(
        &ch,
        topology::CALLBACK_QUEUE.name,
        topology::CALLBACK_TASK,
        &[("trace_id", &trace_id), ("callback_id", "c1"), ("callback_data", r#"{"answer": 42}"#)],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = &rows(&tdb)[&trace_id];
    assert_eq!((r.state, r.invoke_count, r.scheduling), (3, 1, true), "nothing runs while the lock is held");
    diesel::sql_query(format!("UPDATE schedule_schedule SET scheduling = 0 WHERE trace_id = '{trace_id}'"))
        .execute(&mut tdb.connect())
        .unwrap();
    // The re-queued callback (1–5 s later) takes the lock, polls and releases it.
    let done = wait_for_rows(&tdb, Duration::from_secs(20), |r| r[&trace_id].state == 4).await;
    let r = &done[&trace_id];
    assert_eq!((r.invoke_count, r.scheduling), (2, false));
    assert!(r.data.contains(r#""got": {"answer": 42}"#), "{}", r.data);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_task_removes_schedules_finished_over_the_limit() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = channel(&vhost).await;
    let mut conn = tdb.connect();
    for (id, finished) in [
        ("old1", "NOW() - INTERVAL 40 DAY"),
        ("old2", "NOW() - INTERVAL 31 DAY"),
        ("recent", "NOW() - INTERVAL 2 DAY"),
        ("open", "NULL"),
    ] {
        diesel::sql_query(format!(
            "INSERT INTO schedule_schedule VALUES ('{id}', '1.0.0', 4, 2, '{{}}', NOW(6), {finished}, 0, '')"
        ))
        .execute(&mut conn)
        .unwrap();
    }
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), registry());
    send(&ch, topology::DELETE_QUEUE.name, topology::DELETE_TASK, &[]).await;
    let left = wait_for_rows(&tdb, Duration::from_secs(20), |r| r.len() == 2).await;
    assert_eq!(left.keys().collect::<Vec<_>>(), ["open", "recent"]);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trace_id_with_no_row_is_acked_not_dead_lettered() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = channel(&vhost).await;
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), registry());
    send(&ch, topology::SCHEDULE_QUEUE.name, topology::SCHEDULE_TASK, &[("trace_id", "nosuchrow")]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.stop().await.unwrap();
    // Read on a connection opened after the worker stopped, bounded in time:
    // a basic.get on the publishing connection once waited forever here.
    drop(ch);
    let (_conn, ch) = channel(&vhost).await;
    for q in [topology::SCHEDULE_QUEUE.name, celerity::broker::DEAD_LETTER_QUEUE] {
        let got =
            tokio::time::timeout(Duration::from_secs(20), ch.basic_get(q.into(), BasicGetOptions { no_ack: true }))
                .await
                .unwrap_or_else(|_| panic!("basic.get on {q} got no answer in 20 s"))
                .unwrap();
        assert!(got.is_none(), "{q} should be empty");
    }
}
