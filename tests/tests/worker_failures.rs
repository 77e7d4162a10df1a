//! `celerity worker` under database failures and bad input, against the
//! real RabbitMQ and MariaDB: transient errors are retried the Celery way,
//! fatal ones fail fast, a FAIL the database cannot take waits in flight, and
//! malformed messages are dead-lettered.
//!
//! Retries of a second or more go into the broker's delay topology, entering
//! at the level of their delay's highest bit. A "tap" queue bound to every
//! level exchange (and to the framework's `default` exchange, where the test
//! publishes) gets a copy of every one, once per level it passes: the tap
//! keeps the first. Retry countdowns here are 2 s or more: one under 2 s is
//! due within a second by the time it is sent, goes straight to its queue
//! and passes no exchange a tap can bind to.

use std::time::{Duration, Instant};

use broker_proto::{DecodeOptions, FieldTable, TaskMessage, decode, delay, encode, header, topology};
use celerity::broker::QueueType;
use celerity::broker::properties::{basic_properties, properties_of};
use celerity::plugins::Registry;
use celerity_db::{Db, DbConfig, migrate, repo};
use celerity_tests::workload::{create_schedule, schedule_message};
use celerity_tests::{
    InProcessWorker, PrivateMariadb, TestDatabase, Vhost, confirmed_channel, migrated_database, publish_raw,
    publish_task, rows, unique, wait_for_rows, worker_config,
};
use chrono::{DateTime, FixedOffset, Utc};
use diesel::prelude::*;
use lapin::Channel;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};

const TAP: &str = "tap";

