//! Schedules created the way the framework's producer creates them (a row
//! in POLL at invoke_count 1, then a Celery `schedule` message on
//! `plugin_schedule`): one at a time for the tests, in bulk for the
//! benchmarks.

use broker_proto::{TaskMessage, topology};
use celerity_db::State;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use lapin::options::BasicPublishOptions;

use crate::{TestDatabase, example_data, insert_schedule, publish_task, task_message, unique};

/// The contenders of workload W1 (`scripts/bench`, `src/bin/bench.rs`), in
/// the order of its table: the raw loop; Celerity with one and two workers,
/// with its next polls on the framework's queue, and on a 3-node RabbitMQ
/// cluster; Python Celery with threads and with prefork; the framework's
/// Python plugin in Celerity's hosts and in the framework's own worker
/// (prefork, threads, and as the plugin template runs it: `-P threads -c 500`).
pub const W1_CONTENDERS: &[&str] = &[
    "raw",
    "celerity-1",
    "celerity-2",
    "celerity-1-framework-queue",
    "python-threads",
    "python-prefork",
    "celerity-python",
    "framework-prefork",
    "framework-threads",
    "framework-template",
    "celerity-1-cluster",
    "celerity-1-traced",
    "celerity-1-traced-unsampled",
];

/// The producer's `schedule` message for `trace_id` (no Celerity headers).
pub fn schedule_message(trace_id: &str) -> TaskMessage {
    task_message(topology::SCHEDULE_TASK, &[("trace_id", trace_id)])
}

/// The producer's row for `trace_id`: the example plugin (version 1.0.0),
/// needing `polls` polls `interval` seconds apart.
pub fn create_schedule(db_url: &str, trace_id: &str, polls: i64, interval: i64) {
    insert_schedule(db_url, trace_id, "1.0.0", State::Poll, &example_data(polls, interval));
}

/// Publishes the producer's first poll of `trace_id` to `plugin_schedule`
/// on the default exchange, confirmed.
pub async fn publish_first_poll(ch: &lapin::Channel, trace_id: &str) {
    publish_task(ch, "", topology::SCHEDULE_QUEUE.name, &schedule_message(trace_id)).await;
}

/// A schedule created as the producer creates it, under a fresh trace id
/// starting with `prefix`: its row, then its first poll. Returns the trace id.
pub async fn produce(ch: &lapin::Channel, db_url: &str, prefix: &str, polls: i64, interval: i64) -> String {
    let trace_id = unique(prefix).replace('-', "");
    create_schedule(db_url, &trace_id, polls, interval);
    publish_first_poll(ch, &trace_id).await;
    trace_id
}

/// Inserts `n` schedules of the example plugin, trace ids `<prefix><i:08>`.
pub fn insert_rows(db: &TestDatabase, prefix: &str, n: usize, polls: i64, interval: u64) {
    let mut conn = db.connect();
    let data = format!(
        r#"{{"inputs": {{"polls": {polls}, "interval": {interval}}}, "context": {{"storage": {{"executions": 1}}, "outputs": {{}}, "data": {{}}}}, "outputs": {{}}}}"#
    );
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("('{prefix}{i:08}', '1.0.0', 2, 1, '{data}', UTC_TIMESTAMP(6), NULL, 0, '')"))
            .collect();
        diesel::sql_query(format!("INSERT INTO schedule_schedule VALUES {}", values.join(",")))
            .execute(&mut conn)
            .unwrap();
    }
}

/// Fills the tables with `n` schedules finished a day ago, as earlier runs
/// leave them (trace ids `f<i:09>`, SUCCESS after `polls` polls), each with its
/// attempt-log rows: the history a worker's statements run beside.
pub fn insert_finished(db: &TestDatabase, n: usize, polls: i64) {
    if n == 0 {
        return;
    }
    let mut conn = db.connect();
    // MariaDB's sequence engine makes the rows server-side, in one statement each.
    diesel::sql_query(format!(
        "INSERT INTO schedule_schedule \
         SELECT CONCAT('f', LPAD(seq, 9, '0')), '1.0.0', 4, {last}, \
                '{{\"inputs\": {{\"polls\": {polls}, \"interval\": 0}}, \"context\": {{\"storage\": {{\"executions\": {last}}}, \"outputs\": {{}}, \"data\": {{}}}}, \"outputs\": {{\"polls_done\": {polls}}}}}', \
                UTC_TIMESTAMP(6) - INTERVAL 1 DAY, UTC_TIMESTAMP(6) - INTERVAL 1 DAY, 0, '' \
         FROM seq_1_to_{n}",
        last = polls + 1
    ))
    .execute(&mut conn)
    .expect("finished schedules");
    diesel::sql_query(format!(
        "INSERT INTO celerity_attempt (trace_id, attempt, started_at, ended_at, outcome, error, hostname, next_poll_at, task_id) \
         SELECT CONCAT('f', LPAD(s.seq, 9, '0')), a.seq, UTC_TIMESTAMP(6) - INTERVAL 1 DAY, UTC_TIMESTAMP(6) - INTERVAL 1 DAY, \
                IF(a.seq = {last}, 'SUCCESS', 'POLL'), '', 'celerity@earlier', NULL, UUID() \
         FROM seq_1_to_{n} s JOIN seq_2_to_{last} a",
        last = polls + 1
    ))
    .execute(&mut conn)
    .expect("their attempts");
}

/// Publishes the producer's first message of each, confirmed in batches.
pub async fn publish_first_polls(ch: &lapin::Channel, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for i in chunk {
            confirms.push(publish_schedule(ch, &format!("{prefix}{i:08}")).await);
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack());
        }
    }
}

/// Publishes a `schedule` message for `trace_id` to `plugin_schedule`, as
/// the framework's producer sends it; returns the pending confirm.
pub async fn publish_schedule(ch: &lapin::Channel, trace_id: &str) -> lapin::PublisherConfirm {
    let m = task_message(topology::SCHEDULE_TASK, &[("trace_id", trace_id)]);
    let out = broker_proto::encode(&m, chrono::Utc::now()).expect("encode");
    let props = celerity::broker::properties::basic_properties(&out.properties).expect("properties");
    ch.basic_publish("".into(), topology::SCHEDULE_QUEUE.name.into(), BasicPublishOptions::default(), &out.body, props)
        .await
        .expect("publish")
}

/// `n` schedules created by [`produce`], in order.
pub async fn produce_many(
    ch: &lapin::Channel,
    db_url: &str,
    prefix: &str,
    n: usize,
    polls: i64,
    interval: i64,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(produce(ch, db_url, prefix, polls, interval).await);
    }
    ids
}

/// The one `BIGINT` column `n` that `sql` selects, e.g. `SELECT COUNT(*) AS n ...`.
pub fn count(db: &TestDatabase, sql: &str) -> i64 {
    select_n(&mut db.connect(), sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// [`count`], or `None` while the server refuses a connection or the query
/// (a contender may hold every connection the server has).
pub fn try_count(db: &TestDatabase, sql: &str) -> Option<i64> {
    let mut conn = diesel::MysqlConnection::establish(&db.url()).ok()?;
    select_n(&mut conn, sql).ok()
}

fn select_n(conn: &mut diesel::MysqlConnection, sql: &str) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<N>(conn).map(|r| r.n)
}
