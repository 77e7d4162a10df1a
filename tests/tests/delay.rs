//! Countdowns in the broker: delayed messages come back to their queue
//! unchanged, Python's eta messages are moved there rather than held, both
//! queue types work, and poison messages are dead-lettered.

use std::process::Command;
use std::time::{Duration, Instant};

use broker_proto::{DecodeOptions, FieldTable, decode, delay, eta_after, header, topology};
use celerity::broker::QueueType;
use celerity::broker::properties::properties_of;
use celerity::broker::{DEAD_LETTER_QUEUE, Publish, Publisher, QueueKinds, declare_topology};
use celerity::plugins::Registry;
use celerity_db::State;
use celerity_tests::{
    InProcessWorker, Vhost, confirmed_channel, example_data, insert_schedule, migrated_database, publish_task, python,
    python_script, rows, task_message, unique, wait_for_rows, worker_config,
};
use chrono::Utc;
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};

async fn queue_depth(ch: &lapin::Channel, queue: &str) -> u32 {
    ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_returns_to_its_queue_unchanged_when_due() {
    for queue_type in [QueueType::Classic, QueueType::Quorum] {
        let vhost = Vhost::create();
        let (conn, ch) = confirmed_channel(&vhost).await;
        let queue = topology::SCHEDULE_QUEUE.name;
        declare_topology(&ch, &[queue.to_owned()], queue_type).await.unwrap();
        let publisher = Publisher::new(conn.create_channel().await.unwrap(), Duration::from_secs(1)).await.unwrap();
        let mut m = task_message(topology::SCHEDULE_TASK, &[("trace_id", "abc")]);
        m.extra_headers.insert("x-custom".into(), header::text("kept"));
        m.eta = eta_after(Utc::now(), chrono::Duration::seconds(3));
        publisher.publish_task_to_queue(queue, &m).await.unwrap();

        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(queue_depth(&ch, queue).await, 0, "{queue_type:?}: not delivered early");
        let started = Instant::now();
        let got = loop {
            if let Some(got) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
                break got;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{queue_type:?}: never came back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let arrived = Utc::now();
        let back =
            decode(&properties_of(&got.delivery.properties), &got.delivery.data, &DecodeOptions::default()).unwrap();
        assert_eq!(back.id, m.id, "{queue_type:?}");
        assert_eq!(back.kwargs, m.kwargs);
        assert_eq!(back.eta, m.eta);
        assert_eq!(back.extra_headers.inner().get("x-custom").and_then(header::as_text), Some("kept"));
        assert_eq!(delay::destination(got.delivery.routing_key.as_str()), Some(queue));
        // Whole seconds rounded down: up to a second early (the consuming
        // worker waits out the rest), never late by the rounding.
        let early = (m.eta.unwrap().with_timezone(&Utc) - arrived).num_milliseconds();
        assert!((-250..1000).contains(&early), "{queue_type:?}: arrived {early} ms before its eta");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_eta_message_is_moved_to_the_broker_not_run_early() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    let mut config = worker_config(&vhost.url(), &tdb.url());
    // With the default countdown window a 6 s countdown is held in
    // `celerity.countdown` instead (tests/tests/countdowns.rs); here it is
    // beyond the window and goes to the delay levels.
    config.countdown_window = Duration::from_secs(1);
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let trace_id = unique("t").replace('-', "");
    insert_schedule(&tdb.url(), &trace_id, "1.0.0", State::Poll, &example_data(1, 0));
    // The framework's producer: apply_async(countdown=6) from real Python Celery.
    let script = format!(
        "import sys; sys.path.insert(0, {dir:?}); from framework import make_app, SCHEDULE_TASK; \
         make_app('p', {url:?}, 'plugin_schedule').send_task(SCHEDULE_TASK, kwargs={{'trace_id': {id:?}}}, \
         countdown=6, queue='plugin_schedule')",
        dir = python_script("").display().to_string(),
        url = vhost.url(),
        id = trace_id,
    );
    let out = Command::new(python()).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sent = Utc::now();

    // It waits in a delay queue, not in the worker.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting: u32 = {
        let mut n = 0;
        for level in 0..delay::LEVELS {
            n += queue_depth(&ch, &delay::level_name(level)).await;
        }
        n
    };
    assert_eq!(waiting, 1, "the message waits in the broker's delay queues");
    assert_eq!(rows(&tdb)[&trace_id].invoke_count, 1, "not run early");
    wait_for_rows(&tdb, Duration::from_secs(20), |r| r[&trace_id].state == 4).await;
    let ran_after = (Utc::now() - sent).num_milliseconds();
    assert!(ran_after >= 5_000, "ran {ran_after} ms after a 6 s countdown");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_queues_run_schedules_with_countdowns() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let mut config = worker_config(&vhost.url(), &tdb.url());
    (config.queue_type, config.celerity_queue_type) = (QueueType::Quorum, QueueType::Quorum);
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_conn, ch) = confirmed_channel(&vhost).await;
    let trace_id = unique("t").replace('-', "");
    insert_schedule(&tdb.url(), &trace_id, "1.0.0", State::Poll, &example_data(2, 2));
    publish_task(
        &ch,
        "",
        topology::SCHEDULE_QUEUE.name,
        &task_message(topology::SCHEDULE_TASK, &[("trace_id", &trace_id)]),
    )
    .await;
    let done = wait_for_rows(&tdb, Duration::from_secs(30), |r| r[&trace_id].state == 4).await;
    assert_eq!(done[&trace_id].invoke_count, 3);
    worker.stop().await.unwrap();
}

/// The recommended cluster setting: the framework's queues classic, as its
/// producers declare them, and Celerity's own quorum, so everything after a
/// schedule's first message lives in replicated queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_framework_queues_with_quorum_own_queues_run_schedules() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let mut config = worker_config(&vhost.url(), &tdb.url());
    (config.queue_type, config.celerity_queue_type) = (QueueType::Classic, QueueType::Quorum);
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    let (_conn, ch) = confirmed_channel(&vhost).await;
    // The framework's producer declares its queue as it always has.
    celerity_tests::declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let trace_id = unique("t").replace('-', "");
    insert_schedule(&tdb.url(), &trace_id, "1.0.0", State::Poll, &example_data(3, 2));
    let m = task_message(topology::SCHEDULE_TASK, &[("trace_id", &trace_id)]);
    publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &m).await;
    let done = wait_for_rows(&tdb, Duration::from_secs(40), |r| r[&trace_id].state == 4).await;
    assert_eq!(done[&trace_id].invoke_count, 4);
    let types = vhost.queue_types();
    for framework in [topology::SCHEDULE_QUEUE.name, topology::CALLBACK_QUEUE.name] {
        assert_eq!(types.get(framework).map(String::as_str), Some("classic"), "{framework}: {types:?}");
    }
    for own in [topology::NEXT_POLL_QUEUE, DEAD_LETTER_QUEUE, delay::level_name(0).as_str()] {
        assert_eq!(types.get(own).map(String::as_str), Some("quorum"), "{own}: {types:?}");
    }
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declaring_over_a_queue_of_the_other_type_names_the_argument() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_topology(&ch, &[topology::SCHEDULE_QUEUE.name.to_owned()], QueueType::Classic).await.unwrap();
    let mut config = worker_config(&vhost.url(), &tdb.url());
    (config.queue_type, config.celerity_queue_type) = (QueueType::Quorum, QueueType::Quorum);
    config.example_plugin = true;
    let err = celerity::worker::run(config, std::future::pending()).await.unwrap_err().to_string();
    assert!(
        err.contains("plugin_schedule") && (err.contains("x-queue-type") || err.contains("x-max-priority")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_are_dead_lettered_after_max_deliveries() {
    for queue_type in [QueueType::Classic, QueueType::Quorum] {
        let vhost = Vhost::create();
        let tdb = migrated_database();
        let (_conn, ch) = confirmed_channel(&vhost).await;
        let queue = topology::SCHEDULE_QUEUE.name;
        // As the worker below declares it: a quorum queue's delivery limit is --max-deliveries.
        let kinds = QueueKinds { framework: queue_type, own: queue_type, delivery_limit: 5 };
        declare_topology(&ch, &[queue.to_owned()], kinds).await.unwrap();
        let trace_id = unique("poison").replace('-', "");
        insert_schedule(&tdb.url(), &trace_id, "1.0.0", State::Poll, &example_data(1, 0));
        let mut m = task_message(topology::SCHEDULE_TASK, &[("trace_id", &trace_id)]);
        if queue_type == QueueType::Classic {
            // Earlier copies were delivered 4 times (Celerity's own counter).
            m.extra_headers
                .insert(celerity::delivery::poison::DELIVERIES_HEADER.into(), broker_proto::AMQPValue::LongInt(4));
        }
        publish_task(&ch, "", queue, &m).await;
        // A consumer that dies on it: taken and handed back, again and again.
        let handbacks = if queue_type == QueueType::Quorum { 4 } else { 1 };
        for _ in 0..handbacks {
            let got = loop {
                if let Some(got) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.unwrap() {
                    break got;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            got.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
        }
        let mut config = worker_config(&vhost.url(), &tdb.url());
        (config.queue_type, config.celerity_queue_type) = (queue_type, queue_type);
        config.max_deliveries = 5;
        let worker = InProcessWorker::start(config, Registry::with_builtin());
        let started = Instant::now();
        let dead = loop {
            if let Some(got) = ch.basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
                break got;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "{queue_type:?}: not dead-lettered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let headers = dead.delivery.properties.headers().clone().unwrap_or_default();
        let reason =
            headers.inner().get("x-celerity-dead-reason").and_then(header::as_text).unwrap_or_default().to_owned();
        assert!(reason.contains("delivered 5 times"), "{queue_type:?}: {reason}");
        assert_eq!(rows(&tdb)[&trace_id].invoke_count, 1, "{queue_type:?}: the poison message did not run");
        let row = wait_for_rows(&tdb, Duration::from_secs(10), |r| r[&trace_id].state == State::Fail.code()).await;
        assert!(row[&trace_id].err.starts_with("message dead-lettered: delivered 5 times"), "{:?}", row[&trace_id]);
        worker.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_classic_message_is_counted_and_still_runs() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    let queue = topology::SCHEDULE_QUEUE.name;
    declare_topology(&ch, &[queue.to_owned()], QueueType::Classic).await.unwrap();
    let trace_id = unique("t").replace('-', "");
    insert_schedule(&tdb.url(), &trace_id, "1.0.0", State::Poll, &example_data(1, 0));
    publish_task(&ch, "", queue, &task_message(topology::SCHEDULE_TASK, &[("trace_id", &trace_id)])).await;
    let got = loop {
        if let Some(got) = ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.unwrap() {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    got.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), Registry::with_builtin());
    wait_for_rows(&tdb, Duration::from_secs(20), |r| r[&trace_id].state == 4).await;
    assert_eq!(rows(&tdb)[&trace_id].invoke_count, 2, "polled once");
    worker.stop().await.unwrap();
    assert!(ch.basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true }).await.unwrap().is_none());
}
