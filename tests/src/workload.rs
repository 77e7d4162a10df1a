//! Workloads for the benchmarks: schedules created the way the framework's
//! producer creates them (a row at invoke_count 1, then a Celery message on
//! `plugin_schedule`), in bulk.

use broker_proto::topology;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use lapin::options::BasicPublishOptions;

use crate::{TestDatabase, task_message};

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

/// The one `BIGINT` column `n` that `sql` selects, e.g. `SELECT COUNT(*) AS n ...`.
pub fn count(db: &TestDatabase, sql: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(sql).get_result::<N>(&mut db.connect()).unwrap_or_else(|e| panic!("{sql}: {e}")).n
}
