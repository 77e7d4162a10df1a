//! When broker nodes or queues go away: a failover list connects to the
//! first node that answers and moves round it after a loss, and a queue
//! deleted under a running worker is declared and consumed again within
//! seconds, without a reconnect, while the worker's other consumers keep
//! running. What no retry can pass stops the worker with the broker's
//! reason: a queue that exists with other arguments, a declaration the
//! user may not make. (A queue whose node is down is waited for: the
//! three-node cluster scenarios in `rabbit_cluster.rs`.)

use std::time::{Duration, Instant};

use broker_proto::topology;
use celerity::broker::BrokerAddr;
use celerity::broker::QueueType;
use celerity::broker::connect::{connect, reconnect};
use celerity::plugins::Registry;
use celerity_db::State;
use celerity_tests::{
    InProcessWorker, Vhost, VhostUser, celerity_bin, confirmed_channel, example_data, example_worker, free_local_addr,
    free_port, http_get, insert_schedule, metric_sample, migrated_database, publish_task, task_message, wait_for_rows,
    wait_health, worker_config,
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

/// Runs a worker that must stop by itself within 30 s; its exit status and stderr.
fn worker_that_stops(broker: &str, database: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = example_worker(celerity_bin(), broker, database)
        .args(["--http-addr", &free_local_addr().to_string()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start celerity");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("status") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("the worker did not stop within 30 s:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().expect("output");
    (status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn a_queue_that_exists_with_other_arguments_stops_the_worker_with_that_reason() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    // The framework's queue exists as a quorum queue; the worker is told classic.
    celerity::broker::declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name, QueueType::Quorum).await.unwrap();
    let (status, stderr) = worker_that_stops(&vhost.url(), &tdb.url(), &["--queue-type", "classic"]);
    assert!(!status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("celerity: cannot declare queue plugin_schedule:"), "{stderr}");
    assert!(last.contains("PRECONDITION_FAILED") && last.contains("it exists with other arguments"), "{stderr}");
}

#[tokio::test]
async fn a_declaration_the_user_may_not_make_stops_the_worker_without_blaming_arguments() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    // May declare the framework's queues and exchange, nothing of Celerity's own.
    let user = VhostUser::create(&vhost, "^(plugin_schedule|plugin_callback|schedule_delete|default)$");
    let (status, stderr) = worker_that_stops(user.url(), &tdb.url(), &[]);
    assert!(!status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("celerity: cannot declare "), "{stderr}");
    assert!(last.contains("ACCESS_REFUSED"), "{stderr}");
    assert!(!last.contains("other arguments"), "access is not an argument: {stderr}");
    assert!(!stderr.contains("secret-password"), "the password stays out of the log: {stderr}");
}

/// A healthy in-process worker connected as a user of its own, whose grants
/// a test changes, on a fresh vhost, with a guest connection beside it.
struct OwnUser {
    worker: InProcessWorker,
    http: std::net::SocketAddr,
    user: VhostUser,
    conn: lapin::Connection,
    ch: lapin::Channel,
    tdb: celerity_tests::TestDatabase,
    vhost: Vhost,
}

impl OwnUser {
    async fn start(concurrency: usize) -> OwnUser {
        let vhost = Vhost::create();
        let tdb = migrated_database();
        let user = VhostUser::create(&vhost, ".*");
        let (conn, ch) = confirmed_channel(&vhost).await;
        let mut config = worker_config(user.url(), &tdb.url());
        config.concurrency = concurrency;
        config.http_addr = free_local_addr();
        let http = config.http_addr;
        let worker = InProcessWorker::start(config, Registry::with_builtin());
        wait_health(http, 200, Duration::from_secs(30)).await;
        OwnUser { worker, http, user, conn, ch, tdb, vhost }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_revoked_under_a_running_worker_holds_back_that_queue_alone_until_it_is_restored() {
    let OwnUser { worker, http, user, conn, ch, tdb, vhost: _vhost } = OwnUser::start(4).await;
    let (schedule, callback) = (topology::SCHEDULE_QUEUE.name, topology::CALLBACK_QUEUE.name);

    // The worker may no longer declare plugin_callback, and loses its consumer.
    user.permit("^(?!plugin_callback$).*");
    ch.queue_delete(callback.into(), QueueDeleteOptions::default()).await.expect("delete the queue");
    // First the cancellation, then the refused declaration.
    let start = Instant::now();
    let body = loop {
        let body = wait_health(http, 503, Duration::from_secs(15)).await;
        if body.contains("ACCESS_REFUSED") || start.elapsed() > Duration::from_secs(15) {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.starts_with("broker: plugin_callback not available for "), "{body}");
    assert!(body.contains("ACCESS_REFUSED") && body.lines().count() == 1, "{body}");
    // Everything else goes on: plugin_schedule is consumed and a schedule runs to the end.
    assert_eq!(consumers_on(&conn, schedule).await, Some(1));
    insert_schedule(&tdb.url(), "meanwhile", "1.0.0", State::Poll, &example_data(2, 0));
    publish_task(&ch, "", schedule, &task_message(topology::SCHEDULE_TASK, &[("trace_id", "meanwhile")])).await;
    wait_for_rows(&tdb, Duration::from_secs(30), |r| {
        r.get("meanwhile").is_some_and(|r| r.state == State::Success.code())
    })
    .await;

    // The grant comes back: the queue is declared and consumed again, without a reconnect.
    user.permit(".*");
    wait_health(http, 200, Duration::from_secs(15)).await;
    assert_eq!(consumers_on(&conn, callback).await, Some(1));
    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(http, "/metrics")).await.unwrap().unwrap();
    let unavailable = format!("celerity_queue_unavailable_total{{queue=\"{callback}\"}}");
    assert_eq!(metric_sample(&metrics, &unavailable), Some(1.0), "counted once for the outage: {metrics}");
    let consuming = format!("celerity_queue_consuming{{queue=\"{callback}\"}}");
    assert_eq!(metric_sample(&metrics, &consuming), Some(1.0), "{metrics}");
    assert_eq!(metric_sample(&metrics, "celerity_broker_reconnects_total"), Some(0.0), "no reconnect: {metrics}");
    worker.stop().await.unwrap();
}

/// A next poll whose queue is missing (deleted, and the worker may not
/// declare it again) is held with its delivery and published again until the
/// queue is back: it is not handed back in a loop, whose redeliveries would
/// count toward --max-deliveries and FAIL the schedule as poison.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_next_poll_whose_queue_is_missing_is_held_until_the_queue_is_back() {
    // A held delivery keeps its slot: room for all of them.
    let OwnUser { worker, user, conn, ch, tdb, vhost: _vhost, .. } = OwnUser::start(8).await;
    let (schedule, next) = (topology::SCHEDULE_QUEUE.name, topology::NEXT_POLL_QUEUE);
    user.permit("^(?!celerity\\.schedule$).*");
    ch.queue_delete(next.into(), QueueDeleteOptions::default()).await.expect("delete the queue");

    let ids: Vec<String> = (0..6).map(|i| format!("held{i}")).collect();
    for id in &ids {
        insert_schedule(&tdb.url(), id, "1.0.0", State::Poll, &example_data(3, 0));
        publish_task(&ch, "", schedule, &task_message(topology::SCHEDULE_TASK, &[("trace_id", id.as_str())])).await;
    }
    // Each first poll lands; its next poll cannot. Well past max_deliveries
    // (5 here) hand-backs' worth of time, nothing has failed or moved on.
    wait_for_rows(&tdb, Duration::from_secs(30), |r| {
        ids.iter().all(|id| r.get(id).is_some_and(|r| r.invoke_count == 2))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rows = celerity_tests::rows(&tdb);
    for id in &ids {
        assert_eq!((rows[id].state, rows[id].invoke_count), (State::Poll.code(), 2), "{id}: {:?}", rows[id]);
    }
    assert_eq!(consumers_on(&conn, topology::CALLBACK_QUEUE.name).await, Some(1), "the rest keeps running");

    // The queue can be declared again: the held next polls go out, every schedule ends once.
    user.permit(".*");
    let done = wait_for_rows(&tdb, Duration::from_secs(60), |r| {
        ids.iter().all(|id| r.get(id).is_some_and(|r| r.state == State::Success.code()))
    })
    .await;
    let db = tdb.handle();
    for id in &ids {
        assert_eq!(done[id].invoke_count, 4, "{id}: three polls");
        let key = id.clone();
        let attempts = db.blocking(move |c| celerity_db::repo::attempts(c, &key)).unwrap();
        let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(numbers, [2, 3, 4], "{id}: one attempt per poll");
    }
    let dead = consumers_on(&conn, celerity::broker::DEAD_LETTER_QUEUE).await;
    assert!(dead.is_some(), "the dead-letter queue exists");
    let depth = ch
        .queue_declare(
            celerity::broker::DEAD_LETTER_QUEUE.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    assert_eq!(depth, 0, "nothing dead-lettered");
    worker.stop().await.unwrap();
}
