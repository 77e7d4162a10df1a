//! Operator controls on the real services: pause mid-run and resume ends in
//! the rows of an uninterrupted run; a RETRYING schedule is paused, its
//! retry parked, and RESUME on RETRYING is refused; stop mid-poll; a parked
//! message survives a worker's kill -9; the HTTP controls with and without
//! the token, and bad input; an idle worker's first scrape; and the
//! framework's own reader sees only its states while Python plugin
//! schedules are paused and after one is stopped.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker_proto::topology;
use celerity::plugins::{Context, Outcome, Plugin, Registry};
use celerity_db::{Db, DbConfig, State, operator, repo};
use celerity_tests::plugin_project::Project;
use celerity_tests::python;
use celerity_tests::{
    ChildGuard, InProcessWorker, RowView, TestDatabase, Vhost, celerity_bin, confirmed_channel,
    declare_framework_queue, example_data, example_worker, free_local_addr, http_get, http_request, insert_schedule,
    metric_sample, migrated_database, publish_task, rows, task_message, temp_dir, unique, wait_for_rows, wait_health,
    worker_config,
};
use diesel::prelude::*;

/// Runs `celerity ARGS --database-url .. --broker-url ..`: exit code, stdout, stderr.
fn celerity(db: &TestDatabase, vhost: &Vhost, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(celerity_bin())
        .args(args)
        .args(["--database-url", &db.url(), "--broker-url", &vhost.url()])
        .output()
        .expect("run celerity");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8"),
        String::from_utf8(out.stderr).expect("utf-8"),
    )
}

/// `celerity status ARGS --database-url ..`: exit code and stdout.
fn status(db: &TestDatabase, args: &[&str]) -> (i32, String) {
    let out = Command::new(celerity_bin())
        .arg("status")
        .args(args)
        .args(["--database-url", &db.url()])
        .output()
        .expect("run celerity status");
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).expect("utf-8"))
}

