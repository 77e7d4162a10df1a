//! When broker nodes or queues go away: a failover list connects to the
//! first node that answers and moves round it after a loss, and a queue
//! deleted under a running worker is declared and consumed again within
//! seconds, without a reconnect, while the worker's other consumers keep
//! running. (The three-node cluster scenarios come with the cluster harness.)

use std::time::{Duration, Instant};

use broker_proto::topology;
use celerity::broker::BrokerAddr;
use celerity::broker::connect::{connect, reconnect};
use celerity::plugins::Registry;
use celerity_db::State;
use celerity_tests::{
    InProcessWorker, Vhost, confirmed_channel, example_data, free_local_addr, free_port, http_get, insert_schedule,
    metric_sample, migrated_database, publish_task, task_message, wait_for_rows, wait_health, worker_config,
};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

/// The consumers on `queue` now, asked on a channel of its own (a queue that
/// does not exist closes the channel that asks); `None` while it does not exist.
async fn consumers_on(conn: &lapin::Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.expect("channel");
    let declared = ch.queue_declare(
        queue.into(),
        QueueDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    );
    declared.await.ok().map(|q| q.consumer_count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_queue_is_declared_and_consumed_again_without_a_reconnect() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (conn, ch) = confirmed_channel(&vhost).await;
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.http_addr = free_local_addr();
    let http = config.http_addr;
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    wait_health(http, 200, Duration::from_secs(30)).await;
    let schedule = topology::SCHEDULE_QUEUE.name;
    let callback = topology::CALLBACK_QUEUE.name;
    assert_eq!(consumers_on(&conn, schedule).await, Some(1));

    ch.queue_delete(schedule.into(), QueueDeleteOptions::default()).await.expect("delete the queue");
    let start = Instant::now();
    while consumers_on(&conn, schedule).await != Some(1) {
        assert!(start.elapsed() < Duration::from_secs(15), "{schedule} was not consumed again within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("consumed again {:.1} s after the queue was deleted", start.elapsed().as_secs_f64());
    assert_eq!(consumers_on(&conn, callback).await, Some(1), "the other consumers kept running");

    // The queue works as before: a schedule published to it is polled to the end.
    insert_schedule(&tdb.url(), "after", "1.0.0", State::Poll, &example_data(2, 0));
    publish_task(&ch, "", schedule, &task_message(topology::SCHEDULE_TASK, &[("trace_id", "after")])).await;
    wait_for_rows(&tdb, Duration::from_secs(30), |r| r.get("after").is_some_and(|r| r.state == State::Success.code()))
        .await;

    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(http, "/metrics")).await.unwrap().unwrap();
    let cancelled = format!("celerity_consumer_cancellations_total{{queue=\"{schedule}\"}}");
    assert_eq!(metric_sample(&metrics, &cancelled), Some(1.0), "{metrics}");
    assert_eq!(metric_sample(&metrics, "celerity_broker_reconnects_total"), Some(0.0), "no reconnect: {metrics}");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_failover_list_takes_the_first_node_that_answers_and_a_loss_moves_round_it() {
    let vhost = Vhost::create();
    let dead = format!("amqp://127.0.0.1:{}/%2f", free_port());
    let addr = BrokerAddr::new(format!("{dead};{}", vhost.url()));
    let connected = connect(&addr, Duration::from_secs(10)).await.expect("the second node answers");
    assert_eq!(connected.node, 1);
    // Losing node 1, the next is node 0 (nothing listens), then node 1 again.
    let again = reconnect(&addr, 1).await.expect("round the list");
    assert_eq!(again.node, 1);
}
