//! The fault suite: `celerity worker` processes run a workload while the
//! broker or the database fails under them, on private RabbitMQ and MariaDB
//! instances where the fault is destructive. Each test reports every
//! schedule as finalised once, lost, stranded or finalised twice (the jepsen
//! checker's categories, `celerity_tests::ledger`) and requires the counts
//! the README's "Operating" section promises.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use broker_proto::{encode, topology};
use celerity::broker::properties::basic_properties;
use celerity_db::State;
use celerity_tests::ledger::{self, Expect, Report};
use celerity_tests::private_rabbitmq::PrivateRabbitmq;
use celerity_tests::workload::produce_many;
use celerity_tests::{
    PrivateMariadb, TestDatabase, Vhost, celerity_bin, connect, declare_framework_queue, example_worker,
    free_local_addr, migrated_database, publish_raw, publish_task, rows, task_message, temp_dir, wait_for_rows,
    wait_health,
};
use chrono::Utc;
use diesel::RunQueryDsl;
use lapin::options::{BasicGetOptions, ConfirmSelectOptions};

/// Retries that outlast a 20 s outage: 1, 2, 4, 8, 8, 8 s, each try taking
/// up to a 1 s checkout timeout or a 3 s call deadline.
const PATIENT: &[&str] = &[
    "--retry-base",
    "1",
    "--retry-max",
    "8",
    "--max-retries",
    "6",
    "--db-checkout-timeout",
    "1",
    "--db-call-timeout",
    "3",
];
/// A retry budget of about 3 s: 0.2, 0.4, 0.8 s, and four tries of at most 0.3 s.
const IMPATIENT: &[&str] = &[
    "--retry-base",
    "0.2",
    "--retry-max",
    "0.8",
    "--max-retries",
    "3",
    "--db-checkout-timeout",
    "0.3",
    "--db-call-timeout",
    "3",
];

/// A `celerity worker` process, logging to `dir/<name>.log`.
fn worker(broker: &str, database: &str, name: &str, dir: &Path, extra: &[&str]) -> Child {
    example_worker(celerity_bin(), broker, database)
        .args(["--concurrency", "8"])
        .args(["--hostname", &format!("celerity@{name}")])
        .args(extra)
        .stderr(Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).expect("worker log")))
        .spawn()
        .expect("start celerity worker")
}

fn stop(mut workers: Vec<Child>) {
    for w in &mut workers {
        assert!(w.try_wait().expect("worker status").is_none(), "a worker exited during the run");
        let _ = w.kill();
        let _ = w.wait();
    }
}

async fn channel(url: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = connect(url).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    (conn, ch)
}

fn polls_done(db: &TestDatabase) -> i32 {
    rows(db).values().map(|r| r.invoke_count - 1).sum()
}

async fn wait_for_polls(db: &TestDatabase, at_least: i32) {
    wait_for_rows(db, Duration::from_secs(60), |r| r.values().map(|r| r.invoke_count - 1).sum::<i32>() >= at_least)
        .await;
}