fn status_json(db: &TestDatabase, trace_id: &str) -> serde_json::Value {
    let out = Command::new(celerity_bin())
        .args(["status", trace_id, "--json", "--database-url", &db.url()])
        .output()
        .expect("run celerity status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| unique(prefix).replace('-', "")).collect()
}

async fn start_schedules(vhost: &Vhost, db: &TestDatabase, ids: &[String], version: &str, data: &str) {
    for id in ids {
        insert_schedule(&db.url(), id, version, State::Poll, data);
    }
    publish_first(vhost, ids).await;
}

/// Publishes the producer's first message of each schedule, declaring the
/// queue first: a worker still starting may not have declared it yet, and a
/// message for a queue not declared is dropped. Returns the channel.
async fn publish_first(vhost: &Vhost, ids: &[String]) -> (lapin::Connection, lapin::Channel) {
    let (conn, ch) = confirmed_channel(vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    for id in ids {
        let first = task_message(topology::SCHEDULE_TASK, &[("trace_id", id)]);
        publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &first).await;
    }
    (conn, ch)
}

fn handle(db: &TestDatabase) -> Db {
    Db::new(DbConfig::new(db.url())).expect("db handle")
}

fn parked(db: &Db, trace_id: &str) -> usize {
    let id = trace_id.to_owned();
    db.blocking(move |c| operator::parked_of(c, &id)).expect("parked").len()
}

fn attempts(db: &Db, trace_id: &str) -> Vec<i32> {
    let id = trace_id.to_owned();
    db.blocking(move |c| repo::attempts(c, &id)).expect("attempts").iter().map(|a| a.attempt).collect()
}

async fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The columns an uninterrupted run decides: state, invoke_count, data, err.
fn outcome(r: &RowView) -> (i32, i32, String, String, bool) {
    (r.state, r.invoke_count, r.data.clone(), r.err.clone(), r.finished)
}

const POLLS: i64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_mid_run_then_resume_ends_in_the_rows_of_an_uninterrupted_run() {
    let (vhost, tdb) = (Vhost::create(), migrated_database());
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), Registry::with_builtin());
    let (control, held) = (ids("c", 4), ids("p", 4));
    let all: Vec<String> = control.iter().chain(&held).cloned().collect();
    start_schedules(&vhost, &tdb, &all, "1.0.0", &example_data(POLLS, 1)).await;
    wait_for_rows(&tdb, Duration::from_secs(60), |r| held.iter().all(|id| r[id].invoke_count >= 3)).await;

    let mut args = vec!["pause", "--reason", "downstream is down"];
    args.extend(held.iter().map(String::as_str));
    let (code, out, err) = celerity(&tdb, &vhost, &args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 changed, 0 unchanged, 0 refused"), "{out}");
    for id in &held {
        assert!(out.contains(&format!("{id}  paused: POLL -> PAUSED")), "{out}");
    }
    // Paused again: nothing to do, and it says so.
    let (code, out, _) = celerity(&tdb, &vhost, &["pause", &held[0]]);
    assert_eq!((code, out.contains("unchanged: already paused")), (0, true), "{out}");

    let db = handle(&tdb);
    // Each paused schedule's next poll arrives and is parked; a poll that was
    // running when the pause landed completed first.
    wait_until("a parked message per paused schedule", Duration::from_secs(30), || {
        held.iter().all(|id| parked(&db, id) == 1)
    })
    .await;
    let done = wait_for_rows(&tdb, Duration::from_secs(60), |r| control.iter().all(|id| r[id].state == 4)).await;
    let frozen: BTreeMap<&String, i32> = held.iter().map(|id| (id, done[id].invoke_count)).collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = rows(&tdb);
    for id in &held {
        let r = &later[id];
        assert_eq!((r.state, r.invoke_count), (State::Poll.code(), frozen[id]), "{id}: held in POLL, not polled");
        assert_eq!(attempts(&db, id), (2..=frozen[id]).collect::<Vec<_>>(), "{id}: nothing logged while parked");
        let s = status_json(&tdb, id);
        assert_eq!((s["status"].as_str(), s["state"].as_str()), (Some("PAUSED"), Some("POLL")), "{s}");
        assert_eq!(s["pause"]["reason"], "downstream is down");
        assert!(s["pause"]["paused_by"].as_str().unwrap().ends_with("(cli)"), "{s}");
        assert_eq!(s["parked"].as_array().map(Vec::len), Some(1));
    }
    let (ok, summary) = status(&tdb, &["--summary", "--json"]);
    assert_eq!(ok, 0);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!((summary["paused"].as_i64(), summary["success"].as_i64()), (Some(4), Some(4)), "{summary}");

    // Resume by selector: every PAUSED schedule.
    let (code, out, err) = celerity(&tdb, &vhost, &["resume", "--state", "PAUSED", "--reason", "it is back"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 changed, 0 unchanged, 0 refused"), "{out}");
    assert_eq!(out.matches("resumed: PAUSED -> POLL; 1 parked message(s) sent again").count(), 4, "{out}");
    let done = wait_for_rows(&tdb, Duration::from_secs(60), |r| r.values().all(|r| r.state == 4)).await;
    let reference = outcome(&done[&control[0]]);
    assert_eq!(reference.1, POLLS as i32 + 1);
    for id in &all {
        assert_eq!(outcome(&done[id]), reference, "{id}: the same final row as an uninterrupted run");
        assert_eq!(attempts(&db, id), (2..=POLLS as i32 + 1).collect::<Vec<_>>(), "{id}: one attempt per poll");
        assert_eq!(parked(&db, id), 0);
    }
    let s = status_json(&tdb, &held[0]);
    let actions: Vec<&str> = s["actions"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["pause", "resume"]);
    assert_eq!(
        (s["last_action"]["action"].as_str(), s["last_action"]["reason"].as_str()),
        (Some("resume"), Some("it is back"))
    );
    // A final schedule refuses every control, exit status 3.
    let (code, out, _) = celerity(&tdb, &vhost, &["resume", &held[0]]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("refused: it is final"), "{out}");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retrying_schedule_is_paused_its_retry_parked_and_resume_is_refused_until_then() {
    let (vhost, tdb) = (Vhost::create(), migrated_database());
    let mut config = worker_config(&vhost.url(), &tdb.url());
    // Slow retries, so the schedule stays RETRYING while the operator acts.
    config.backoff =
        celerity::config::Backoff { base: Duration::from_secs(2), max: Duration::from_secs(2), max_retries: 50 };
    let worker = InProcessWorker::start(config, Registry::with_builtin());
    let mut conn = tdb.connect();
    diesel::sql_query(celerity_tests::NOT_READY_TRIGGER).execute(&mut conn).unwrap();
    let id = &ids("r", 1)[0];
    start_schedules(&vhost, &tdb, std::slice::from_ref(id), "1.0.0", &example_data(2, 0)).await;
    let db = handle(&tdb);
    wait_until("RETRYING", Duration::from_secs(30), || status_json(&tdb, id)["status"] == "RETRYING").await;

    let (code, out, _) = celerity(&tdb, &vhost, &["resume", id]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("refused: it is RETRYING: the system is already recovering it with backoff"), "{out}");
    assert!(out.contains("0 changed, 0 unchanged, 1 refused"), "{out}");

    let (code, out, err) = celerity(&tdb, &vhost, &["pause", "--state", "RETRYING", "--reason", "hold it"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{id}  paused: RETRYING -> PAUSED")), "{out}");
    // The fault ends; the retry that comes is parked, not run, and no more retries follow.
    diesel::sql_query("DROP TRIGGER not_ready").execute(&mut conn).unwrap();
    wait_until("the retry parked", Duration::from_secs(30), || parked(&db, id) == 1).await;
    let retries = status_json(&tdb, id)["retry"]["retries"].as_i64().expect("retry bookkeeping kept");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = status_json(&tdb, id);
    assert_eq!(
        (s["status"].as_str(), s["state"].as_str(), s["invoke_count"].as_i64()),
        (Some("PAUSED"), Some("POLL"), Some(1))
    );
    assert_eq!(s["retry"]["retries"].as_i64(), Some(retries), "retries suspended while paused");
    assert_eq!(parked(&db, id), 1);
    assert!(attempts(&db, id).is_empty());

    let (code, out, err) = celerity(&tdb, &vhost, &["resume", id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("resumed: PAUSED -> RETRYING; 1 parked message(s) sent again"), "{out}");
    let done = wait_for_rows(&tdb, Duration::from_secs(60), |r| r[id].state == 4).await;
    assert_eq!(done[id].invoke_count, 3);
    assert_eq!(attempts(&db, id), [2, 3]);
    assert_eq!(status_json(&tdb, id)["retry"], serde_json::Value::Null);
    worker.stop().await.unwrap();
}

/// A step that takes `seconds`, then polls again in 1 s.
#[derive(Clone)]
struct Slow;

#[derive(serde::Deserialize)]
struct SlowInputs {
    seconds: u64,
}

impl Plugin for Slow {
    type Inputs = SlowInputs;
    type ContextData = serde_json::Value;

    fn execute(&self, inputs: SlowInputs, ctx: &mut Context<serde_json::Value>) -> Outcome {
        std::thread::sleep(Duration::from_secs(inputs.seconds));
        ctx.outputs.insert("slept".into(), inputs.seconds.into());
        Outcome::Poll(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_mid_poll_ends_fail_and_the_running_poll_changes_nothing() {
    let (vhost, tdb) = (Vhost::create(), migrated_database());
    let mut registry = Registry::with_builtin();
    registry.register("slow-1.0.0", Slow);
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), registry);
    let running = &ids("s", 1)[0];
    let data = r#"{"inputs": {"seconds": 4}, "context": {"storage": {}, "outputs": {}, "data": {}}, "outputs": {}}"#;
    start_schedules(&vhost, &tdb, std::slice::from_ref(running), "slow-1.0.0", data).await;
    // Once the step runs (the poll holds its slot), stop the schedule under it;
    // a fixed pause was too short for a worker starting on a loaded machine.
    let series = |name: &str| metric_sample(&celerity::meters::render(), name);
    let start = std::time::Instant::now();
    while series("celerity_polls_in_flight") != Some(1.0) {
        assert!(start.elapsed() < Duration::from_secs(30), "the slow step never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, out, err) = celerity(&tdb, &vhost, &["stop", running, "--reason", "runaway plugin"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{running}  stopped: POLL -> FAIL")), "{out}");
    // The step ends and its update finds the schedule final: nothing changes.
    let stale_series = r#"celerity_tasks_total{task="schedule",outcome="stale"}"#;
    let start = std::time::Instant::now();
    while series(stale_series) != Some(1.0) && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = &rows(&tdb)[running];
    assert_eq!((r.state, r.invoke_count, r.finished), (5, 1, true));
    assert_eq!(r.err, "stopped by operator: runaway plugin");
    assert!(!r.data.contains("slept"), "the running poll wrote nothing: {}", r.data);
    // It did run: its update was the one that found the schedule moved on.
    assert_eq!(series(stale_series), Some(1.0), "the poll under the stop ran to its end and changed nothing");
    let db = handle(&tdb);
    assert!(attempts(&db, running).is_empty());
    let s = status_json(&tdb, running);
    assert_eq!(
        (s["last_action"]["action"].as_str(), s["last_action"]["from_status"].as_str()),
        (Some("stop"), Some("POLL"))
    );

    // A stop needs a reason; a final schedule refuses it.
    let (code, _, err) = celerity(&tdb, &vhost, &["stop", running]);
    assert_eq!((code, err.trim()), (1, "celerity: stop needs --reason TEXT: it is written to the schedule's err"));
    let (code, out, _) = celerity(&tdb, &vhost, &["stop", running, "--reason", "again"]);
    assert_eq!(code, 3, "{out}");
    assert_eq!(rows(&tdb)[running].err, "stopped by operator: runaway plugin", "the first stop's reason stays");

    // A paused schedule with a parked message: stop drops what is parked.
    let held = &ids("h", 1)[0];
    insert_schedule(&tdb.url(), held, "1.0.0", State::Poll, &example_data(3, 0));
    let (code, out, _) = celerity(&tdb, &vhost, &["pause", held]);
    assert_eq!(code, 0, "{out}");
    publish_first(&vhost, std::slice::from_ref(held)).await;
    wait_until("parked", Duration::from_secs(20), || parked(&db, held) == 1).await;
    let (code, out, _) = celerity(&tdb, &vhost, &["stop", held, "--reason", "not needed"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stopped: PAUSED -> FAIL"), "{out}");
    assert_eq!(parked(&db, held), 0);
    let (code, out, _) = celerity(&tdb, &vhost, &["resume", held]);
    assert_eq!(code, 3, "{out}");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_message_survives_a_worker_kill_9() {
    let (vhost, tdb) = (Vhost::create(), migrated_database());
    let id = &ids("k", 1)[0];
    insert_schedule(&tdb.url(), id, "1.0.0", State::Poll, &example_data(3, 0));
    let (code, out, err) = celerity(&tdb, &vhost, &["pause", id, "--reason", "before it starts"]);
    assert_eq!(code, 0, "{out}{err}");
    let dir = temp_dir();
    let start = |log: &str| {
        let mut cmd = example_worker(celerity_bin(), &vhost.url(), &tdb.url());
        cmd.args(["--queues", "plugin_schedule", "--http-addr", "127.0.0.1:0", "--sweep-interval", "0"]);
        ChildGuard::spawn(cmd, dir.join(log))
    };
    let first = start("first.log");
    let (_conn, ch) = publish_first(&vhost, std::slice::from_ref(id)).await;
    let db = handle(&tdb);
    wait_until("parked", Duration::from_secs(30), || parked(&db, id) == 1).await;
    // Acked once parked: the broker no longer holds it, whatever happens to the worker.
    wait_until("acked", Duration::from_secs(10), || first.log().contains("parked until it is resumed")).await;
    drop(first); // kill -9
    let queue = ch
        .queue_declare(
            topology::SCHEDULE_QUEUE.name.into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            Default::default(),
        )
        .await
        .expect("the queue is there");
    assert_eq!(queue.message_count(), 0, "the parked message was acked, not left in the queue");
    let second = start("second.log");
    let (code, out, err) = celerity(&tdb, &vhost, &["resume", id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 parked message(s) sent again"), "{out}");
    let done = wait_for_rows(&tdb, Duration::from_secs(60), |r| r[id].state == 4).await;
    assert_eq!(done[id].invoke_count, 4);
    assert_eq!(attempts(&db, id), [2, 3, 4]);
    drop(second);
    let _ = std::fs::remove_dir_all(dir);
}

const TOKEN: &str = "a-test-token-0123456789abcdef";

fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    let (code, text) = http_request(addr, method, path, &headers, body).expect("an HTTP answer");
    (code, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_controls_need_the_token_and_bad_input_changes_nothing() {
    let (vhost, tdb) = (Vhost::create(), migrated_database());
    let id = &ids("w", 1)[0];
    insert_schedule(&tdb.url(), id, "1.0.0", State::Poll, &example_data(3, 30));
    let addr = free_local_addr();
    let dir = temp_dir();
    let mut cmd = example_worker(celerity_bin(), &vhost.url(), &tdb.url());
    cmd.args(["--http-addr", &addr.to_string(), "--sweep-interval", "0"]).env("CELERITY_ADMIN_TOKEN", TOKEN);
    let worker = ChildGuard::spawn(cmd, dir.join("worker.log"));
    wait_health(addr, 200, Duration::from_secs(30)).await;
    let path = format!("/schedules/{id}");
    let pause = format!("{path}/pause");
    let unchanged = |what: &str| {
        let s = status_json(&tdb, id);
        assert_eq!(s["status"], "POLL", "{what} changed the schedule: {s}");
    };

    // No token, a wrong one: 401, logged without the token.
    for token in [None, Some("a-test-token-0123456789abcdeX"), Some("")] {
        let (code, _) = request(addr, "GET", &path, token, b"");
        assert_eq!(code, 401, "{token:?}");
        let (code, _) = request(addr, "POST", &pause, token, b"");
        assert_eq!(code, 401, "{token:?}");
    }
    unchanged("an unauthorised pause");
    let log = worker.log();
    assert!(
        log.contains("operator control refused: no token") && log.contains("operator control refused: a wrong token"),
        "{log}"
    );
    assert!(!log.contains("0123456789abcde"), "the token is never logged: {log}");

    let (code, body) = request(addr, "GET", &path, Some(TOKEN), b"");
    assert_eq!((code, body["status"].as_str()), (200, Some("POLL")), "{body}");
    // Bad input: a clear 4xx, nothing changed.
    let long_actor = format!(r#"{{"reason": "x", "actor": "{}"}}"#, "a".repeat(10_000));
    for (what, method, at, body, want) in [
        ("malformed JSON", "POST", pause.as_str(), &b"{\"reason\": "[..], 400),
        ("not an object", "POST", &pause, b"[1, 2]", 400),
        ("an unknown field", "POST", &pause, br#"{"reason": "x", "force": true}"#, 400),
        ("an unknown control", "POST", &format!("{path}/frobnicate"), b"", 404),
        ("an unknown schedule", "POST", "/schedules/0000000000000000000000000000dead/pause", b"", 404),
        ("a malformed trace id", "POST", "/schedules/a%27%3B%20DROP/pause", b"", 400),
        ("a stop without a reason", "POST", &format!("{path}/stop"), br#"{"reason": "  "}"#, 400),
        // Longer than the actor column: a clear 400, not the database's 503.
        ("an actor of 10,000 characters", "POST", &pause, long_actor.as_bytes(), 400),
    ] {
        let (code, answer) = request(addr, method, at, Some(TOKEN), body);
        assert_eq!(code, want, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
        unchanged(what);
    }
    let big = format!(r#"{{"reason": "{}"}}"#, "x".repeat(20 * 1024));
    let (code, _) = request(addr, "POST", &pause, Some(TOKEN), big.as_bytes());
    assert_eq!(code, 413, "an oversized body");
    unchanged("an oversized body");
    let (code, answer) = request(addr, "GET", "/schedules/0000000000000000000000000000dead", Some(TOKEN), b"");
    assert_eq!(code, 404, "{answer}");

    let (code, answer) =
        request(addr, "POST", &pause, Some(TOKEN), br#"{"reason": "maintenance", "actor": "console-1"}"#);
    assert_eq!(
        (code, answer["outcome"].as_str(), answer["to"].as_str()),
        (200, Some("changed"), Some("PAUSED")),
        "{answer}"
    );
    let (_, shown) = request(addr, "GET", &path, Some(TOKEN), b"");
    assert_eq!(shown["status"], "PAUSED");
    let by = shown["last_action"]["actor"].as_str().unwrap();
    assert!(by.starts_with("console-1 (http 127.0.0.1:"), "{by}");
    let (code, answer) = request(addr, "POST", &pause, Some(TOKEN), b"");
    assert_eq!((code, answer["outcome"].as_str()), (200, Some("unchanged")), "{answer}");
    let (code, answer) = request(addr, "POST", &format!("{path}/resume"), Some(TOKEN), b"");
    assert_eq!((code, answer["to"].as_str()), (200, Some("POLL")), "{answer}");
    let (code, answer) =
        request(addr, "POST", &format!("{path}/stop"), Some(TOKEN), br#"{"reason": "from the console"}"#);
    assert_eq!((code, answer["to"].as_str()), (200, Some("FAIL")), "{answer}");
    assert_eq!(rows(&tdb)[id].err, "stopped by operator: from the console");
    let (code, answer) = request(addr, "POST", &format!("{path}/resume"), Some(TOKEN), b"");
    assert_eq!((code, answer["outcome"].as_str()), (409, Some("refused")), "{answer}");
    drop(worker);

    // Without a token the routes do not exist.
    let addr = free_local_addr();
    let mut cmd = example_worker(celerity_bin(), &vhost.url(), &tdb.url());
    cmd.args(["--http-addr", &addr.to_string(), "--sweep-interval", "0"]).env_remove("CELERITY_ADMIN_TOKEN");
    let _plain = ChildGuard::spawn(cmd, dir.join("plain.log"));
    wait_health(addr, 200, Duration::from_secs(30)).await;
    let (code, _) = request(addr, "GET", &path, Some(TOKEN), b"");
    assert_eq!(code, 404);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selectors_pick_open_schedules_and_bad_selectors_are_refused() {
    let (vhost, tdb) = (Vhost::create(), migrated_database());
    let (old, new, other) = (ids("o", 2), ids("n", 2), ids("v", 1));
    for id in old.iter().chain(&new) {
        insert_schedule(&tdb.url(), id, "1.0.0", State::Poll, &example_data(3, 0));
    }
    insert_schedule(&tdb.url(), &other[0], "2.0.0", State::Callback, &example_data(3, 0));
    diesel::sql_query(
        "UPDATE schedule_schedule SET created_at = created_at - INTERVAL 3 HOUR WHERE trace_id LIKE 'o%'",
    )
    .execute(&mut tdb.connect())
    .unwrap();
    let (code, out, err) = celerity(&tdb, &vhost, &["pause", "--older-than", "2h"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 changed") && old.iter().all(|id| out.contains(id.as_str())), "{out}");
    let (code, out, _) = celerity(&tdb, &vhost, &["pause", "--version", "2.0.0", "--json"]);
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["results"][0]["trace_id"], other[0].as_str());
    assert_eq!(json["results"][0]["from"], "CALLBACK");
    let (code, out, _) = celerity(&tdb, &vhost, &["resume", "--version", "9.9.9"]);
    assert_eq!((code, out.trim()), (0, "no open schedule matched"));
    let (code, out) = status(&tdb, &["--summary"]);
    assert_eq!(code, 0);
    assert!(out.contains("PAUSED    3") && out.contains("POLL      2"), "{out}");
    for (args, says) in [
        (vec!["pause"], "name schedules by trace id, or select them"),
        (vec!["pause", "--state", "SUCCESS"], "--state SUCCESS: only POLL, CALLBACK, RETRYING and PAUSED"),
        (vec!["pause", "--older-than", "soon"], "--older-than soon:"),
    ] {
        let (code, _, err) = celerity(&tdb, &vhost, &args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.starts_with(&format!("celerity: {says}")) && err.lines().count() == 1, "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_workers_first_scrape_shows_every_metric_family() {
    let (vhost, tdb) = (Vhost::create(), migrated_database());
    insert_schedule(&tdb.url(), &ids("m", 1)[0], "1.0.0", State::Poll, &example_data(3, 0));
    let addr = free_local_addr();
    let dir = temp_dir();
    let mut cmd = example_worker(celerity_bin(), &vhost.url(), &tdb.url());
    cmd.args(["--http-addr", &addr.to_string(), "--sweep-interval", "0"]).stdout(Stdio::null());
    let _worker = ChildGuard::spawn(cmd, dir.join("worker.log"));
    wait_health(addr, 200, Duration::from_secs(30)).await;
    let (code, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    for series in [
        r#"celerity_tasks_total{task="schedule",outcome="poll"}"#,
        r#"celerity_tasks_total{task="callback",outcome="parked"}"#,
        r#"celerity_tasks_total{task="delete",outcome="deleted"}"#,
        r#"celerity_retries_total{class="transient"}"#,
        r#"celerity_db_errors_total{class="transient",code="none"}"#,
        r#"celerity_consumer_cancellations_total{queue="plugin_schedule"}"#,
        "celerity_broker_reconnects_total",
        "celerity_dead_lettered_total",
        "celerity_polls_in_flight",
        "celerity_consumption_paused",
        r#"celerity_schedules{status="POLL"}"#,
        r#"celerity_schedules{status="PAUSED"}"#,
        r#"celerity_schedules{status="RETRYING"}"#,
    ] {
        assert!(metric_sample(&text, series).is_some(), "{series} is missing:\n{text}");
    }
    assert_eq!(metric_sample(&text, r#"celerity_schedules{status="POLL"}"#), Some(1.0));
    assert_eq!(metric_sample(&text, r#"celerity_tasks_total{task="schedule",outcome="poll"}"#), Some(0.0));
    for family in [
        "celerity_build_info{version=\"",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "celerity_poll_duration_seconds_bucket",
    ] {
        assert!(text.contains(family), "{family} is missing:\n{text}");
    }
    let rss = metric_sample(&text, "process_resident_memory_bytes").unwrap_or(0.0);
    assert!(rss > 1e6, "a resident size the process really has: {rss}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_frameworks_reader_sees_its_own_states_while_python_schedules_are_paused_and_stopped() {
    let project = Project::new(&python());
    let (kept, stopped) = (ids("f", 1).remove(0), ids("g", 1).remove(0));
    project.produce(&[
        (&kept, "1.0.0", serde_json::json!({"polls": 5, "interval": 1}), serde_json::json!({})),
        (&stopped, "1.0.0", serde_json::json!({"polls": 5, "interval": 1}), serde_json::json!({})),
    ]);
    let dir = temp_dir();
    let _worker = project.celerity(&[], dir.join("celerity.log"));
    let (db, vhost) = (&project.db, &project.vhost);
    wait_for_rows(db, Duration::from_secs(60), |r| r[&kept].invoke_count >= 2 && r[&stopped].invoke_count >= 2).await;
    let zone = ["--db-time-zone", "Asia/Shanghai"];
    let (code, out, err) = celerity(db, vhost, &[&["pause", &kept, &stopped][..], &zone].concat());
    assert_eq!(code, 0, "{out}{err}");
    let handle = handle(db);
    wait_until("both parked", Duration::from_secs(30), || {
        parked(&handle, &kept) == 1 && parked(&handle, &stopped) == 1
    })
    .await;
    for id in [&kept, &stopped] {
        assert_eq!(project.read(id)["state"], "POLL", "paused, the framework sees POLL");
    }
    let (code, out, err) =
        celerity(db, vhost, &[&["stop", &stopped, "--reason", "the plugin's owner asked"][..], &zone].concat());
    assert_eq!(code, 0, "{out}{err}");
    let read = project.read(&stopped);
    assert_eq!((read["state"].as_str(), read["finished"].as_bool()), (Some("FAIL"), Some(true)));
    assert_eq!(read["err"], "stopped by operator: the plugin's owner asked");
    let (code, out, err) = celerity(db, vhost, &[&["resume", &kept][..], &zone].concat());
    assert_eq!(code, 0, "{out}{err}");
    wait_for_rows(db, Duration::from_secs(60), |r| r[&kept].state == 4).await;
    let read = project.read(&kept);
    assert_eq!((read["state"].as_str(), read["outputs"]["polls_done"].as_i64()), (Some("SUCCESS"), Some(5)));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweeper_skips_paused_schedules_and_sends_what_a_dead_resume_released() {
    let (vhost, tdb) = (Vhost::create(), migrated_database());
    let worker = InProcessWorker::start(worker_config(&vhost.url(), &tdb.url()), Registry::with_builtin());
    let id = &ids("d", 1)[0];
    insert_schedule(&tdb.url(), id, "1.0.0", State::Poll, &example_data(2, 0));
    let (code, out, _) = celerity(&tdb, &vhost, &["pause", id]);
    assert_eq!(code, 0, "{out}");
    // Old enough to count as stranded, were it not paused.
    diesel::sql_query("UPDATE schedule_schedule SET created_at = created_at - INTERVAL 1 HOUR")
        .execute(&mut tdb.connect())
        .unwrap();
    let sweep = |dry: bool| {
        let mut args = vec!["sweep", "--json", "--sweep-margin", "1"];
        if dry {
            args.push("--dry-run");
        }
        let (code, out, err) = celerity(&tdb, &vhost, &args);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    assert!(!sweep(true).contains(id.as_str()), "a paused schedule is never stranded");
    publish_first(&vhost, std::slice::from_ref(id)).await;
    let db = handle(&tdb);
    wait_until("parked", Duration::from_secs(30), || parked(&db, id) == 1).await;
    // A resume that committed and died before sending: released, still in the table.
    let req = operator::Request { trace_id: id.clone(), actor: "test".into(), reason: String::new(), at: db.now() };
    let (done, released) = db.blocking(move |c| operator::apply(c, operator::Action::Resume, &req)).unwrap();
    assert!(matches!(done, operator::Done::Changed { .. }), "{done:?}");
    assert_eq!(released.len(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sweep(false);
    let done = wait_for_rows(&tdb, Duration::from_secs(30), |r| r[id].state == 4).await;
    assert_eq!(done[id].invoke_count, 3);
    assert_eq!((parked(&db, id), attempts(&db, id)), (0, vec![2, 3]));
    worker.stop().await.unwrap();
}
