//! Celery events from a Celerity worker, received by Celery's own
//! `app.events.Receiver` (tests/python/events_dump.py), and the
//! `enable_events` / `disable_events` control commands, and Flower fed by
//! both.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use broker_proto::topology;
use celerity::plugins::Registry;
use celerity_db::State;
use celerity_tests::workload::count;
use celerity_tests::{
    InProcessWorker, Vhost, confirmed_channel, declare_framework_queue, example_data, free_local_addr, http_get,
    insert_schedule, migrated_database, publish_task, python, python_script, task_message, unique, wait_for_rows,
    worker_config,
};
use serde_json::Value;

/// Starts the Python receiver for `seconds` or until a worker goes offline;
/// returns once its queue is bound.
fn receiver(broker: &str, seconds: u32) -> std::process::Child {
    let mut child = Command::new(python())
        .arg(python_script("events_dump.py"))
        .args([broker, &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run events_dump.py");
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "events_dump.py did not start: {line}");
    child
}

fn events_of(mut child: std::process::Child) -> Vec<Value> {
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(child.wait().unwrap().success(), "events_dump.py failed");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn celerys_receiver_sees_the_worker_and_its_tasks() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let trace_id = unique("e").replace('-', "");
    insert_schedule(&tdb.url(), &trace_id, "1.0.0", State::Poll, &example_data(2, 0));
    let url = vhost.url();
    let dump = tokio::task::spawn_blocking(move || receiver(&url, 60)).await.unwrap();

    let node = format!("{}@celerity-test", unique("node"));
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.hostname = node.clone();
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    let first = task_message(topology::SCHEDULE_TASK, &[("trace_id", &trace_id)]);
    publish_task(&ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, &first).await;
    wait_for_rows(&tdb, Duration::from_secs(20), |r| r.values().all(|r| r.state == State::Success.code())).await;
    // Long enough for heartbeats (every 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    worker.stop().await.unwrap();
    let events = tokio::task::spawn_blocking(move || events_of(dump)).await.unwrap();

    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == kind).collect() };
    for e in &events {
        assert_eq!(e["hostname"], node.as_str(), "{e}");
        assert!(e["clock"].as_u64().is_some() && e["pid"].as_u64().is_some() && e["timestamp"].is_f64(), "{e}");
    }
    assert_eq!(of("worker-online").len(), 1, "{events:?}");
    assert_eq!(of("worker-offline").len(), 1, "{events:?}");
    let beats = of("worker-heartbeat");
    assert!(beats.len() >= 2, "{events:?}");
    let last = beats.last().unwrap();
    assert_eq!(last["sw_ident"], "celerity");
    assert_eq!(last["processed"], 2, "two polls done: {last}");
    assert_eq!(last["loadavg"].as_array().map(Vec::len), Some(3), "{last}");

    // Two polls: the producer's message, then the worker's next poll.
    let received = of("task-received");
    assert_eq!(received.len(), 2, "{events:?}");
    assert_eq!(received[0]["uuid"], first.id.as_str());
    assert_eq!(received[0]["name"], topology::SCHEDULE_TASK);
    assert!(received[0]["kwargs"].as_str().is_some_and(|k| k.contains(&trace_id)), "{}", received[0]);
    // Each task received started and succeeded once. Events of two tasks
    // may interleave on the wire (Celery orders them by `clock`, not by
    // arrival), so they are compared as sets.
    let uuids = |kind: &str| -> Vec<String> {
        let mut ids: Vec<String> = of(kind).iter().map(|e| e["uuid"].as_str().unwrap_or_default().to_owned()).collect();
        ids.sort();
        ids
    };
    let ids = uuids("task-received");
    assert_eq!(uuids("task-started"), ids);
    assert_eq!(uuids("task-succeeded"), ids);
    assert!(of("task-succeeded").iter().all(|e| e["runtime"].as_f64().is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disable_and_enable_events_by_control_command() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let node = format!("{}@celerity-test", unique("node"));
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.hostname = node.clone();
    config.events = false;
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    let control = |command: &str| {
        let out = Command::new(python())
            .args(["-m", "celery", "-b", &vhost.url(), "control", command, "-d", &node, "-t", "3", "-j"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Started without events: a receiver hears nothing.
    let url = vhost.url();
    let quiet = tokio::task::spawn_blocking(move || events_of(receiver(&url, 5))).await.unwrap();
    assert_eq!(quiet, Vec::<Value>::new());

    let mut answer = String::new();
    for _ in 0..20 {
        answer = control("enable_events");
        if answer.contains("task events enabled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(answer.contains("task events enabled"), "{answer}");
    let url = vhost.url();
    let heard = tokio::task::spawn_blocking(move || events_of(receiver(&url, 5))).await.unwrap();
    assert!(heard.iter().any(|e| e["type"] == "worker-heartbeat"), "{heard:?}");

    assert!(control("disable_events").contains("task events disabled"));
    let url = vhost.url();
    let quiet = tokio::task::spawn_blocking(move || events_of(receiver(&url, 5))).await.unwrap();
    assert_eq!(quiet, Vec::<Value>::new());
    worker.stop().await.unwrap();
}

/// The body of a 200 answer to GET `path`, or `None`.
fn ok_body(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    http_get(addr, path).ok().filter(|(status, _)| *status == 200).map(|(_, body)| body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flower_lists_the_worker_and_its_tasks() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let addr = free_local_addr();
    let port = addr.port();
    let mut flower = Command::new(python())
        .args(["-m", "celery", "-b", &vhost.url(), "flower", &format!("--port={port}"), "--address=127.0.0.1"])
        .env("FLOWER_UNAUTHENTICATED_API", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run flower");
    // Flower is up once its API answers.
    let start = std::time::Instant::now();
    while tokio::task::spawn_blocking(move || ok_body(addr, "/api/workers")).await.unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "flower did not start");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let node = format!("{}@celerity-test", unique("node"));
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.hostname = node.clone();
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    let trace_id = unique("f").replace('-', "");
    insert_schedule(&tdb.url(), &trace_id, "1.0.0", State::Poll, &example_data(1, 0));
    let first = task_message(topology::SCHEDULE_TASK, &[("trace_id", &trace_id)]);
    publish_task(&ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, &first).await;
    wait_for_rows(&tdb, Duration::from_secs(20), |r| r.values().all(|r| r.state == State::Success.code())).await;

    // Workers: from its inspect broadcast; tasks: from the events it received.
    let (mut workers, mut task) = (Value::Null, Value::Null);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let got = tokio::task::spawn_blocking(move || ok_body(addr, "/api/workers?refresh=1")).await.unwrap();
        workers = got.and_then(|b| serde_json::from_str(&b).ok()).unwrap_or(Value::Null);
        let path = format!("/api/task/info/{}", first.id);
        let got = tokio::task::spawn_blocking(move || ok_body(addr, &path)).await.unwrap();
        task = got.and_then(|b| serde_json::from_str(&b).ok()).unwrap_or(Value::Null);
        if workers.get(&node).is_some() && task["state"] == "SUCCESS" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = flower.kill();
    let _ = flower.wait();
    worker.stop().await.unwrap();
    assert_eq!(workers[&node]["stats"]["sw_ident"], "celerity", "{workers}");
    assert!(workers[&node]["registered"].as_array().is_some_and(|t| !t.is_empty()), "{workers}");
    assert_eq!(task["state"], "SUCCESS", "{task}");
    assert_eq!(task["name"], topology::SCHEDULE_TASK, "{task}");
    assert_eq!(task["worker"], node.as_str(), "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_and_failed_tasks_show_as_celery_shows_them() {
    use diesel::{Connection, RunQueryDsl};
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let (locked, refused) = (unique("l").replace('-', ""), unique("f").replace('-', ""));
    for id in [&locked, &refused] {
        insert_schedule(&tdb.url(), id, "1.0.0", State::Poll, &example_data(1, 0));
    }
    // A fatal error on one schedule's update: a trigger refuses it.
    diesel::sql_query(format!(
        "CREATE TRIGGER refuse_poll BEFORE UPDATE ON schedule_schedule FOR EACH ROW BEGIN \
         IF NEW.trace_id = '{refused}' AND NEW.state <> 5 THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test trigger'; END IF; END"
    ))
    .execute(&mut tdb.connect())
    .unwrap();
    let url = vhost.url();
    let dump = tokio::task::spawn_blocking(move || receiver(&url, 10)).await.unwrap();
    // A transient one on the other: its row stays locked (lock wait
    // timeout) until the worker has retried it, however long the worker
    // takes to start on a busy machine.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let mut conn = tdb.connect();
        let id = locked.clone();
        std::thread::spawn(move || {
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                diesel::sql_query(format!("SELECT * FROM schedule_schedule WHERE trace_id = '{id}' FOR UPDATE"))
                    .execute(c)?;
                locked_tx.send(()).unwrap();
                let _ = release_rx.recv_timeout(Duration::from_secs(60));
                Ok(())
            })
            .unwrap();
        })
    };
    locked_rx.recv().unwrap();
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.db.lock_wait_timeout = Duration::from_secs(1);
    config.backoff.max_retries = 10;
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    let messages: Vec<_> =
        [&locked, &refused].iter().map(|id| task_message(topology::SCHEDULE_TASK, &[("trace_id", id)])).collect();
    for m in &messages {
        publish_task(&ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, m).await;
    }
    let retried_sql = format!("SELECT COUNT(*) AS n FROM celerity_schedule_retry WHERE trace_id = '{locked}'");
    let waited = std::time::Instant::now();
    while count(&tdb, &retried_sql) == 0 {
        assert!(waited.elapsed() < Duration::from_secs(60), "the locked schedule was never retried");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    release_tx.send(()).unwrap();
    wait_for_rows(&tdb, Duration::from_secs(20), |r| r.values().all(|r| r.state >= State::Success.code())).await;
    holder.join().unwrap();
    let events = tokio::task::spawn_blocking(move || events_of(dump)).await.unwrap();
    worker.stop().await.unwrap();

    let outcomes = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["uuid"] == id)
            .filter_map(|e| e["type"].as_str())
            .filter(|k| *k != "task-received" && *k != "task-started")
            .map(str::to_owned)
            .collect()
    };
    let retried = outcomes(&messages[0].id);
    assert!(retried.len() >= 2 && retried[..retried.len() - 1].iter().all(|k| k == "task-retried"), "{retried:?}");
    assert_eq!(retried.last().map(String::as_str), Some("task-succeeded"), "{retried:?}");
    assert_eq!(outcomes(&messages[1].id), ["task-failed"], "{events:?}");
}
