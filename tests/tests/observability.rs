//! The worker's `/metrics` and `/healthz` against the real RabbitMQ and
//! MariaDB: the counters match what the worker did, and health follows the
//! database and the broker.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker_proto::topology;
use celerity::plugins::Registry;
use celerity_db::{Db, DbConfig, State, migrate};
use celerity_tests::{
    InProcessWorker, PrivateMariadb, TestDatabase, Vhost, confirmed_channel, declare_framework_queue, example_data,
    free_local_addr, http_get, insert_schedule, metric_sample, migrated_database, publish_task, task_message, unique,
    wait_for_rows, worker_config,
};

/// Waits until `path` answers with `want`, returning the last body.
async fn until_status(addr: SocketAddr, path: &'static str, want: u16, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let answer = tokio::task::spawn_blocking(move || http_get(addr, path)).await.unwrap();
        if let Ok((status, body)) = &answer
            && *status == want
        {
            return body.clone();
        }
        assert!(start.elapsed() < within, "{path} after {within:?}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_what_the_worker_did() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let ids: Vec<String> = (0..5).map(|_| unique("m").replace('-', "")).collect();
    for id in &ids {
        insert_schedule(&tdb.url(), id, "1.0.0", State::Poll, &example_data(2, 1));
    }
    let http = free_local_addr();
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.http_addr = http;
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    for id in &ids {
        let m = task_message(topology::SCHEDULE_TASK, &[("trace_id", id)]);
        publish_task(&ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, &m).await;
    }
    // One message nobody can run: dead-lettered.
    let unknown = task_message("no.such.task", &[("trace_id", "x")]);
    publish_task(&ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, &unknown).await;
    wait_for_rows(&tdb, Duration::from_secs(30), |r| r.values().all(|r| r.state == State::Success.code())).await;

    let body = until_status(http, "/healthz", 200, Duration::from_secs(10)).await;
    assert_eq!(body, "ok\n");
    let start = Instant::now();
    let metrics = loop {
        let (status, metrics) = tokio::task::spawn_blocking(move || http_get(http, "/metrics")).await.unwrap().unwrap();
        assert_eq!(status, 200);
        if metric_sample(&metrics, "celerity_dead_lettered_total").is_some()
            && metric_sample(&metrics, r#"celerity_tasks_total{task="schedule",outcome="success"}"#) == Some(5.0)
        {
            break metrics;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Each schedule: one poll that polls again (due 1 s later: an eta), one
    // that succeeds.
    assert_eq!(
        metric_sample(&metrics, r#"celerity_tasks_total{task="schedule",outcome="poll"}"#),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        metric_sample(&metrics, r#"celerity_poll_duration_seconds_count{task="schedule"}"#),
        Some(10.0),
        "{metrics}"
    );
    assert_eq!(metric_sample(&metrics, "celerity_dead_lettered_total"), Some(1.0), "{metrics}");
    assert_eq!(metric_sample(&metrics, "celerity_polls_in_flight"), Some(0.0), "{metrics}");
    assert!(
        metric_sample(&metrics, r#"celerity_db_pool_connections{state="idle"}"#).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(metric_sample(&metrics, "celerity_eta_lateness_seconds_count").is_some(), "{metrics}");
    assert_eq!(
        metric_sample(&metrics, "celerity_broker_reconnects_total"),
        Some(0.0),
        "no reconnect happened: {metrics}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthz_follows_the_database_and_the_broker() {
    let vhost = Vhost::create();
    let mut server = PrivateMariadb::start();
    let tdb = TestDatabase::create_on(&server.base());
    Db::new(DbConfig::new(tdb.url())).unwrap().blocking(migrate::run).unwrap();
    let http = free_local_addr();
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.http_addr = http;
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    until_status(http, "/healthz", 200, Duration::from_secs(20)).await;

    server.stop();
    let body = until_status(http, "/healthz", 503, Duration::from_secs(20)).await;
    assert_eq!(body, "database: not answering\n");
    server.restart();
    until_status(http, "/healthz", 200, Duration::from_secs(30)).await;

    // The vhost goes away: the worker's connection is closed and cannot come back.
    let vhost_name = vhost.url().rsplit('/').next().unwrap().to_owned();
    let out = std::process::Command::new("rabbitmqctl").args(["delete_vhost", &vhost_name]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = until_status(http, "/healthz", 503, Duration::from_secs(20)).await;
    assert_eq!(body, "broker: not connected\n");
    worker.stop().await.unwrap();
    drop(server);
}