async fn broker(vhost: &Vhost) -> (lapin::Connection, Channel) {
    let (conn, ch) = confirmed_channel(vhost).await;
    // The worker's whole topology, delay queues included, so the tap can bind to it.
    celerity::broker::declare_topology(&ch, &[topology::SCHEDULE_QUEUE.name.to_owned()], QueueType::Classic)
        .await
        .unwrap();
    ch.queue_declare(TAP.into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    ch.queue_bind(
        TAP.into(),
        topology::EXCHANGE.into(),
        topology::SCHEDULE_QUEUE.name.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for level in 0..delay::LEVELS {
        ch.queue_bind(
            TAP.into(),
            delay::level_name(level).as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    (conn, ch)
}

/// Publishes to the framework's exchange, so retries are copied to the tap.
async fn publish_via_exchange(ch: &Channel, m: &TaskMessage) {
    publish_task(ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, m).await;
}

/// Everything on the tap so far, decoded.
async fn drain(ch: &Channel, queue: &str) -> Vec<(TaskMessage, FieldTable)> {
    let mut out = Vec::new();
    while let Some(got) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
        let props = properties_of(&got.delivery.properties);
        let m = decode(&props, &got.delivery.data, &DecodeOptions::default()).unwrap();
        out.push((m, props.headers));
    }
    out
}

/// Collects tap messages until `done` holds, or panics after `timeout`.
async fn tap_until(
    ch: &Channel,
    timeout: Duration,
    done: impl Fn(&[(TaskMessage, FieldTable)]) -> bool,
) -> Vec<(TaskMessage, FieldTable)> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut copies = std::collections::HashSet::new();
    loop {
        // One publish, tapped at each level it passes: the first copy counts.
        for (m, h) in drain(ch, TAP).await {
            let fail = h.inner().get("x-celerity-fail").and_then(header::as_text).map(str::to_owned);
            if copies.insert((m.id.clone(), m.retries, m.eta, fail)) {
                seen.push((m, h));
            }
        }
        if done(&seen) {
            return seen;
        }
        let summary: Vec<_> = seen.iter().map(|(m, _)| (m.retries, m.eta)).collect();
        assert!(start.elapsed() < timeout, "tap after {timeout:?}: {summary:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A private MariaDB with a migrated database holding one example schedule
/// that needs `polls` polls.
fn private_server_with_schedule(polls: i64) -> (PrivateMariadb, TestDatabase, String) {
    let server = PrivateMariadb::start();
    let tdb = TestDatabase::create_on(&server.base());
    Db::new(DbConfig::new(tdb.url())).unwrap().blocking(migrate::run).unwrap();
    let trace_id = unique("t").replace('-', "");
    create_schedule(&tdb.url(), &trace_id, polls, 0);
    (server, tdb, trace_id)
}

fn secs(a: DateTime<FixedOffset>, b: DateTime<FixedOffset>) -> f64 {
    (a - b).num_milliseconds() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_down_at_load_is_retried_with_backoff_then_succeeds() {
    let vhost = Vhost::create();
    let (_conn, ch) = broker(&vhost).await;
    let (mut server, tdb, trace_id) = private_server_with_schedule(1);
    server.stop();
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.backoff.base = Duration::from_secs(2);
    config.backoff.max = Duration::from_secs(4);
    config.backoff.max_retries = 10;
    config.db.checkout_timeout = Duration::from_millis(300);
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    let original = schedule_message(&trace_id);
    let sent_at = Utc::now().fixed_offset();
    publish_via_exchange(&ch, &original).await;

    let retries = tap_until(&ch, Duration::from_secs(30), |seen| seen.iter().any(|(m, _)| m.retries == 3)).await;
    let retries: Vec<&TaskMessage> = retries.iter().map(|(m, _)| m).filter(|m| m.retries > 0).collect();
    assert_eq!(retries.iter().map(|m| m.retries).collect::<Vec<_>>()[..3], [1, 2, 3]);
    for m in &retries {
        assert_eq!(m.id, original.id, "a retry keeps the task id");
        assert_eq!(m.kwargs, original.kwargs);
    }
    // eta(n) - eta(n-1) = the failed try (a checkout timeout, ~0.3 s) + countdown(n);
    // the first also includes the worker's start-up.
    let expected = [2.0, 4.0, 4.0];
    let mut previous = sent_at;
    for (m, countdown) in retries.iter().zip(expected) {
        let gap = secs(m.eta.unwrap(), previous);
        let slack = if m.retries == 1 { 3.0 } else { 1.0 };
        assert!(
            gap >= countdown && gap < countdown + slack,
            "retry {}: gap {gap} s, countdown {countdown} s",
            m.retries
        );
        previous = m.eta.unwrap();
    }

    server.restart();
    let rows = wait_for_rows(&tdb, Duration::from_secs(30), |r| r.values().all(|r| r.state == 4)).await;
    assert_eq!(rows[&trace_id].invoke_count, 2);
    let db = Db::new(DbConfig::new(tdb.url())).unwrap();
    let id = trace_id.clone();
    assert_eq!(
        db.blocking(move |c| repo::retry_state(c, &id)).unwrap(),
        None,
        "bookkeeping cleared by the landed poll"
    );
    let id = trace_id.clone();
    assert_eq!(db.blocking(move |c| repo::attempts(c, &id)).unwrap().len(), 1);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_wait_at_update_is_retried_and_bookkept_then_succeeds() {
    let vhost = Vhost::create();
    let (_conn, ch) = broker(&vhost).await;
    let tdb = migrated_database();
    let trace_id = unique("t").replace('-', "");
    create_schedule(&tdb.url(), &trace_id, 1, 0);

    // Another session holds the row lock: reads go through, the update waits.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let mut conn = tdb.connect();
        let id = trace_id.clone();
        std::thread::spawn(move || {
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                diesel::sql_query(format!("SELECT * FROM schedule_schedule WHERE trace_id = '{id}' FOR UPDATE"))
                    .execute(c)?;
                locked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(())
            })
            .unwrap();
        })
    };
    locked_rx.recv().unwrap();
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.db.lock_wait_timeout = Duration::from_secs(1);
    config.backoff.base = Duration::from_secs(2);
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    publish_via_exchange(&ch, &schedule_message(&trace_id)).await;

    let seen = tap_until(&ch, Duration::from_secs(20), |seen| seen.iter().any(|(m, _)| m.retries == 1)).await;
    assert!(seen.iter().any(|(m, _)| m.retries == 1));
    // RETRYING is visible to an operator while the lock is held.
    let db = Db::new(DbConfig::new(tdb.url())).unwrap();
    let start = Instant::now();
    let state = loop {
        let id = trace_id.clone();
        if let Some(s) = db.blocking(move |c| repo::retry_state(c, &id)).unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no retry bookkeeping");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(state.retries >= 1);
    assert_eq!(state.last_error_class, "transient");
    assert!(state.last_error.contains("1205"), "{}", state.last_error);
    assert!(state.next_retry_at.is_some());
    release_tx.send(()).unwrap();
    holder.join().unwrap();

    let rows = wait_for_rows(&tdb, Duration::from_secs(30), |r| r.values().all(|r| r.state == 4)).await;
    assert_eq!(rows[&trace_id].invoke_count, 2);
    let id = trace_id.clone();
    assert_eq!(db.blocking(move |c| repo::retry_state(c, &id)).unwrap(), None);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_down_past_the_retry_budget_ends_fail_once_it_returns() {
    let vhost = Vhost::create();
    let (_conn, ch) = broker(&vhost).await;
    let (mut server, tdb, trace_id) = private_server_with_schedule(5);
    server.stop();

    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.backoff.base = Duration::from_secs(2);
    config.backoff.max = Duration::from_secs(2);
    config.backoff.max_retries = 2;
    config.db.checkout_timeout = Duration::from_millis(200);
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    publish_via_exchange(&ch, &schedule_message(&trace_id)).await;

    // Retries 1 and 2, then the give-up FAIL cannot be written: it stays in flight.
    let pending = |h: &FieldTable| h.inner().get("x-celerity-fail").and_then(header::as_text).map(str::to_owned);
    let seen =
        tap_until(&ch, Duration::from_secs(20), |seen| seen.iter().filter(|(_, h)| pending(h).is_some()).count() >= 2)
            .await;
    assert_eq!(seen.iter().filter(|(m, _)| m.retries > 0 && pending(&m.extra_headers).is_none()).count(), 2);
    let err = seen.iter().find_map(|(_, h)| pending(h)).unwrap();
    assert!(err.starts_with("gave up after 2 retries of transient database errors; last error:"), "{err}");

    server.restart();
    let rows = wait_for_rows(&tdb, Duration::from_secs(30), |r| r.values().all(|r| r.state == 5)).await;
    let r = &rows[&trace_id];
    assert_eq!((r.invoke_count, r.finished, r.err.as_str()), (1, true, err.as_str()));
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fatal_database_error_fails_at_once_without_retry() {
    let vhost = Vhost::create();
    let (_conn, ch) = broker(&vhost).await;
    let tdb = migrated_database();
    let trace_id = unique("fatal").replace('-', "");
    create_schedule(&tdb.url(), &trace_id, 3, 0);
    // The database refuses any update that keeps this schedule polling.
    diesel::sql_query(format!(
        "CREATE TRIGGER refuse_poll BEFORE UPDATE ON schedule_schedule FOR EACH ROW BEGIN \
         IF NEW.state = 2 AND NEW.trace_id = '{trace_id}' THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test trigger'; END IF; END"
    ))
    .execute(&mut tdb.connect())
    .unwrap();
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), Registry::with_builtin());
    publish_via_exchange(&ch, &schedule_message(&trace_id)).await;

    let rows = wait_for_rows(&tdb, Duration::from_secs(20), |r| r.values().all(|r| r.state == 5)).await;
    let r = &rows[&trace_id];
    assert!(r.finished);
    assert!(r.err.starts_with("database error:") && r.err.contains("refused by the test trigger"), "{}", r.err);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(drain(&ch, TAP).await.iter().all(|(m, _)| m.retries == 0), "a fatal error is never retried");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_messages_are_dead_lettered_and_the_worker_keeps_going() {
    let vhost = Vhost::create();
    let (_conn, ch) = broker(&vhost).await;
    let tdb = migrated_database();
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), Registry::with_builtin());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let good = encode(&schedule_message("x"), Utc::now()).unwrap();
    let props = basic_properties(&good.properties).unwrap();
    let q = topology::SCHEDULE_QUEUE.name;
    let pickle = props.clone().with_content_type("application/x-python-serialize".into());
    publish_raw(&ch, "", q, b"\x80\x04\x95pickle", pickle).await;
    publish_raw(&ch, "", q, b"[[], {\"trace_id\": ", props.clone()).await;
    let mut unknown = schedule_message("x");
    unknown.task = "some.other.task".into();
    publish_task(&ch, "", q, &unknown).await;
    let mut no_trace = schedule_message("x");
    no_trace.kwargs.clear();
    publish_task(&ch, "", q, &no_trace).await;

    // The worker is still there: a good schedule runs to the end.
    let trace_id = unique("good").replace('-', "");
    create_schedule(&tdb.url(), &trace_id, 2, 0);
    publish_via_exchange(&ch, &schedule_message(&trace_id)).await;
    wait_for_rows(&tdb, Duration::from_secs(20), |r| r.get(&trace_id).is_some_and(|r| r.state == 4)).await;

    let mut dead = Vec::new();
    while let Some(got) =
        ch.basic_get(celerity::broker::DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true }).await.unwrap()
    {
        let headers = got.delivery.properties.headers().clone().unwrap_or_default();
        let reason =
            headers.inner().get("x-celerity-dead-reason").and_then(header::as_text).unwrap_or_default().to_owned();
        assert_eq!(headers.inner().get("x-celerity-dead-from").and_then(header::as_text), Some(q));
        dead.push((reason, got.delivery.data));
    }
    assert_eq!(dead.len(), 4, "{dead:?}");
    // Handled concurrently, so in any order.
    let has = |needle: &str| dead.iter().any(|(reason, _)| reason.contains(needle));
    assert!(has("unsupported content type"), "{dead:?}");
    assert!(dead.iter().any(|(_, body)| body == b"\x80\x04\x95pickle"), "the body is kept as it was");
    assert!(has("not valid JSON"), "{dead:?}");
    assert!(has("unknown task \"some.other.task\""), "{dead:?}");
    assert!(has("no string kwarg \"trace_id\""), "{dead:?}");
    assert!(rows(&tdb).len() == 1, "bad input touched no schedule");
    worker.stop().await.unwrap();
}
