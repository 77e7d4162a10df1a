//! Countdowns arrive within their resolution: on an otherwise quiet worker,
//! 50 schedules at each interval of 1, 2, 5, 10 and 60 s poll with every gap
//! between two polls' starts (the attempt log's `started_at`) within
//! [I, I + 250 ms]. Next polls due within the countdown window wait in
//! `celerity.countdown`, held by the worker until due; the test also runs a
//! worker whose window is 1 s, so the 2 s and longer countdowns go through
//! the delay levels, entering at their highest bit and rounded down.

use std::collections::BTreeMap;
use std::time::Duration;

use celerity_tests::workload::produce;
use celerity_tests::{
    ChildGuard, TestDatabase, Vhost, celerity_bin, confirmed_channel, free_local_addr, migrated_database, temp_dir,
    wait_health,
};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Datetime, Varchar};

const SCHEDULES: usize = 50;
const INTERVALS: [i64; 5] = [1, 2, 5, 10, 60];

/// How late a countdown may fire on a quiet stack.
const RESOLUTION_MS: i64 = 250;

#[derive(QueryableByName)]
struct Attempt {
    #[diesel(sql_type = Varchar)]
    trace_id: String,
    #[diesel(sql_type = Datetime)]
    started_at: NaiveDateTime,
}

/// The gaps between consecutive polls' starts, by trace id prefix (`i<I>_`).
fn gaps(db: &TestDatabase) -> BTreeMap<i64, Vec<i64>> {
    let attempts: Vec<Attempt> =
        diesel::sql_query("SELECT trace_id, started_at FROM celerity_attempt ORDER BY trace_id, attempt")
            .load(&mut db.connect())
            .expect("the attempt log");
    let mut by_interval: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for pair in attempts.windows(2).filter(|p| p[0].trace_id == p[1].trace_id) {
        let interval: i64 = pair[0].trace_id[1..].split('_').next().and_then(|i| i.parse().ok()).expect("i<I>_ prefix");
        by_interval.entry(interval).or_default().push((pair[1].started_at - pair[0].started_at).num_milliseconds());
    }
    by_interval
}

async fn every_gap_within_resolution(extra: &[&str]) {
    let vhost = Vhost::create();
    let db = migrated_database();
    let dir = temp_dir();
    let http = free_local_addr();
    let mut cmd = std::process::Command::new(celerity_bin());
    cmd.args(["worker", "--example-plugin", "--broker-url", &vhost.url(), "--database-url", &db.url()])
        .args(["--concurrency", "64", "--http-addr", &http.to_string(), "--sweep-interval", "0", "--without-events"])
        .args(extra);
    let mut worker = ChildGuard::spawn(cmd, dir.join("worker.log"));
    let (_conn, ch) = confirmed_channel(&vhost).await;
    // An idle stack: the worker is up before the first poll is published, and
    // the schedules start a few milliseconds apart, so no first poll waits
    // behind a burst of 250 (a gap counts its first poll's own run time).
    wait_health(http, 200, Duration::from_secs(30)).await;
    let mut produced = 0;
    for interval in INTERVALS {
        // Three polls, two gaps each; two polls for 60 s, to keep the test
        // near a minute.
        let polls = if interval == 60 { 2 } else { 3 };
        for _ in 0..SCHEDULES {
            produce(&ch, &db.url(), &format!("i{interval}_"), polls, interval).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        produced += SCHEDULES;
    }
    let done = "SELECT COUNT(*) AS n FROM schedule_schedule WHERE state = 4";
    let deadline = std::time::Instant::now() + Duration::from_secs(100);
    while celerity_tests::workload::count(&db, done) < produced as i64 {
        assert!(worker.running(), "the worker exited:\n{}", worker.log());
        if std::time::Instant::now() > deadline {
            let open = "SELECT COUNT(*) AS n FROM schedule_schedule WHERE state <> 4";
            panic!(
                "{} schedules left unfinished; polls landed by interval: {:?}\n{}",
                celerity_tests::workload::count(&db, open),
                gaps(&db).iter().map(|(i, g)| (*i, g.len())).collect::<Vec<_>>(),
                worker.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gaps = gaps(&db);
    for interval in INTERVALS {
        let g = &gaps[&interval];
        let expected = if interval == 60 { SCHEDULES } else { 2 * SCHEDULES };
        assert_eq!(g.len(), expected, "I = {interval} s: gaps measured");
        let (low, high) = (interval * 1000, interval * 1000 + RESOLUTION_MS);
        let outside: Vec<&i64> = g.iter().filter(|ms| !(low..=high).contains(*ms)).collect();
        assert!(outside.is_empty(), "I = {interval} s {extra:?}: gaps outside [{low}, {high}] ms: {outside:?}");
        println!("I = {interval} s {extra:?}: gaps {} .. {} ms", g.iter().min().unwrap(), g.iter().max().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdowns_held_by_the_worker_arrive_within_250_ms() {
    every_gap_within_resolution(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdowns_through_the_delay_levels_arrive_within_250_ms() {
    every_gap_within_resolution(&["--countdown-window", "1"]).await;
}
