//! The sweeper on the real services: stranded schedules are re-enqueued and
//! finish; a schedule whose message was only late is polled once per
//! invoke_count whichever of the late message and the sweep runs first; one
//! sweep's record keeps the next from doubling it; a worker's periodic sweep
//! rescues a schedule whose message was purged; a callback holding the
//! `scheduling` lock whose every copy is gone is sent again and runs.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker_proto::topology;
use celerity::plugins::{Context, Outcome, Plugin, Registry};
use celerity_db::{HeldCallback, State, repo};
use celerity_tests::workload::publish_first_poll;
use celerity_tests::{
    InProcessWorker, TestDatabase, Vhost, celerity_bin, confirmed_channel, declare_framework_queue, example_data,
    insert_schedule, migrated_database, rows, unique, wait_for_rows, worker_config,
};
use diesel::prelude::*;

/// The example plugin's behaviour (`polls` polls `interval` seconds apart,
/// then success), counting every execute per trace id, landed or not.
#[derive(Clone, Default)]
struct Counting(Arc<Mutex<HashMap<String, u32>>>);

#[derive(serde::Deserialize)]
struct Inputs {
    polls: i32,
    interval: i64,
}

impl Plugin for Counting {
    type Inputs = Inputs;
    type ContextData = serde_json::Value;

    fn execute(&self, inputs: Inputs, ctx: &mut Context<serde_json::Value>) -> Outcome {
        *self.0.lock().expect("counts").entry(ctx.trace_id.clone()).or_default() += 1;
        if let Some(cb) = &ctx.callback {
            ctx.outputs.insert("got".into(), cb.data.clone());
            return Outcome::Success;
        }
        if ctx.invoke_count < inputs.polls + 1 { Outcome::Poll(inputs.interval) } else { Outcome::Success }
    }
}

const VERSION: &str = "counting-1.0.0";
const POLLS: i32 = 3;
/// Seconds between polls: a message polling out of turn shows as a shorter gap.
const INTERVAL: i64 = 1;

fn registry(counting: &Counting) -> Registry {
    let mut r = Registry::with_builtin();
    r.register(VERSION, counting.clone());
    r
}

/// Inserts a schedule created `age_secs` ago.
fn insert_aged(db: &TestDatabase, trace_id: &str, age_secs: i64) {
    insert_schedule(&db.url(), trace_id, VERSION, State::Poll, &example_data(POLLS.into(), INTERVAL));
    diesel::sql_query("UPDATE schedule_schedule SET created_at = created_at - INTERVAL ? SECOND WHERE trace_id = ?")
        .bind::<diesel::sql_types::Bigint, _>(age_secs)
        .bind::<diesel::sql_types::Text, _>(trace_id)
        .execute(&mut db.connect())
        .expect("age the schedule");
}

