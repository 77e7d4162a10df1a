//! The repository API on a `schedule_schedule` built with the exact DDL the
//! framework's Django migrations produce (db/tests/django_schedule.sql), and
//! the embedded migrations on an empty database.

use celerity_db::{Attempt, Db, DbConfig, HeldCallback, NewSchedule, PollResult, RetryState, State, Tz, migrate, repo};
use celerity_tests::{TestDatabase, workspace_root};
use chrono::{Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;

const DJANGO_DDL: &str = "db/tests/django_schedule.sql";

fn django_ddl() -> String {
    std::fs::read_to_string(workspace_root().join(DJANGO_DDL)).expect("Django DDL file")
}

#[derive(QueryableByName)]
struct CreateTable {
    #[diesel(sql_type = Text, column_name = "Create Table")]
    create_table: String,
}

fn show_create(conn: &mut MysqlConnection, table: &str) -> String {
    diesel::sql_query(format!("SHOW CREATE TABLE `{table}`")).get_result::<CreateTable>(conn).unwrap().create_table
}

/// A database whose schedule table Django made, then migrated by Celerity.
fn django_made() -> (TestDatabase, Db) {
    let tdb = TestDatabase::create();
    let mut conn = tdb.connect();
    diesel::sql_query(django_ddl()).execute(&mut conn).unwrap();
    let db = Db::new(DbConfig::new(tdb.url())).unwrap();
    db.blocking(migrate::run).unwrap();
    (tdb, db)
}

fn new_schedule(trace_id: &str, now: NaiveDateTime) -> NewSchedule {
    NewSchedule {
        trace_id: trace_id.into(),
        plugin_version: "1.0.0".into(),
        state: State::Poll.code(),
        invoke_count: 1,
        data: r#"{"inputs": {"polls": 3}, "context": {"storage": {}, "outputs": {}, "data": {}}, "outputs": {}}"#
            .into(),
        created_at: now,
        finish_at: None,
        scheduling: false,
        err: String::new(),
    }
}

fn attempt(trace_id: &str, n: i32, outcome: &str, now: NaiveDateTime) -> Attempt {
    Attempt {
        trace_id: trace_id.into(),
        attempt: n,
        started_at: now,
        ended_at: now,
        outcome: outcome.into(),
        error: String::new(),
        hostname: "test@host".into(),
        next_poll_at: None,
        task_id: None,
    }
}

/// The first poll of a new schedule, keeping it in POLL.
fn first_poll(trace_id: &str) -> PollResult {
    PollResult {
        trace_id: trace_id.into(),
        seen_invoke_count: 1,
        state: State::Poll,
        invoke_count: 2,
        data: Some(r#"{"polled": 1}"#.into()),
        err: None,
        finish_at: None,
        release_lock: false,
    }
}

#[test]
fn migrations_create_the_django_table_exactly_and_run_twice_harmlessly() {
    let tdb = TestDatabase::create();
    let db = Db::new(DbConfig::new(tdb.url())).unwrap();
    let ran = db.blocking(migrate::run).unwrap();
    assert_eq!(ran.len(), 6, "{ran:?}");
    assert!(db.blocking(migrate::run).unwrap().is_empty(), "a second run does nothing");
    let mut conn = tdb.connect();
    assert_eq!(show_create(&mut conn, "schedule_schedule"), django_ddl().trim());
    for table in [
        "celerity_schedule_retry",
        "celerity_attempt",
        "celerity_sweep",
        "celerity_pause",
        "celerity_parked",
        "celerity_action",
        "celerity_daily",
        "celerity_callback_lock",
    ] {
        assert!(show_create(&mut conn, table).contains(table));
    }
}

#[test]
fn migrations_keep_a_django_made_table_and_its_rows() {
    let tdb = TestDatabase::create();
    let mut conn = tdb.connect();
    diesel::sql_query(django_ddl()).execute(&mut conn).unwrap();
    diesel::sql_query("INSERT INTO schedule_schedule VALUES ('keep', '1.0.0', 2, 1, '{}', NOW(6), NULL, 0, '')")
        .execute(&mut conn)
        .unwrap();
    let db = Db::new(DbConfig::new(tdb.url())).unwrap();
    db.blocking(migrate::run).unwrap();
    db.blocking(migrate::run).unwrap();
    assert_eq!(show_create(&mut conn, "schedule_schedule"), django_ddl().trim());
    assert_eq!(db.blocking(|c| repo::load(c, "keep")).unwrap().invoke_count, 1);
}

#[test]
fn guarded_poll_update_applies_once_and_a_duplicate_changes_nothing() {
    let (_tdb, db) = django_made();
    let now = db.now();
    db.blocking(|c| repo::insert(c, &new_schedule("t1", now))).unwrap();
    let row = db.blocking(|c| repo::load(c, "t1")).unwrap();
    assert_eq!((row.state().unwrap(), row.invoke_count, row.scheduling), (State::Poll, 1, false));

    let poll = first_poll("t1");
    let first = attempt("t1", 2, "POLL", now);
    assert!(
        db.blocking({
            let (poll, first) = (poll.clone(), first.clone());
            move |c| repo::apply_poll(c, &poll, Some(&first))
        })
        .unwrap()
    );
    // The same delivery again: the guard sees invoke_count 2, not 1.
    let mut dup_attempt = first.clone();
    dup_attempt.hostname = "other@host".into();
    assert!(
        !db.blocking({
            let poll = poll.clone();
            move |c| repo::apply_poll(c, &poll, Some(&dup_attempt))
        })
        .unwrap()
    );
    let row = db.blocking(|c| repo::load(c, "t1")).unwrap();
    assert_eq!(row.invoke_count, 2);
    assert_eq!(row.data, r#"{"polled": 1}"#);
    assert_eq!(
        db.blocking(|c| repo::attempts(c, "t1")).unwrap(),
        vec![first],
        "attempt log unchanged by the duplicate"
    );

    // Success: final, finish_at set; nothing applies after it, FAIL included.
    let done = PollResult {
        seen_invoke_count: 2,
        state: State::Success,
        invoke_count: 3,
        data: Some(r#"{"done": true}"#.into()),
        finish_at: Some(now),
        ..poll.clone()
    };
    assert!(db.blocking(move |c| repo::apply_poll(c, &done, None)).unwrap());
    let stale = PollResult { seen_invoke_count: 3, invoke_count: 4, ..poll };
    assert!(!db.blocking(move |c| repo::apply_poll(c, &stale, None)).unwrap(), "final rows are never polled");
    assert!(!db.blocking(move |c| repo::fail(c, "t1", "late", now, None)).unwrap(), "FAIL never overwrites SUCCESS");
    let row = db.blocking(|c| repo::load(c, "t1")).unwrap();
    assert_eq!((row.state().unwrap(), row.finish_at, row.err.as_str()), (State::Success, Some(now), ""));
}

#[derive(QueryableByName)]
struct SessionStatus {
    #[diesel(sql_type = Text, column_name = "Value")]
    value: String,
}

/// Statements this session has prepared; the query itself is one of them.
fn session_prepares(conn: &mut MysqlConnection) -> i64 {
    let status =
        diesel::sql_query("SHOW SESSION STATUS LIKE 'Com_stmt_prepare'").get_result::<SessionStatus>(conn).unwrap();
    status.value.parse().unwrap()
}

#[test]
fn a_polls_transaction_reuses_its_prepared_statements_and_keeps_what_it_leaves_alone() {
    let (tdb, db) = django_made();
    let mut conn = tdb.connect();
    let now = db.now();
    for trace_id in ["p1", "p2"] {
        repo::insert(&mut conn, &new_schedule(trace_id, now)).unwrap();
    }
    let failed = |trace_id: &str| PollResult {
        state: State::Fail,
        data: None,
        err: Some("boom".into()),
        finish_at: Some(now),
        ..first_poll(trace_id)
    };
    // The first poll on a connection prepares its statements (a final one
    // also clears retry bookkeeping).
    assert!(repo::apply_poll_seen(&mut conn, &failed("p1"), Some(&attempt("p1", 2, "FAIL", now)), false).unwrap());
    // A later one only executes them: BEGIN, UPDATE, DELETE, INSERT and
    // COMMIT are not prepared again (only the status query itself is).
    let before = session_prepares(&mut conn);
    assert!(repo::apply_poll_seen(&mut conn, &failed("p2"), Some(&attempt("p2", 2, "FAIL", now)), false).unwrap());
    assert_eq!(session_prepares(&mut conn) - before, 1, "a poll's transaction prepared its statements again");
    // A column the poll leaves alone (`data: None`) keeps what is stored.
    let row = repo::load(&mut conn, "p2").unwrap();
    assert_eq!((row.state().unwrap(), row.invoke_count), (State::Fail, 2));
    assert_eq!((row.data, row.err.as_str(), row.finish_at), (new_schedule("p2", now).data, "boom", Some(now)));
    assert_eq!(repo::attempts(&mut conn, "p2").unwrap(), vec![attempt("p2", 2, "FAIL", now)]);
}

#[test]
fn fail_keeps_data_sets_err_and_finish_at_once() {
    let (_tdb, db) = django_made();
    let now = db.now();
    db.blocking(|c| repo::insert(c, &new_schedule("t2", now))).unwrap();
    let before = db.blocking(|c| repo::load(c, "t2")).unwrap();
    let log = attempt("t2", 2, "FAIL", now);
    assert!(
        db.blocking({
            let log = log.clone();
            move |c| repo::fail(c, "t2", "plugin schedule failed: boom", now, Some(&log))
        })
        .unwrap()
    );
    assert!(!db.blocking(move |c| repo::fail(c, "t2", "again", now, None)).unwrap());
    let row = db.blocking(|c| repo::load(c, "t2")).unwrap();
    assert_eq!(row.state().unwrap(), State::Fail);
    assert_eq!(row.err, "plugin schedule failed: boom");
    assert_eq!(row.finish_at, Some(now));
    assert_eq!(row.data, before.data, "data untouched");
    assert_eq!(db.blocking(|c| repo::attempts(c, "t2")).unwrap(), vec![log]);
}

/// The callback task `task_id` on `trace_id`.
fn held(trace_id: &str, task_id: &str) -> HeldCallback {
    HeldCallback {
        trace_id: trace_id.into(),
        task_id: task_id.into(),
        callback_id: "cb".into(),
        callback_data: "{}".into(),
    }
}

#[test]
fn scheduling_lock_is_taken_once_and_released() {
    let (_tdb, db) = django_made();
    let now = db.now();
    db.blocking(|c| repo::insert(c, &new_schedule("t3", now))).unwrap();
    assert!(db.blocking(|c| repo::try_lock(c, &held("t3", "task-a"), now)).unwrap());
    assert!(!db.blocking(|c| repo::try_lock(c, &held("t3", "task-b"), now)).unwrap(), "another task is refused");
    assert!(db.blocking(|c| repo::load(c, "t3")).unwrap().scheduling);
    db.blocking(|c| repo::unlock(c, "t3", "task-b")).unwrap();
    assert!(db.blocking(|c| repo::load(c, "t3")).unwrap().scheduling, "not released by a task not holding it");
    db.blocking(|c| repo::unlock(c, "t3", "task-a")).unwrap();
    assert!(!db.blocking(|c| repo::load(c, "t3")).unwrap().scheduling);
    assert_eq!(db.blocking(|c| repo::lock_owner(c, "t3")).unwrap(), None, "released with its owner");
    assert!(db.blocking(|c| repo::try_lock(c, &held("t3", "task-b"), now)).unwrap());
    assert!(!db.blocking(|c| repo::try_lock(c, &held("no-such", "task-b"), now)).unwrap());
}

/// A delivery of the task that took the lock holds it again (its first
/// worker died mid-step); no other task does, and a lock released by a
/// poll's own update belongs to no one.
#[test]
fn the_task_that_took_the_scheduling_lock_holds_it_when_redelivered() {
    let (tdb, db) = django_made();
    let now = db.now();
    db.blocking(|c| repo::insert(c, &new_schedule("t4", now))).unwrap();
    assert!(db.blocking(|c| repo::try_lock(c, &held("t4", "task-a"), now)).unwrap());
    assert!(db.blocking(|c| repo::try_lock(c, &held("t4", "task-a"), now)).unwrap(), "the redelivered copy");
    assert!(!db.blocking(|c| repo::try_lock(c, &held("t4", "task-b"), now)).unwrap());
    assert_eq!(db.blocking(|c| repo::lock_owner(c, "t4")).unwrap().as_deref(), Some("task-a"));
    // Released by an update of its own (a Python worker's, say) with the record left.
    let mut conn = tdb.connect();
    diesel::sql_query("UPDATE schedule_schedule SET scheduling = 0 WHERE trace_id = 't4'").execute(&mut conn).unwrap();
    assert!(db.blocking(|c| repo::try_lock(c, &held("t4", "task-b"), now)).unwrap(), "a free lock is anyone's");
    assert!(!db.blocking(|c| repo::try_lock(c, &held("t4", "task-a"), now)).unwrap(), "the old owner no longer");
}

#[test]
fn retry_bookkeeping_is_written_updated_and_cleared() {
    let (_tdb, db) = django_made();
    let now = db.now();
    db.blocking(|c| repo::insert(c, &new_schedule("t4", now))).unwrap();
    let first = RetryState {
        trace_id: "t4".into(),
        retries: 1,
        first_failure_at: now,
        last_failure_at: now,
        next_retry_at: Some(now + Duration::seconds(5)),
        last_error_class: "transient".into(),
        last_error: "mysql error 2013".into(),
    };
    db.blocking({
        let first = first.clone();
        move |c| repo::record_retry(c, &first)
    })
    .unwrap();
    let later = now + Duration::seconds(5);
    let second = RetryState {
        retries: 2,
        first_failure_at: later,
        last_failure_at: later,
        next_retry_at: Some(later + Duration::seconds(10)),
        last_error: "mysql error 1205".into(),
        ..first.clone()
    };
    db.blocking(move |c| repo::record_retry(c, &second)).unwrap();
    let state = db.blocking(|c| repo::retry_state(c, "t4")).unwrap().unwrap();
    assert_eq!(state.retries, 2);
    assert_eq!(state.first_failure_at, now, "the first failure time is kept");
    assert_eq!(state.last_failure_at, later);
    assert_eq!(state.last_error, "mysql error 1205");
    // A landed poll clears it in the same transaction.
    let poll = PollResult {
        trace_id: "t4".into(),
        seen_invoke_count: 1,
        state: State::Poll,
        invoke_count: 2,
        data: None,
        err: None,
        finish_at: None,
        release_lock: false,
    };
    assert!(db.blocking(move |c| repo::apply_poll(c, &poll, None)).unwrap());
    assert_eq!(db.blocking(|c| repo::retry_state(c, "t4")).unwrap(), None);
    db.blocking(move |c| repo::record_retry(c, &first)).unwrap();
    db.blocking(|c| repo::clear_retry(c, "t4")).unwrap();
    assert_eq!(db.blocking(|c| repo::retry_state(c, "t4")).unwrap(), None);
}

#[test]
fn a_poll_loads_whether_it_is_retrying_and_clears_only_then_or_when_final() {
    let (_tdb, db) = django_made();
    let now = db.now();
    db.blocking(|c| repo::insert(c, &new_schedule("t5", now))).unwrap();
    let loaded = db.blocking(|c| repo::load_for_poll(c, "t5")).unwrap();
    assert_eq!((loaded.row.invoke_count, loaded.retrying, loaded.paused), (1, false, false));
    assert!(matches!(db.blocking(|c| repo::load_for_poll(c, "no-such")), Err(celerity_db::DbError::NotFound(_))));
    let retry = RetryState {
        trace_id: "t5".into(),
        retries: 1,
        first_failure_at: now,
        last_failure_at: now,
        next_retry_at: Some(now + Duration::seconds(5)),
        last_error_class: "transient".into(),
        last_error: "mysql error 1205".into(),
    };
    let record = |state: RetryState| db.blocking(move |c| repo::record_retry(c, &state)).unwrap();
    record(retry.clone());
    assert!(db.blocking(|c| repo::load_for_poll(c, "t5")).unwrap().retrying, "the retry row is seen with the row");

    let poll = |seen: i32, state: State| PollResult {
        trace_id: "t5".into(),
        seen_invoke_count: seen,
        state,
        invoke_count: seen + 1,
        data: None,
        err: None,
        finish_at: None,
        release_lock: false,
    };
    let apply = |result: PollResult, retrying: bool| {
        db.blocking(move |c| repo::apply_poll_seen(c, &result, None, retrying)).unwrap()
    };
    // Seen retrying: cleared with the update.
    assert!(apply(poll(1, State::Poll), true));
    assert_eq!(db.blocking(|c| repo::retry_state(c, "t5")).unwrap(), None);
    // Written after the load by a concurrent duplicate: an open poll leaves it
    // for the next poll, which sees it and clears it.
    record(retry.clone());
    assert!(apply(poll(2, State::Poll), false));
    assert!(db.blocking(|c| repo::retry_state(c, "t5")).unwrap().is_some());
    let retrying = db.blocking(|c| repo::load_for_poll(c, "t5")).unwrap().retrying;
    assert!(apply(poll(3, State::Poll), retrying));
    assert_eq!(db.blocking(|c| repo::retry_state(c, "t5")).unwrap(), None);
    // A final poll clears whatever it saw.
    record(retry);
    assert!(apply(PollResult { finish_at: Some(now), ..poll(4, State::Success) }, false));
    assert_eq!(db.blocking(|c| repo::retry_state(c, "t5")).unwrap(), None);
}

#[test]
fn expired_schedules_are_deleted_in_batches_with_their_rows() {
    let (_tdb, db) = django_made();
    let now = db.now();
    let old = now - Duration::days(31);
    for i in 0..7 {
        let id = format!("old{i}");
        let mut row = new_schedule(&id, old);
        row.state = State::Success.code();
        row.finish_at = Some(old);
        db.blocking(move |c| repo::insert(c, &row)).unwrap();
        let log = attempt(&id, 2, "SUCCESS", old);
        db.blocking(move |c| repo::append_attempt(c, &log)).unwrap();
    }
    let mut recent = new_schedule("recent", now);
    recent.state = State::Fail.code();
    recent.finish_at = Some(now - Duration::days(1));
    db.blocking(move |c| repo::insert(c, &recent)).unwrap();
    db.blocking(|c| repo::insert(c, &new_schedule("running", now))).unwrap();

    let cutoff = now - Duration::days(30);
    let deleted = db.blocking(move |c| repo::delete_finished_before(c, cutoff, 3)).unwrap();
    assert_eq!(deleted, 7);
    for id in ["recent", "running"] {
        assert!(db.blocking(move |c| repo::load(c, id)).is_ok(), "{id} kept");
    }
    assert!(db.blocking(|c| repo::attempts(c, "old0")).unwrap().is_empty(), "their attempt log went too");
    assert_eq!(db.blocking(move |c| repo::delete_finished_before(c, cutoff, 3)).unwrap(), 0);
}

#[test]
fn times_are_utc_by_default_and_the_configured_zone_otherwise() {
    let tdb = TestDatabase::create();
    let utc = Db::new(DbConfig::new(tdb.url())).unwrap();
    let shanghai =
        Db::new(DbConfig { time_zone: "Asia/Shanghai".parse::<Tz>().unwrap(), ..DbConfig::new(tdb.url()) }).unwrap();
    let real = Utc::now().naive_utc();
    assert!((utc.now() - real).num_seconds().abs() < 5);
    assert!((shanghai.now() - real - Duration::hours(8)).num_seconds().abs() < 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_run_off_the_runtime() {
    let (_tdb, db) = django_made();
    let now = db.now();
    db.call(move |c| repo::insert(c, &new_schedule("t5", now))).await.unwrap();
    let row = db.call(|c| repo::load(c, "t5")).await.unwrap();
    assert_eq!(row.trace_id, "t5");
    db.call(repo::ping).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_before_a_call_does_not_count_toward_its_deadline() {
    let tdb = TestDatabase::create();
    let config = DbConfig { call_timeout: std::time::Duration::from_millis(500), ..DbConfig::new(tdb.url()) };
    let db = Db::new(config).unwrap();
    // Work three deadlines long (a slow plugin step), then a quick statement.
    let slow = || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        "stepped"
    };
    let (made, ()) = db.call_after(slow, |_, c| repo::ping(c)).await.unwrap();
    assert_eq!(made, "stepped");
    // The deadline still bounds the database's part.
    let hung = db.call_after(|| (), |_, c| diesel::sql_query("SELECT SLEEP(2)").execute(c).map_err(Into::into)).await;
    assert!(matches!(hung, Err(celerity_db::DbError::Deadline(_))), "{hung:?}");
}
