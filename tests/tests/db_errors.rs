//! Every class of database error, provoked for real and classified. Tests
//! that stop, kill or freeze a server use a private `mariadbd`; the others use
//! a database of their own on the shared server.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use celerity_db::{Db, DbConfig, DbError, ErrorClass, MysqlCode, MysqlConnection, PollResult, State, migrate, repo};
use celerity_tests::{PrivateMariadb, TestDatabase, TestUser, free_port};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};

fn config(url: &str) -> DbConfig {
    DbConfig {
        pool_size: 2,
        checkout_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(3),
        lock_wait_timeout: Duration::from_secs(1),
        ..DbConfig::new(url)
    }
}

fn migrated(db: &TestDatabase) -> Db {
    let handle = Db::new(config(&db.url())).unwrap();
    handle.blocking(migrate::run).unwrap();
    handle
}

fn insert_schedule(conn: &mut MysqlConnection, trace_id: &str) {
    diesel::sql_query(format!(
        "INSERT INTO schedule_schedule VALUES ('{trace_id}', '1.0.0', 2, 1, '{{}}', NOW(6), NULL, 0, '')"
    ))
    .execute(conn)
    .unwrap();
}

fn connection_id(conn: &mut MysqlConnection) -> i64 {
    diesel::select(sql::<BigInt>("CONNECTION_ID()")).get_result(conn).unwrap()
}

fn assert_transient(e: &DbError, codes: &[MysqlCode]) {
    eprintln!("provoked: {e}");
    assert_eq!(e.class(), ErrorClass::Transient, "{e} should be transient");
    if !codes.is_empty() {
        assert!(e.mysql_code().is_some_and(|c| codes.contains(&c)), "{e}: expected one of {codes:?}");
    }
}

#[test]
fn connection_refused_is_transient() {
    let url = format!("mysql://root@127.0.0.1:{}/x", free_port());
    let db = Db::new(config(&url)).unwrap();
    let e = db.check_connection().unwrap_err();
    assert!(matches!(e, DbError::Connect { .. }), "{e}");
    assert_transient(&e, &[MysqlCode::ConnHostError, MysqlCode::ConnectionError]);
    // Through the pool the same failure is a checkout timeout, also transient.
    let started = Instant::now();
    let e = db.blocking(|c| repo::load(c, "x")).unwrap_err();
    assert!(matches!(e, DbError::PoolTimeout { .. }), "{e}");
    assert_transient(&e, &[]);
    assert!(started.elapsed() < Duration::from_secs(10), "checkout is bounded");
}

#[test]
fn killed_connection_is_transient_and_dropped_from_the_pool() {
    let tdb = TestDatabase::create();
    let db = migrated(&tdb);
    let id = db.blocking(|c| Ok(connection_id(c))).unwrap();
    let mut admin = tdb.connect();
    diesel::sql_query(format!("KILL {id}")).execute(&mut admin).unwrap();
    // The pooled connection is dead: the server has gone away.
    let e = db.blocking(|c| repo::load(c, "x")).unwrap_err();
    assert_transient(&e, &[MysqlCode::ServerGone, MysqlCode::ServerLost, MysqlCode::ConnectionKilled]);
    // It was dropped, not handed out again: the next call works on a new one.
    let again = db.blocking(|c| Ok(connection_id(c))).unwrap();
    assert_ne!(again, id);
}

#[test]
fn pooled_connections_are_replaced_after_their_lifetime() {
    let tdb = TestDatabase::create();
    let short = DbConfig { max_lifetime: Duration::from_secs(1), idle_timeout: Duration::ZERO, ..config(&tdb.url()) };
    let db = Db::new(short).unwrap();
    let first = db.blocking(|c| Ok(connection_id(c))).unwrap();
    assert_eq!(db.pool_connections(), (0, 1), "one idle connection");
    // The pool looks at lifetimes every 30 s.
    let start = Instant::now();
    while db.pool_connections() != (0, 0) {
        assert!(start.elapsed() < Duration::from_secs(40), "the connection outlived its lifetime");
        std::thread::sleep(Duration::from_millis(500));
    }
    let second = db.blocking(|c| Ok(connection_id(c))).unwrap();
    assert_ne!(first, second, "a new connection after the old one's life ended");
}

