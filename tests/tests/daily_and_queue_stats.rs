//! What replaces a plugin app's `beat` and `c-monitor` processes, against
//! the real MariaDB and RabbitMQ: the daily `delete_expired_schedule` sent
//! once a day by one of several workers (with a clock the test controls),
//! and the queues' counts from the broker.

use broker_proto::topology;
use celerity::broker::Publisher;
use celerity::control::queue_stats::{self, Management, QueueCounts};
use celerity::tasks::messages::Sender;
use celerity::worker::daily::{self, Daily};
use celerity_tests::{
    Vhost, confirmed_channel, declare_framework_queue, migrated_database, publish_task, task_message,
};
use chrono::{NaiveDate, TimeZone, Utc};
use lapin::options::{BasicConsumeOptions, BasicGetOptions, BasicQosOptions};
use lapin::types::FieldTable;

/// One worker's part in the daily delete: its publisher on its own connection, and its name.
struct DailyWorker {
    _conn: lapin::Connection,
    publisher: Publisher,
    sender: Sender,
}

async fn daily_worker(vhost: &Vhost, name: &str) -> DailyWorker {
    let conn = celerity_tests::connect(&vhost.url()).await;
    let publisher =
        Publisher::new(conn.create_channel().await.unwrap(), std::time::Duration::from_secs(1)).await.unwrap();
    DailyWorker { _conn: conn, publisher, sender: Sender::new(&format!("celerity@{name}")) }
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_delete_is_sent_once_a_day_whichever_worker_checks_and_none_is_missed_after_restarts() {
    let (vhost, db) = (Vhost::create(), migrated_database());
    let (_conn, channel) = confirmed_channel(&vhost).await;
    declare_framework_queue(&channel, topology::DELETE_QUEUE.name).await;
    let handle = db.handle();
    let (a, b) = (daily_worker(&vhost, "a").await, daily_worker(&vhost, "b").await);
    let at = |d, h, m, s| Utc.with_ymd_and_hms(2026, 12, d, h, m, s).unwrap();
    let check = |w: &DailyWorker, now| {
        let handle = handle.clone();
        let (publisher, sender) = (w.publisher.clone(), w.sender.clone());
        async move { daily::check(&handle, &publisher, &sender, now).await.unwrap() }
    };

    // The first check ever takes its own day as sent: the beat it replaces sent it at 00:00.
    assert_eq!(check(&a, at(3, 23, 59, 59)).await, Daily::AlreadySent(day(3)));
    assert_eq!(check(&b, at(3, 23, 59, 59)).await, Daily::AlreadySent(day(3)));
    // Midnight: both workers check at once, and one of them sends.
    let (first, second) = tokio::join!(check(&a, at(4, 0, 0, 1)), check(&b, at(4, 0, 0, 1)));
    let mut outcomes = [first, second];
    outcomes.sort_by_key(|o| matches!(o, Daily::AlreadySent(_)));
    assert_eq!(outcomes, [Daily::Sent(day(4)), Daily::AlreadySent(day(4))]);
    // Later that day, and a restarted worker (a new process, a new sender): nothing more.
    assert_eq!(check(&a, at(4, 0, 5, 1)).await, Daily::AlreadySent(day(4)));
    let restarted = daily_worker(&vhost, "a").await;
    assert_eq!(check(&restarted, at(4, 13, 0, 0)).await, Daily::AlreadySent(day(4)));
    // No worker up at midnight of the 5th (all down until 09:00): the first up that day sends it.
    assert_eq!(check(&b, at(5, 9, 0, 0)).await, Daily::Sent(day(5)));
    assert_eq!(check(&restarted, at(5, 9, 0, 1)).await, Daily::AlreadySent(day(5)));

    // Exactly two messages, each the framework's task with no arguments, as beat sends it
    // (read on a connection of its own, bounded in time).
    let (_reader, reader) = confirmed_channel(&vhost).await;
    let mut tasks = Vec::new();
    while let Some(got) = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        reader.basic_get(topology::DELETE_QUEUE.name.into(), BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get answers")
    .unwrap()
    {
        let props = celerity::broker::properties::properties_of(&got.delivery.properties);
        let message = broker_proto::decode(&props, &got.delivery.data, &broker_proto::DecodeOptions::default())
            .expect("a Celery message");
        assert!(message.args.is_empty() && message.kwargs.is_empty(), "{message:?}");
        tasks.push(message.task);
    }
    assert_eq!(tasks, [topology::DELETE_TASK, topology::DELETE_TASK]);
    let last = handle.blocking(|c| celerity_db::daily::last(c, topology::DELETE_TASK)).unwrap().unwrap();
    assert_eq!(last.0, day(5));
    assert!(last.1.unwrap().ends_with("@celerity@b"), "the row says who sent it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_counts_are_read_from_the_broker_ready_unacked_and_consumers() {
    let vhost = Vhost::create();
    let (conn, channel) = confirmed_channel(&vhost).await;
    let queue = topology::CALLBACK_QUEUE.name;
    declare_framework_queue(&channel, queue).await;
    for _ in 0..3 {
        publish_task(&channel, "", queue, &task_message(topology::CALLBACK_TASK, &[("trace_id", "t")])).await;
    }
    // A consumer that takes one message and holds it unacknowledged.
    let consumer_channel = conn.create_channel().await.unwrap();
    consumer_channel.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let _consumer = consumer_channel
        .basic_consume(queue.into(), "holder".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();

    let management = Management::for_broker(&vhost.url(), None);
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(5))).build().into();
    let queues = vec![queue.to_owned(), "no-such-queue".to_owned()];
    // The management API samples every few seconds: wait for it to see the held message.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (counted, missing) = loop {
        let (counted, missing) = queue_stats::refresh(&conn, &agent, management.as_ref(), &queues).await;
        let held = counted.first().is_some_and(|(_, c)| c.unacked == Some(1));
        if held || std::time::Instant::now() > deadline {
            break (counted, missing);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(missing, None, "the management API answers (scripts/test enables it)");
    assert_eq!(
        counted,
        [(queue.to_owned(), QueueCounts { ready: 2, unacked: Some(1), consumers: 1 })],
        "a missing queue is left out"
    );

    // A management API that does not answer: ready and consumers still come, unacked does not.
    let nowhere = Management::for_broker(&vhost.url(), Some("http://127.0.0.1:9"));
    let (counted, missing) = queue_stats::refresh(&conn, &agent, nowhere.as_ref(), &queues[..1]).await;
    assert!(missing.is_some());
    assert_eq!(counted, [(queue.to_owned(), QueueCounts { ready: 2, unacked: None, consumers: 1 })]);
}
