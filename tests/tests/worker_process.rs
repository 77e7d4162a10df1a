//! `celerity worker` as a process and as Celery sees it: its next-poll
//! messages run on a real Python worker, it honours eta and expires, stops
//! cleanly on SIGTERM, and refuses bad configuration with one clear line.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker_proto::{time, topology};
use celerity::broker::QueueType;
use celerity::plugins::Registry;
use celerity_tests::workload::{create_schedule, schedule_message};
use celerity_tests::{
    ChildGuard, InProcessWorker, Vhost, celerity_bin, confirmed_channel, declare_framework_queue, example_worker,
    free_port, migrated_database, publish_task, python, python_script, rows, temp_dir, unique, wait_for_json_lines,
    wait_for_rows, worker_config,
};
use chrono::Utc;
use lapin::options::BasicGetOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn next_poll_published_by_celerity_runs_on_a_python_worker() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    // Celerity polls from a queue of its own; its next poll goes to plugin_schedule,
    // where a real Python Celery worker takes it.
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.queues = vec!["celerity_in".into()];
    config.next_poll_queue = topology::SCHEDULE_QUEUE.name.into();
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    let dir = temp_dir();
    let out = dir.join("ran.jsonl");
    let mut cmd = Command::new(python());
    cmd.arg(python_script("interop.py"))
        .args(["worker", "--broker", &vhost.url(), "--queue", topology::SCHEDULE_QUEUE.name, "--out"])
        .arg(&out);
    let py = ChildGuard::spawn(cmd, dir.join("py.log"));

    let trace_id = unique("t").replace('-', "");
    create_schedule(&tdb.url(), &trace_id, 3, 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let polled_at = Utc::now();
    publish_task(&ch, "", "celerity_in", &schedule_message(&trace_id)).await;

    let ran = wait_for_json_lines(&out, 1, Duration::from_secs(60), || py.log()).await;
    let r = &ran[0];
    assert_eq!(r["task"], topology::SCHEDULE_TASK);
    assert_eq!(r["kwargs"], serde_json::json!({"trace_id": trace_id}));
    assert_eq!(r["args"], serde_json::json!([]));
    assert_eq!(r["retries"], 0);
    let eta = time::parse_iso(r["eta"].as_str().unwrap()).unwrap().in_zone(broker_proto::Tz::UTC).unwrap();
    let countdown = (eta.with_timezone(&Utc) - polled_at).num_milliseconds();
    assert!((2000..4000).contains(&countdown), "eta is now + interval (2 s): {countdown} ms");
    let ran_at = time::parse_iso(r["ran_at"].as_str().unwrap()).unwrap().in_zone(broker_proto::Tz::UTC).unwrap();
    assert!(ran_at >= eta, "Python honoured the eta");
    assert_eq!(rows(&tdb)[&trace_id].invoke_count, 2);
    worker.stop().await.unwrap();
    drop(py);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eta_is_not_run_early_and_expired_tasks_are_not_run() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), Registry::with_builtin());

    let (later, expired) = (unique("later").replace('-', ""), unique("expired").replace('-', ""));
    create_schedule(&tdb.url(), &later, 1, 0);
    create_schedule(&tdb.url(), &expired, 1, 0);
    let mut m = schedule_message(&later);
    m.eta = broker_proto::eta_after(Utc::now(), chrono::Duration::seconds(3));
    publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &m).await;
    let mut gone = schedule_message(&expired);
    gone.expires = Some((Utc::now() - chrono::Duration::seconds(1)).fixed_offset());
    publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &gone).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rows(&tdb)[&later].invoke_count, 1, "not run before its eta");
    let done = wait_for_rows(&tdb, Duration::from_secs(20), |r| r[&later].state == 4).await;
    assert_eq!(done[&expired].invoke_count, 1, "an expired task is not run");
    assert!(Utc::now() >= m.eta.unwrap());
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_taking_work_and_exits_zero_leaving_nothing_stranded() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let trace_ids: Vec<String> = (0..20).map(|_| unique("t").replace('-', "")).collect();
    for id in &trace_ids {
        create_schedule(&tdb.url(), id, 1_000_000, 0);
    }
    let dir = temp_dir();
    let mut child = example_worker(celerity_bin(), &vhost.url(), &tdb.url())
        .args(["--concurrency", "4"])
        .args(["--queues", "plugin_schedule", "--shutdown-grace", "10"])
        .stderr(Stdio::from(std::fs::File::create(dir.join("worker.log")).unwrap()))
        .spawn()
        .unwrap();
    for id in &trace_ids {
        publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &schedule_message(id)).await;
    }
    // Let it poll for a while, then ask it to stop.
    wait_for_rows(&tdb, Duration::from_secs(30), |r| r.values().all(|r| r.invoke_count > 5)).await;
    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "worker did not stop within its grace period");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(dir.join("worker.log")).unwrap();
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(log.contains("shutdown requested") && log.contains("worker stopped"), "{log}");

    // Every schedule still polling has exactly one message waiting for it,
    // on the framework's queue or on Celerity's next-poll queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut waiting = std::collections::BTreeMap::new();
    for queue in [topology::SCHEDULE_QUEUE.name, topology::NEXT_POLL_QUEUE] {
        while let Some(got) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            let props = celerity::broker::properties::properties_of(&got.delivery.properties);
            let m = broker_proto::decode(&props, &got.delivery.data, &Default::default()).unwrap();
            *waiting.entry(m.kwarg_str("trace_id").unwrap().to_owned()).or_insert(0) += 1;
        }
    }
    let final_rows = rows(&tdb);
    for id in &trace_ids {
        assert_eq!(final_rows[id].state, 2);
        assert_eq!(waiting.get(id), Some(&1), "{id}: one message in flight; all: {waiting:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_configuration_exits_non_zero_with_one_clear_line() {
    for (args, says) in [
        (vec!["--broker-url", "http://nope"], "--broker-url must be an amqp:// or amqps:// URL"),
        (vec!["--database-url", "postgres://x"], "--database-url must be a mysql:// URL"),
        (vec!["--db-time-zone", "Mars/Base"], "not an IANA zone"),
        (vec!["--concurrency", "0"], "--concurrency must be at least 1"),
    ] {
        let out = Command::new(celerity_bin()).arg("worker").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn unreachable_broker_fails_after_a_bounded_wait() {
    let url = format!("amqp://guest:secretpw@127.0.0.1:{}/%2f", free_port());
    let tdb = migrated_database();
    let started = Instant::now();
    let out = Command::new(celerity_bin())
        .args(["worker", "--example-plugin", "--broker-url", &url, "--broker-wait", "2", "--log-format", "json"])
        .args(["--database-url", &tdb.url()])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach the broker"), "{err}");
    assert!(!err.contains("secretpw"), "password leaked: {err}");
}

#[test]
fn migrate_is_safe_to_run_twice() {
    let tdb = celerity_tests::TestDatabase::create();
    for expect in ["ran migrations", "nothing to migrate"] {
        let out = Command::new(celerity_bin()).args(["migrate", "--database-url", &tdb.url()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8(out.stdout).unwrap().starts_with(expect));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_run_loses_nothing_and_finalises_each_schedule_once() {
    kill_9_mid_run(40, 0, 200, "classic").await;
}

/// The same on quorum queues, where RabbitMQ counts the redeliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_on_quorum_queues_loses_nothing() {
    kill_9_mid_run(20, 0, 100, "quorum").await;
}

/// The same with 3 s countdowns: next polls wait in `celerity.countdown`,
/// held unacked by the worker that is killed, and the kill can fall
/// between publishing into it and acking; the second worker holds them
/// again until due.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_with_countdowns_in_the_broker_loses_nothing() {
    kill_9_mid_run(6, 3, 50, "classic").await;
}

async fn kill_9_mid_run(polls: i64, interval: i64, kill_after_polls: i32, queue_type: &str) {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    let kind = if queue_type == "quorum" { QueueType::Quorum } else { QueueType::Classic };
    celerity::broker::declare_topology(&ch, &[topology::SCHEDULE_QUEUE.name.to_owned()], kind).await.unwrap();
    let trace_ids: Vec<String> = (0..20).map(|_| unique("k").replace('-', "")).collect();
    for id in &trace_ids {
        create_schedule(&tdb.url(), id, polls, interval);
    }
    let dir = temp_dir();
    let start_worker = |log: &str| {
        example_worker(celerity_bin(), &vhost.url(), &tdb.url())
            .args(["--concurrency", "8"])
            .args(["--queues", "plugin_schedule", "--queue-type", queue_type])
            .stderr(Stdio::from(std::fs::File::create(dir.join(log)).unwrap()))
            .spawn()
            .unwrap()
    };
    let mut first = start_worker("first.log");
    for id in &trace_ids {
        publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &schedule_message(id)).await;
    }
    let baseline = trace_ids.len() as i32;
    wait_for_rows(&tdb, Duration::from_secs(60), |r| {
        r.values().map(|r| r.invoke_count).sum::<i32>() > baseline + kill_after_polls
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = start_worker("second.log");
    let done = wait_for_rows(&tdb, Duration::from_secs(120), |r| r.values().all(|r| r.state == 4)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let db = celerity_db::Db::new(celerity_db::DbConfig::new(tdb.url())).unwrap();
    for id in &trace_ids {
        let r = &done[id];
        assert_eq!((r.invoke_count, r.finished), (polls as i32 + 1, true), "{id}");
        assert!(r.data.contains(&format!(r#""polls_done": {polls}"#)), "{id}: {}", r.data);
        let key = id.clone();
        let attempts = db.blocking(move |c| celerity_db::repo::attempts(c, &key)).unwrap();
        let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(numbers, (2..=polls as i32 + 1).collect::<Vec<_>>(), "{id}: one attempt per poll");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_and_duplicated_messages_finalise_each_schedule_once() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let polls = 5;
    let trace_ids: Vec<String> = (0..30).map(|_| unique("d").replace('-', "")).collect();
    for id in &trace_ids {
        create_schedule(&tdb.url(), id, polls, 0);
    }
    let dir = temp_dir();
    let workers: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            example_worker(celerity_bin(), &vhost.url(), &tdb.url())
                .args(["--concurrency", "4"])
                .args(["--queues", "plugin_schedule", "--hostname", &format!("celerity@{name}")])
                .stderr(Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()))
                .spawn()
                .unwrap()
        })
        .collect();
    // Every message the producer sends arrives twice.
    for id in &trace_ids {
        let m = schedule_message(id);
        publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &m).await;
        publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &m).await;
    }
    let done = wait_for_rows(&tdb, Duration::from_secs(60), |r| r.values().all(|r| r.state == 4)).await;
    // Quiet for a moment: no late duplicate may change anything.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rows(&tdb);
    let db = celerity_db::Db::new(celerity_db::DbConfig::new(tdb.url())).unwrap();
    let mut hosts = std::collections::BTreeSet::new();
    for id in &trace_ids {
        assert_eq!(after[id], done[id], "{id} changed after it was final");
        assert_eq!(done[id].invoke_count, polls as i32 + 1, "{id}");
        assert!(done[id].data.contains(&format!(r#""polls_done": {polls}"#)), "{id}: {}", done[id].data);
        let key = id.clone();
        let attempts = db.blocking(move |c| celerity_db::repo::attempts(c, &key)).unwrap();
        assert_eq!(
            attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
            (2..=polls as i32 + 1).collect::<Vec<_>>(),
            "{id}"
        );
        hosts.extend(attempts.into_iter().map(|a| a.hostname));
    }
    assert_eq!(hosts.len(), 2, "both workers took part: {hosts:?}");
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_broker_connections_are_reconnected_and_nothing_is_lost() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let polls = 150;
    let trace_ids: Vec<String> = (0..20).map(|_| unique("r").replace('-', "")).collect();
    for id in &trace_ids {
        create_schedule(&tdb.url(), id, polls, 0);
    }
    let dir = temp_dir();
    let mut worker = example_worker(celerity_bin(), &vhost.url(), &tdb.url())
        .args(["--concurrency", "8"])
        .args(["--queues", "plugin_schedule"])
        .stderr(Stdio::from(std::fs::File::create(dir.join("worker.log")).unwrap()))
        .spawn()
        .unwrap();
    for id in &trace_ids {
        publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &schedule_message(id)).await;
    }
    wait_for_rows(&tdb, Duration::from_secs(60), |r| r.values().map(|r| r.invoke_count).sum::<i32>() > 150).await;
    // Cut every connection of the worker's vhost, as a broker restart or a TCP reset would.
    let vhost_name = vhost.url().rsplit('/').next().unwrap().to_owned();
    let closed = Command::new("rabbitmqctl")
        .args(["close_all_connections", "-p", &vhost_name, "fault suite: connection cut"])
        .output()
        .unwrap();
    assert!(closed.status.success(), "{}", String::from_utf8_lossy(&closed.stderr));
    let cut_at = Instant::now();
    let polled_at_cut: i32 = rows(&tdb).values().map(|r| r.invoke_count - 1).sum();
    assert!(polled_at_cut < 20 * polls as i32, "the cut must land mid-run ({polled_at_cut} polls done)");
    let done = wait_for_rows(&tdb, Duration::from_secs(90), |r| r.values().all(|r| r.state == 4)).await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker kept running");
    let log = std::fs::read_to_string(dir.join("worker.log")).unwrap();
    assert!(log.contains("reconnected to the broker"), "{log}");
    let db = celerity_db::Db::new(celerity_db::DbConfig::new(tdb.url())).unwrap();
    for id in &trace_ids {
        assert_eq!(done[id].invoke_count, polls as i32 + 1, "{id}");
        let key = id.clone();
        let attempts = db.blocking(move |c| celerity_db::repo::attempts(c, &key)).unwrap();
        assert_eq!(attempts.len(), polls as usize, "{id}: one attempt per poll");
    }
    println!(
        "{polled_at_cut} polls before the cut; all schedules done {:.1} s after it",
        cut_at.elapsed().as_secs_f64()
    );
    let _ = worker.kill();
    let _ = worker.wait();
    let _ = std::fs::remove_dir_all(dir);
}