#[test]
fn connection_lost_during_a_query_is_transient() {
    let tdb = TestDatabase::create();
    let db = migrated(&tdb);
    let id = db.blocking(|c| Ok(connection_id(c))).unwrap();
    let killer = {
        let mut admin = tdb.connect();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            diesel::sql_query(format!("KILL {id}")).execute(&mut admin).unwrap();
        })
    };
    let e = db
        .blocking(|c| {
            diesel::select(sql::<Integer>("SLEEP(5)")).get_result::<i32>(c)?;
            Ok(())
        })
        .unwrap_err();
    killer.join().unwrap();
    assert_transient(&e, &[MysqlCode::ServerLost, MysqlCode::ConnectionKilled, MysqlCode::ServerGone]);
}

#[test]
fn lock_wait_timeout_is_transient() {
    let tdb = TestDatabase::create();
    let db = migrated(&tdb);
    let mut holder = tdb.connect();
    insert_schedule(&mut holder, "locked");
    holder
        .transaction::<_, diesel::result::Error, _>(|holder| {
            diesel::sql_query("SELECT * FROM schedule_schedule WHERE trace_id = 'locked' FOR UPDATE")
                .execute(holder)?;
            let held = celerity_db::HeldCallback {
                trace_id: "locked".into(),
                task_id: "task".into(),
                callback_id: "cb".into(),
                callback_data: "{}".into(),
            };
            let e = db.blocking(|c| repo::try_lock(c, &held, db.now())).unwrap_err();
            assert_transient(&e, &[MysqlCode::LockWaitTimeout]);
            Ok(())
        })
        .unwrap();
}

/// `scheduling` 0 → 1 as one statement, inside the caller's transaction.
fn take_lock(c: &mut MysqlConnection, trace_id: &str) -> Result<usize, DbError> {
    Ok(diesel::sql_query("UPDATE schedule_schedule SET scheduling = 1 WHERE trace_id = ?")
        .bind::<diesel::sql_types::Varchar, _>(trace_id)
        .execute(c)?)
}

#[test]
fn deadlock_is_transient() {
    let tdb = TestDatabase::create();
    let db = migrated(&tdb);
    let mut setup = tdb.connect();
    insert_schedule(&mut setup, "a");
    insert_schedule(&mut setup, "b");
    // Two sessions lock a then b and b then a: InnoDB picks a victim.
    let barrier = Arc::new(Barrier::new(2));
    let run = |first: &'static str, second: &'static str| {
        let db = db.clone();
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            db.blocking(move |c| {
                c.transaction(|c| {
                    take_lock(c, first)?;
                    barrier.wait();
                    take_lock(c, second)?;
                    Ok(())
                })
            })
        })
    };
    let results = [run("a", "b"), run("b", "a")].map(|t| t.join().unwrap());
    let errors: Vec<&DbError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "exactly one deadlock victim: {results:?}");
    assert_transient(errors[0], &[MysqlCode::Deadlock]);
}

#[test]
fn faults_of_one_schedule_are_schedule_fatal() {
    let tdb = TestDatabase::create();
    let db = migrated(&tdb);
    let e = db.blocking(|c| repo::load(c, "missing")).unwrap_err();
    assert!(matches!(e, DbError::NotFound(ref id) if id == "missing"), "{e}");
    assert_eq!(e.class(), ErrorClass::ScheduleFatal);

    // A state the framework never writes is bad data.
    let mut conn = tdb.connect();
    diesel::sql_query("INSERT INTO schedule_schedule VALUES ('odd', '1.0.0', 9, 1, '{}', NOW(6), NULL, 0, '')")
        .execute(&mut conn)
        .unwrap();
    let row = db.blocking(|c| repo::load(c, "odd")).unwrap();
    let e = row.state().unwrap_err();
    assert!(matches!(e, DbError::BadData(_)), "{e}");
    assert_eq!(e.class(), ErrorClass::ScheduleFatal);

    let long_version = "9".repeat(300);
    for (statement, code) in [
        (
            "INSERT INTO schedule_schedule VALUES ('odd', '1.0.0', 2, 1, '{}', NOW(6), NULL, 0, '')".to_owned(),
            MysqlCode::DuplicateEntry,
        ),
        ("UPDATE schedule_schedule SET plugin_version = NULL".to_owned(), MysqlCode::BadNull),
        (format!("UPDATE schedule_schedule SET plugin_version = '{long_version}'"), MysqlCode::DataTooLong),
        ("UPDATE schedule_schedule SET invoke_count = 99999999999".to_owned(), MysqlCode::OutOfRange),
        ("UPDATE schedule_schedule SET created_at = 'not a time'".to_owned(), MysqlCode::TruncatedWrongValue),
    ] {
        let e = db.blocking(move |c| Ok(diesel::sql_query(statement.as_str()).execute(c)?)).unwrap_err();
        assert_eq!(e.mysql_code(), Some(code), "{e}");
        assert_eq!(e.class(), ErrorClass::ScheduleFatal, "{e}");
    }

    // A trigger's SIGNAL and a CHECK constraint refuse one schedule's update,
    // inside the guarded update's transaction.
    diesel::sql_query(
        "CREATE TRIGGER refuse_odd BEFORE UPDATE ON schedule_schedule FOR EACH ROW \
         IF NEW.data = 'refused' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'this data is refused'; END IF",
    )
    .execute(&mut conn)
    .unwrap();
    diesel::sql_query("ALTER TABLE schedule_schedule ADD CONSTRAINT short_err CHECK (CHAR_LENGTH(err) < 100)")
        .execute(&mut conn)
        .unwrap();
    insert_schedule(&mut conn, "t");
    for (data, err, code) in
        [("refused", String::new(), MysqlCode::Signal), ("{}", "x".repeat(200), MysqlCode::CheckConstraint)]
    {
        let result = poll_result("t", data, &err);
        let e = db.blocking(move |c| repo::apply_poll(c, &result, None)).unwrap_err();
        assert_eq!(e.mysql_code(), Some(code), "{e}");
        assert_eq!(e.class(), ErrorClass::ScheduleFatal, "{e}");
    }
}