/// Runs `celerity sweep` with a 5 s margin; returns its JSON answer.
fn sweep(vhost: &Vhost, db: &TestDatabase, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(celerity_bin())
        .args(["sweep", "--json", "--sweep-margin", "5", "--broker-url", &vhost.url(), "--database-url", &db.url()])
        .args(extra)
        .output()
        .expect("run celerity sweep");
    assert!(out.status.success(), "celerity sweep failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("sweep prints JSON")
}

fn listed(answer: &serde_json::Value, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = answer[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} list in {answer}"))
        .iter()
        .map(|s| s["trace_id"].as_str().expect("trace_id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// The attempt log must hold exactly attempts 2..=POLLS+1, each started at
/// least the interval after the one before ended: no poll ran out of turn.
fn check_attempts(db: &TestDatabase, trace_id: &str) {
    let attempts = db.handle().blocking(|c| celerity_db::repo::attempts(c, trace_id)).expect("attempt log");
    let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, (2..=POLLS + 1).collect::<Vec<_>>(), "{trace_id}: attempt log");
    for pair in attempts.windows(2) {
        let gap = pair[1].started_at - pair[0].ended_at;
        assert!(
            gap >= chrono::Duration::milliseconds(INTERVAL * 1000 - 50),
            "{trace_id}: attempt {} started {gap} after attempt {} ended; the interval is {INTERVAL} s",
            pair[1].attempt,
            pair[0].attempt
        );
    }
}

/// A vhost with the framework's queues, a confirmed channel on it, and a
/// migrated database.
async fn services() -> (Vhost, TestDatabase, lapin::Connection, lapin::Channel) {
    let vhost = Vhost::create();
    let db = migrated_database();
    let (conn, ch) = confirmed_channel(&vhost).await;
    for q in topology::FRAMEWORK_QUEUES {
        declare_framework_queue(&ch, q.name).await;
    }
    (vhost, db, conn, ch)
}

#[tokio::test]
async fn sweep_rescues_stranded_and_never_doubles_a_late_message() {
    let (vhost, db, _conn, ch) = services().await;
    let [orphan, late_first, late_after, fresh] = ["orphan", "late-first", "late-after", "fresh"].map(unique);
    // No message at all: the producer died after its insert.
    insert_aged(&db, &orphan, 60);
    // Its message is in the queue, only late: it is ahead of the sweep's copy.
    insert_aged(&db, &late_first, 60);
    publish_first_poll(&ch, &late_first).await;
    // Its message arrives after the sweep's copy.
    insert_aged(&db, &late_after, 60);
    // Created just now, message on its way: not stranded.
    insert_aged(&db, &fresh, 0);
    publish_first_poll(&ch, &fresh).await;

    let mut expected = vec![orphan.clone(), late_first.clone(), late_after.clone()];
    expected.sort();
    assert_eq!(listed(&sweep(&vhost, &db, &["--dry-run"]), "stranded"), expected, "dry run lists the aged three");
    assert_eq!(listed(&sweep(&vhost, &db, &[]), "re-enqueued"), expected);
    assert_eq!(
        listed(&sweep(&vhost, &db, &[]), "re-enqueued"),
        Vec::<String>::new(),
        "a recorded sweep is not doubled"
    );
    publish_first_poll(&ch, &late_after).await;

    let counting = Counting::default();
    let mut config = worker_config(&vhost.url(), &db.url());
    // One poll at a time: every execute either lands or is a double poll.
    config.concurrency = 1;
    let worker = InProcessWorker::start(config, registry(&counting));
    let all = [&orphan, &late_first, &late_after, &fresh];
    let done = wait_for_rows(&db, Duration::from_secs(60), |r| {
        all.iter().all(|id| r.get(*id).is_some_and(|row| row.state == State::Success.code()))
    })
    .await;
    // Let the dropped copies arrive and be dropped, then read the counts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.stop().await.expect("worker stops cleanly");
    let executions = counting.0.lock().expect("counts").clone();
    for id in all {
        assert_eq!(done[id].invoke_count, POLLS + 1, "{id}");
        assert_eq!(executions.get(id), Some(&(POLLS as u32)), "{id}: one execute per poll, no double poll");
        check_attempts(&db, id);
    }
    assert_eq!(rows(&db).len(), 4);
}

#[tokio::test]
async fn a_workers_periodic_sweep_rescues_a_purged_message() {
    let (vhost, db, _conn, ch) = services().await;
    let purged = unique("purged");
    insert_aged(&db, &purged, 0);
    publish_first_poll(&ch, &purged).await;
    // An operator purges the queue: the schedule's only message is gone.
    ch.queue_purge(topology::SCHEDULE_QUEUE.name.into(), lapin::options::QueuePurgeOptions::default())
        .await
        .expect("purge");

    let counting = Counting::default();
    let mut config = worker_config(&vhost.url(), &db.url());
    config.sweep_interval = Some(Duration::from_millis(500));
    config.sweep.margin = Duration::from_secs(2);
    // Two workers: only one sweeps at a time, and the schedule is polled once per step.
    let mut second = config.clone();
    second.hostname = unique("celerity-test");
    let workers =
        [InProcessWorker::start(config, registry(&counting)), InProcessWorker::start(second, registry(&counting))];
    let done = wait_for_rows(&db, Duration::from_secs(30), |r| {
        r.get(&purged).is_some_and(|row| row.state == State::Success.code())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for w in workers {
        w.stop().await.expect("worker stops cleanly");
    }
    assert_eq!(done[&purged].invoke_count, POLLS + 1);
    check_attempts(&db, &purged);
    let sweeps: i32 = {
        use celerity_db::schema::celerity_sweep::dsl as s;
        s::celerity_sweep.filter(s::trace_id.eq(&purged)).select(s::sweeps).first(&mut db.connect()).expect("swept")
    };
    assert_eq!(sweeps, 1, "swept once, though two workers were sweeping every 500 ms");
}

/// A schedule in CALLBACK whose lock a callback took, every copy of which
/// is gone (its retry was dropped on the way to a queue whose node was
/// out): the sweep sends that callback again under its own task id, which
/// holds the lock, and the step runs once and releases it. A lock taken
/// just now (its callback still in flight) is left alone.
#[tokio::test]
async fn a_callback_holding_the_lock_whose_every_copy_is_gone_is_sent_again() {
    let (vhost, db, _conn, _ch) = services().await;
    let [lost, in_flight] = ["lost", "in-flight"].map(unique);
    let handle = db.handle();
    for (id, age) in [(&lost, 60), (&in_flight, 0)] {
        insert_schedule(&db.url(), id, VERSION, State::Callback, &example_data(POLLS.into(), INTERVAL));
        let held = HeldCallback {
            trace_id: id.clone(),
            task_id: format!("task-of-{id}"),
            callback_id: "cb-1".into(),
            callback_data: r#"{"n": 1}"#.into(),
        };
        let at = handle.now() - chrono::Duration::seconds(age);
        assert!(handle.blocking(move |c| repo::try_lock(c, &held, at)).expect("take the lock"));
    }
    assert_eq!(listed(&sweep(&vhost, &db, &["--dry-run"]), "stranded"), vec![lost.clone()]);
    assert_eq!(listed(&sweep(&vhost, &db, &[]), "re-enqueued"), vec![lost.clone()]);
    assert_eq!(listed(&sweep(&vhost, &db, &[]), "re-enqueued"), Vec::<String>::new(), "not doubled");

    let counting = Counting::default();
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &db.url()), registry(&counting));
    let done = wait_for_rows(&db, Duration::from_secs(30), |r| r[&lost].state == State::Success.code()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.stop().await.expect("worker stops cleanly");
    let row = &done[&lost];
    assert_eq!((row.invoke_count, row.scheduling), (2, false), "{row:?}");
    assert!(row.data.contains(r#""got": {"n": 1}"#), "{}", row.data);
    let owner = |id: &str| {
        let id = id.to_owned();
        handle.blocking(move |c| repo::lock_owner(c, &id)).expect("lock owner")
    };
    assert_eq!(owner(&lost), None, "released with the poll");
    let executions = counting.0.lock().expect("counts").clone();
    assert_eq!(executions.get(&lost), Some(&1), "the callback step ran once");
    assert_eq!(executions.get(&in_flight), None, "a callback in flight is not sent again");
    let still = &rows(&db)[&in_flight];
    assert_eq!((still.state, still.scheduling), (State::Callback.code(), true));
    assert_eq!(owner(&in_flight), Some(format!("task-of-{in_flight}")));
}