async fn wait_all_final(db: &TestDatabase, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if rows(db).values().all(|r| r.state == State::Success.code() || r.state == State::Fail.code()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn report(fault: &str, db: &TestDatabase, expected: &BTreeMap<String, Expect>) -> Report {
    let report = ledger::check(db, expected);
    println!("fault={fault} {report}");
    report
}

fn expect_all(ids: &[String], expect: Expect) -> BTreeMap<String, Expect> {
    ids.iter().map(|id| (id.clone(), expect)).collect()
}

/// A private MariaDB with a migrated database on it.
fn private_database() -> (PrivateMariadb, TestDatabase) {
    let server = PrivateMariadb::start();
    let db = TestDatabase::create_on(&server.base());
    db.handle().blocking(celerity_db::migrate::run).expect("migrations");
    (server, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_one_of_two_workers_mid_run() {
    let vhost = Vhost::create();
    let db = migrated_database();
    let (_conn, ch) = channel(&vhost.url()).await;
    let dir = temp_dir();
    let a = worker(&vhost.url(), &db.url(), "a", &dir, &[]);
    let b = worker(&vhost.url(), &db.url(), "b", &dir, &[]);
    let polls = 10;
    let ids = produce_many(&ch, &db.url(), "f", 100, polls.into(), 0).await;
    wait_for_polls(&db, 300).await;
    let mut a = a;
    a.kill().expect("kill -9");
    a.wait().expect("reap");
    let killed_at = polls_done(&db);
    wait_all_final(&db, Duration::from_secs(90)).await;
    let r = report("kill-9-one-of-two", &db, &expect_all(&ids, Expect::Success { polls }));
    stop(vec![b]);
    assert!(killed_at < 100 * polls, "the kill landed mid-run ({killed_at} polls done)");
    assert!(r.all_once(), "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_restarted_mid_run() {
    let mut broker = PrivateRabbitmq::start();
    let db = migrated_database();
    let (conn, ch) = channel(&broker.url()).await;
    let dir = temp_dir();
    let workers = vec![
        worker(&broker.url(), &db.url(), "a", &dir, &["--broker-wait", "60"]),
        worker(&broker.url(), &db.url(), "b", &dir, &["--broker-wait", "60"]),
    ];
    let polls = 8;
    // Polls 1 s apart: next polls wait in the delay queues across the restart.
    let ids = produce_many(&ch, &db.url(), "f", 100, polls.into(), 1).await;
    drop(ch);
    drop(conn);
    wait_for_polls(&db, 200).await;
    broker.stop();
    let stopped = polls_done(&db);
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.launch();
    let back = Instant::now();
    // Resumed: a poll lands after the broker came back. How soon is a
    // figure (printed below), not asserted: a node booting on a busy
    // machine and the workers' reconnect backoff took over 10 s in CI.
    wait_for_rows(&db, Duration::from_secs(60), |r| r.values().map(|r| r.invoke_count - 1).sum::<i32>() > stopped)
        .await;
    let resumed = back.elapsed();
    wait_all_final(&db, Duration::from_secs(90)).await;
    let r = report("rabbitmq-restart", &db, &expect_all(&ids, Expect::Success { polls }));
    println!(
        "fault=rabbitmq-restart polls before the stop: {stopped}; first poll {resumed:?} after the broker was back"
    );
    stop(workers);
    assert!(stopped < 100 * polls, "the restart landed mid-run");
    assert!(r.all_once(), "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The database stops (connections refused) or freezes (SIGSTOP: nothing
/// answers) for 20 s while schedules poll every second.
async fn database_out_for_20_s(freeze: bool) {
    let fault = if freeze { "mariadb-sigstop-20s" } else { "mariadb-down-20s" };
    let vhost = Vhost::create();
    let (mut server, db) = private_database();
    let (_conn, ch) = channel(&vhost.url()).await;
    let dir = temp_dir();
    let workers =
        vec![worker(&vhost.url(), &db.url(), "a", &dir, PATIENT), worker(&vhost.url(), &db.url(), "b", &dir, PATIENT)];
    let polls = 30;
    let ids = produce_many(&ch, &db.url(), "f", 50, polls.into(), 1).await;
    wait_for_polls(&db, 100).await;
    let before = polls_done(&db);
    if freeze {
        server.signal("STOP");
    } else {
        server.stop();
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    if freeze {
        server.signal("CONT");
    } else {
        server.launch();
    }
    wait_all_final(&db, Duration::from_secs(120)).await;
    let r = report(fault, &db, &expect_all(&ids, Expect::Success { polls }));
    stop(workers);
    assert!(before < 50 * polls, "the outage landed mid-run");
    assert_eq!(r.fail, 0, "{r}");
    assert!(r.all_once(), "{r}");
    let retried = ["a", "b"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default())
        .filter(|log| log.contains("transient database error; retry published"))
        .count();
    assert!(retried > 0, "the outage was seen and retried as transient");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_down_20_s_mid_run() {
    database_out_for_20_s(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_frozen_20_s_mid_run() {
    database_out_for_20_s(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_down_past_the_retry_budget() {
    let vhost = Vhost::create();
    let (mut server, db) = private_database();
    let (_conn, ch) = channel(&vhost.url()).await;
    let dir = temp_dir();
    let workers = vec![
        worker(&vhost.url(), &db.url(), "a", &dir, IMPATIENT),
        worker(&vhost.url(), &db.url(), "b", &dir, IMPATIENT),
    ];
    let polls = 60;
    let ids = produce_many(&ch, &db.url(), "f", 20, polls.into(), 1).await;
    wait_for_polls(&db, 40).await;
    server.stop();
    // Well past every schedule's next poll (1 s) plus its retry budget, with
    // room for the tries of 20 schedules queueing for 16 permits.
    tokio::time::sleep(Duration::from_secs(15)).await;
    server.launch();
    wait_all_final(&db, Duration::from_secs(60)).await;
    let r = report(
        "mariadb-down-past-budget",
        &db,
        &expect_all(&ids, Expect::Fail("gave up after 3 retries of transient database errors")),
    );
    stop(workers);
    assert!(r.all_once(), "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The operator's mistake, undone after 10 s: the framework's table renamed
/// away (1146). No schedule fails or spends a retry; both workers pause,
/// say why on /healthz, and resume by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_table_renamed_away_for_10_s() {
    let vhost = Vhost::create();
    let db = migrated_database();
    let (_conn, ch) = channel(&vhost.url()).await;
    let dir = temp_dir();
    let http = [free_local_addr(), free_local_addr()];
    let workers: Vec<Child> = ["a", "b"]
        .iter()
        .zip(http)
        .map(|(name, addr)| {
            let addr = addr.to_string();
            let extra: Vec<&str> = PATIENT.iter().copied().chain(["--http-addr", addr.as_str()]).collect();
            worker(&vhost.url(), &db.url(), name, &dir, &extra)
        })
        .collect();
    let polls = 15;
    let ids = produce_many(&ch, &db.url(), "f", 40, polls.into(), 1).await;
    wait_for_polls(&db, 100).await;
    let mut conn = db.connect();
    diesel::sql_query("RENAME TABLE schedule_schedule TO schedule_schedule_away").execute(&mut conn).unwrap();
    let mut reasons = Vec::new();
    for addr in http {
        reasons.push(wait_health(addr, 503, Duration::from_secs(20)).await);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    diesel::sql_query("RENAME TABLE schedule_schedule_away TO schedule_schedule").execute(&mut conn).unwrap();
    for addr in http {
        wait_health(addr, 200, Duration::from_secs(20)).await;
    }
    wait_all_final(&db, Duration::from_secs(120)).await;
    let r = report("schedule-table-renamed-10s", &db, &expect_all(&ids, Expect::Success { polls }));
    stop(workers);
    for reason in &reasons {
        assert!(reason.contains("paused") && reason.contains("1146"), "/healthz says why: {reason}");
        // The number, never the server's text, to whoever asks.
        assert!(!reason.contains("doesn't exist") && !reason.contains("schedule_schedule"), "{reason}");
    }
    assert_eq!(r.fail, 0, "{r}");
    assert!(r.all_once(), "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The measurement: for 10 s a trigger makes every UPDATE of the
/// schedules answer Galera's 1047, with a message no pattern knows. The
/// number is read from the server, the error is transient, and every
/// schedule retries through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_update_answers_1047_for_10_s() {
    let vhost = Vhost::create();
    let db = migrated_database();
    let (_conn, ch) = channel(&vhost.url()).await;
    let dir = temp_dir();
    let workers =
        vec![worker(&vhost.url(), &db.url(), "a", &dir, PATIENT), worker(&vhost.url(), &db.url(), "b", &dir, PATIENT)];
    let polls = 15;
    let ids = produce_many(&ch, &db.url(), "f", 40, polls.into(), 1).await;
    wait_for_polls(&db, 100).await;
    let mut conn = db.connect();
    diesel::sql_query(celerity_tests::NOT_READY_TRIGGER).execute(&mut conn).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    diesel::sql_query("DROP TRIGGER not_ready").execute(&mut conn).unwrap();
    wait_all_final(&db, Duration::from_secs(120)).await;
    let r = report("every-update-1047-10s", &db, &expect_all(&ids, Expect::Success { polls }));
    stop(workers);
    assert_eq!(r.fail, 0, "{r}");
    assert!(r.all_once(), "{r}");
    let logs: String =
        ["a", "b"].iter().map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default()).collect();
    assert!(logs.contains("mysql error 1047"), "the server's number was read");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_malformed_messages_mixed_into_a_run() {
    let vhost = Vhost::create();
    let db = migrated_database();
    let (_conn, ch) = channel(&vhost.url()).await;
    let dir = temp_dir();
    let workers =
        vec![worker(&vhost.url(), &db.url(), "a", &dir, &[]), worker(&vhost.url(), &db.url(), "b", &dir, &[])];
    let polls = 5;
    let good = task_message(topology::SCHEDULE_TASK, &[("trace_id", "x")]);
    let encoded = encode(&good, Utc::now()).expect("encode");
    let props = basic_properties(&encoded.properties).expect("properties");
    let q = topology::SCHEDULE_QUEUE.name;
    let mut ids = Vec::new();
    for i in 0..1000 {
        // Ten kinds of bad input, interleaved with good schedules.
        match i % 10 {
            0 => {
                publish_raw(
                    &ch,
                    "",
                    q,
                    b"\x80\x04\x95pickle",
                    props.clone().with_content_type("application/x-python-serialize".into()),
                )
                .await
            }
            1 => publish_raw(&ch, "", q, b"[[], {\"trace_id\": ", props.clone()).await,
            2 => publish_raw(&ch, "", q, &[0xff, 0xfe, 0x00, i as u8], props.clone()).await,
            3 => publish_raw(&ch, "", q, b"{\"not\": \"a task body\"}", props.clone()).await,
            4 => publish_raw(&ch, "", q, &encoded.body, props.clone().with_content_encoding("gzip".into())).await,
            5 => publish_raw(&ch, "", q, &encoded.body, lapin::BasicProperties::default()).await,
            6 => {
                let mut m = good.clone();
                m.task = "some.other.task".into();
                publish_task(&ch, "", q, &m).await;
            }
            7 => {
                let mut m = good.clone();
                m.kwargs.clear();
                publish_task(&ch, "", q, &m).await;
            }
            8 => publish_raw(&ch, "", q, &vec![b'['; 5000], props.clone()).await,
            _ => publish_raw(&ch, "", q, b"", props.clone()).await,
        }
        if i % 20 == 0 {
            ids.extend(produce_many(&ch, &db.url(), "f", 1, polls.into(), 0).await);
        }
    }
    wait_all_final(&db, Duration::from_secs(90)).await;
    let r = report("malformed-1000", &db, &expect_all(&ids, Expect::Success { polls }));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut dead = 0;
    while dead < 1000 && Instant::now() < deadline {
        match ch.basic_get(celerity::broker::DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true }).await {
            Ok(Some(_)) => dead += 1,
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("read the dead-letter queue: {e}"),
        }
    }
    println!("fault=malformed-1000 dead-lettered={dead}");
    stop(workers);
    assert_eq!(dead, 1000, "every malformed message is dead-lettered");
    assert_eq!(rows(&db).len(), ids.len(), "bad input created or touched no schedule");
    assert!(r.all_once(), "{r}");
    let _ = std::fs::remove_dir_all(dir);
}