#[test]
fn faults_of_the_surroundings_are_environment_faults() {
    let tdb = TestDatabase::create();
    let db = migrated(&tdb);
    for (statement, code) in [
        ("SELECT nosuch FROM schedule_schedule", MysqlCode::BadField),
        ("SELEC 1", MysqlCode::ParseError),
        ("SELECT * FROM no_such_table", MysqlCode::NoSuchTable),
    ] {
        let e = db.blocking(move |c| Ok(diesel::sql_query(statement).execute(c)?)).unwrap_err();
        assert_eq!(e.mysql_code(), Some(code), "{statement}: {e}");
        assert_eq!(e.class(), ErrorClass::Environment, "{statement}: {e}");
    }

    // The probe runs every kind of statement a poll does, changing nothing.
    let user = TestUser::create(&tdb);
    let as_user = Db::new(config(&user.url())).unwrap();
    as_user.blocking(repo::probe).expect("the probe passes with every grant");
    user.admin("REVOKE UPDATE ON {db}.schedule_schedule FROM {user}");
    let e = as_user.blocking(repo::probe).unwrap_err();
    assert_eq!(e.mysql_code(), Some(MysqlCode::TableAccessDenied), "{e}");
    assert_eq!(e.class(), ErrorClass::Environment);
    user.admin("GRANT UPDATE ON {db}.schedule_schedule TO {user}");
    let mut conn = tdb.connect();
    diesel::sql_query("ALTER TABLE schedule_schedule RENAME COLUMN err TO error_text").execute(&mut conn).unwrap();
    let e = as_user.blocking(repo::probe).unwrap_err();
    assert_eq!((e.mysql_code(), e.class()), (Some(MysqlCode::BadField), ErrorClass::Environment), "{e}");
    diesel::sql_query("ALTER TABLE schedule_schedule RENAME COLUMN error_text TO err").execute(&mut conn).unwrap();
    as_user.blocking(repo::probe).expect("the probe passes again");

    // Credentials refused in a running worker: new connections fail, and the
    // pool's checkout says why.
    user.admin("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {user}");
    user.admin("GRANT USAGE ON *.* TO {user}");
    let fresh = Db::new(config(&user.url())).unwrap();
    let e = fresh.blocking(repo::probe).unwrap_err();
    assert!(matches!(e, DbError::PoolTimeout { .. }), "{e}");
    assert_eq!((e.mysql_code(), e.class()), (Some(MysqlCode::DbAccessDenied), ErrorClass::Environment), "{e}");
    let wrong = Db::new(config(&user.url().replace("pw-of-a-test", "rotated"))).unwrap();
    let e = wrong.blocking(repo::probe).unwrap_err();
    assert_eq!((e.mysql_code(), e.class()), (Some(MysqlCode::AccessDenied), ErrorClass::Environment), "{e}");
}

