//! Memory that grows with work: a worker nobody scrapes must not keep every
//! histogram sample. Drives tens of thousands of polls through a worker
//! whose `/metrics` is never read, against the real RabbitMQ and MariaDB,
//! and checks the exporter's sample storage was drained. RSS is left to
//! `scripts/bench-soak`: it is too noisy for a test.

use std::time::{Duration, Instant};

use broker_proto::topology;
use celerity::meters;
use celerity::plugins::Registry;
use celerity_tests::workload::{insert_rows, publish_first_polls};
use celerity_tests::{
    InProcessWorker, Vhost, confirmed_channel, declare_framework_queue, migrated_database, worker_config,
};
use diesel::prelude::*;
use diesel::sql_types::BigInt;

const SCHEDULES: usize = 2_000;
const POLLS: i64 = 10;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn histograms_are_drained_without_a_scraper() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    insert_rows(&tdb, "m", SCHEDULES, POLLS, 0);
    publish_first_polls(&ch, "m", SCHEDULES).await;

    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.concurrency = 16;
    config.events = false;
    // Nobody reads this endpoint in this test: no scrape ever drains the histograms.
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    meters::install();
    let recorded_before = meters::recorded_samples();
    let worker = InProcessWorker::start(config, Registry::with_builtin());

    let started = Instant::now();
    let mut most_waiting = 0;
    let mut conn = tdb.connect();
    loop {
        most_waiting = most_waiting.max(meters::undrained_samples());
        let done = diesel::sql_query("SELECT COUNT(*) AS n FROM schedule_schedule WHERE state = 4")
            .get_result::<Count>(&mut conn)
            .unwrap()
            .n;
        if done == SCHEDULES as i64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(240), "{done} of {SCHEDULES} schedules final after 240 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let polls = SCHEDULES as u64 * POLLS as u64;
    let recorded = meters::recorded_samples() - recorded_before;
    // One duration sample per poll at least: the storage had that much to hold.
    assert!(recorded >= polls, "{recorded} histogram samples for {polls} polls");

    // With no more work, the next drain empties the storage, scraper or not.
    let idle = Instant::now();
    while meters::undrained_samples() > 0 {
        assert!(
            idle.elapsed() < meters::UPKEEP_INTERVAL * 3,
            "{} of {recorded} histogram samples still held {:?} after the last poll (most held during the run: {most_waiting})",
            meters::undrained_samples(),
            idle.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{polls} polls in {:.1} s, {recorded} samples; at most {most_waiting} held at once, none {:?} after the last poll",
        started.elapsed().as_secs_f64(),
        idle.elapsed()
    );
    worker.stop().await.unwrap();
}