#[test]
fn server_codes_are_read_from_the_server_and_unknown_ones_are_transient() {
    let tdb = TestDatabase::create();
    let db = migrated(&tdb);
    let mut conn = tdb.connect();
    // Galera's "node not ready" and a number nobody names, raised by a trigger
    // inside the guarded update's transaction, with messages no pattern knows.
    diesel::sql_query(
        "CREATE TRIGGER odd_errors BEFORE UPDATE ON schedule_schedule FOR EACH ROW BEGIN \
           IF NEW.data = 'not ready' THEN SIGNAL SQLSTATE '08S01' SET MYSQL_ERRNO = 1047, MESSAGE_TEXT = 'node says no'; END IF; \
           IF NEW.data = 'odd' THEN SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 3999, MESSAGE_TEXT = 'something new'; END IF; \
         END",
    )
    .execute(&mut conn)
    .unwrap();
    insert_schedule(&mut conn, "t");
    for (data, code) in [("not ready", MysqlCode::WsrepNotReady), ("odd", MysqlCode::Other(3999))] {
        let result = poll_result("t", data, "");
        let e = db.blocking(move |c| repo::apply_poll(c, &result, None)).unwrap_err();
        assert_eq!(e.mysql_code(), Some(code), "{e}");
        assert_transient(&e, &[code]);
    }
    assert_eq!(MysqlCode::Other(3999).to_string(), "mysql error 3999", "the number is kept for the log");
    // The pool still works: a diagnosis does not spoil the connection.
    assert!(matches!(db.blocking(|c| repo::load(c, "t")), Ok(row) if row.invoke_count == 1));
}

fn poll_result(trace_id: &str, data: &str, err: &str) -> PollResult {
    PollResult {
        trace_id: trace_id.into(),
        seen_invoke_count: 1,
        state: State::Poll,
        invoke_count: 2,
        data: Some(data.into()),
        err: Some(err.into()),
        finish_at: None,
        release_lock: false,
    }
}

#[test]
fn server_shut_down_mid_query_is_transient() {
    let mut server = PrivateMariadb::start();
    let tdb = TestDatabase::create_on(&server.base());
    let db = migrated(&tdb);
    let pid = server.pid();
    let query = {
        let db = db.clone();
        std::thread::spawn(move || {
            db.blocking(|c| {
                diesel::select(sql::<Integer>("SLEEP(20)")).get_result::<i32>(c)?;
                Ok(())
            })
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    assert!(std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap().success());
    let e = query.join().unwrap().unwrap_err();
    assert_transient(
        &e,
        &[MysqlCode::ServerLost, MysqlCode::ServerShutdown, MysqlCode::NormalShutdown, MysqlCode::ConnectionKilled],
    );
    // While it is down, a call is a transient checkout failure; after a restart it works again.
    server.stop();
    assert_transient(&db.blocking(|c| repo::load(c, "x")).unwrap_err(), &[]);
    server.restart();
    let e = db.blocking(|c| repo::load(c, "x")).unwrap_err();
    assert!(matches!(e, DbError::NotFound(_)), "after the restart the database answers: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_server_surfaces_as_a_deadline() {
    let server = PrivateMariadb::start();
    let tdb = TestDatabase::create_on(&server.base());
    let db = migrated(&tdb);
    db.call(repo::ping).await.unwrap();
    server.signal("STOP");
    let started = Instant::now();
    let e = db.call(|c| repo::load(c, "x")).await.unwrap_err();
    let waited = started.elapsed();
    server.signal("CONT");
    assert!(matches!(e, DbError::Deadline(_)), "{e}");
    assert_transient(&e, &[]);
    assert!(waited < Duration::from_secs(6), "gave up after {waited:?}, deadline is 3 s");
    // Once the server runs again, calls succeed.
    let e = db.call(|c| repo::load(c, "x")).await.unwrap_err();
    assert!(matches!(e, DbError::NotFound(_)), "{e}");
}

#[test]
fn passwords_never_reach_error_messages() {
    let url = "mysql://celerity_nobody:hunter2secret@127.0.0.1:3306/x";
    let db = Db::new(config(url)).unwrap();
    let e = db.check_connection().unwrap_err();
    assert_eq!(e.mysql_code(), Some(MysqlCode::AccessDenied), "{e}");
    assert_eq!(e.class(), ErrorClass::Environment, "a wrong password is the environment's fault");
    let pooled = db.blocking(|c| repo::load(c, "x")).unwrap_err();
    for text in
        [e.to_string(), format!("{e:?}"), pooled.to_string(), format!("{pooled:?}"), format!("{:?}", db.config())]
    {
        assert!(!text.contains("hunter2secret"), "password leaked: {text}");
    }
}
