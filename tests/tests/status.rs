//! `celerity status`: one schedule as an operator needs it (RETRYING made
//! visible), counts by state, JSON output, and no credentials in the output.

use std::process::Command;

use celerity_db::{Attempt, Db, DbConfig, RetryState, State, repo};
use celerity_tests::{TestDatabase, celerity_bin, example_data, insert_schedule, migrated_database};
use diesel::prelude::*;

fn status(db: &TestDatabase, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(celerity_bin()).arg("status").args(args).args(["--database-url", &db.url()]).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn set(db: &TestDatabase, sql: &str) {
    diesel::sql_query(sql).execute(&mut db.connect()).unwrap();
}

#[test]
fn status_shows_each_state_retrying_included() {
    let tdb = migrated_database();
    for (id, state) in [
        ("polling", State::Poll),
        ("retrying", State::Poll),
        ("waiting", State::Callback),
        ("done", State::Poll),
        ("failed", State::Poll),
    ] {
        insert_schedule(&tdb.url(), id, "1.0.0", state, &example_data(3, 0));
    }
    set(&tdb, "UPDATE schedule_schedule SET state = 4, invoke_count = 4, finish_at = NOW(6) WHERE trace_id = 'done'");
    set(
        &tdb,
        "UPDATE schedule_schedule SET state = 5, err = 'plugin schedule failed: boom', finish_at = NOW(6) WHERE trace_id = 'failed'",
    );
    let db = Db::new(DbConfig::new(tdb.url())).unwrap();
    let now = db.now();
    let retry = RetryState {
        trace_id: "retrying".into(),
        retries: 2,
        first_failure_at: now,
        last_failure_at: now,
        next_retry_at: Some(now + chrono::Duration::seconds(20)),
        last_error_class: "transient".into(),
        last_error: "database error (mysql error 2013): Lost connection to server during query".into(),
    };
    db.blocking(move |c| repo::record_retry(c, &retry)).unwrap();
    let attempt = Attempt {
        trace_id: "polling".into(),
        attempt: 2,
        started_at: now,
        ended_at: now,
        outcome: "POLL".into(),
        error: String::new(),
        hostname: "celerity@a".into(),
        next_poll_at: Some(now),
        task_id: Some("task-1".into()),
    };
    db.blocking(move |c| repo::append_attempt(c, &attempt)).unwrap();

    let (ok, out, err) = status(&tdb, &["retrying"]);
    assert!(ok, "{err}");
    assert!(out.contains("status        RETRYING (stored state POLL)"), "{out}");
    assert!(out.contains("retries       2 since"), "{out}");
    assert!(out.contains("last error    transient: database error (mysql error 2013)"), "{out}");

    let json = |id: &str| -> serde_json::Value {
        let (ok, out, err) = status(&tdb, &[id, "--json"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let r = json("retrying");
    assert_eq!(
        (r["status"].as_str(), r["state"].as_str(), r["retry"]["retries"].as_i64()),
        (Some("RETRYING"), Some("POLL"), Some(2))
    );
    assert!(r["retry"]["next_retry_at"].is_string());
    let p = json("polling");
    assert_eq!(p["status"], "POLL");
    assert!(p["retry"].is_null());
    assert_eq!(p["attempts"][0]["attempt"], 2);
    assert_eq!(p["attempts"][0]["hostname"], "celerity@a");
    assert_eq!(json("waiting")["status"], "CALLBACK");
    let d = json("done");
    assert_eq!((d["status"].as_str(), d["invoke_count"].as_i64()), (Some("SUCCESS"), Some(4)));
    assert!(d["finish_at"].is_string());
    let f = json("failed");
    assert_eq!((f["status"].as_str(), f["err"].as_str()), (Some("FAIL"), Some("plugin schedule failed: boom")));

    let (ok, out, _) = status(&tdb, &["--summary", "--json"]);
    assert!(ok);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            s["poll"].as_i64(),
            s["retrying"].as_i64(),
            s["callback"].as_i64(),
            s["success"].as_i64(),
            s["fail"].as_i64(),
            s["total"].as_i64()
        ),
        (Some(1), Some(1), Some(1), Some(1), Some(1), Some(5))
    );
    let (ok, out, _) = status(&tdb, &["--summary"]);
    assert!(ok && out.contains("RETRYING  1") && out.contains("total     5"), "{out}");

    let (ok, _, err) = status(&tdb, &["nosuch"]);
    assert!(!ok && err.trim() == "celerity: schedule nosuch not found", "{err}");
}

#[test]
fn status_never_shows_the_password() {
    let out = Command::new(celerity_bin())
        .args(["status", "--summary", "--database-url", "mysql://nobody:hunter2pw@127.0.0.1:3306/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("hunter2pw"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

/// An `err` a plugin wrote with a line break and a terminal escape: the
/// text view shows both escaped, on the `err` line; JSON keeps the text.
#[test]
fn status_escapes_control_characters_from_the_row() {
    let tdb = migrated_database();
    insert_schedule(&tdb.url(), "hostile", "1.0.0", State::Poll, &example_data(1, 0));
    set(
        &tdb,
        "UPDATE schedule_schedule SET state = 5, finish_at = NOW(6), \
         err = CONCAT('failed', CHAR(10), 'status        SUCCESS', CHAR(27), '[2J') WHERE trace_id = 'hostile'",
    );
    let (ok, out, err) = status(&tdb, &["hostile"]);
    assert!(ok, "{err}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(out.contains(r"err           failed\nstatus        SUCCESS\u{1b}[2J"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("status")).count(), 1, "{out}");
    let (ok, out, _) = status(&tdb, &["hostile", "--json"]);
    let row: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && row["err"] == "failed\nstatus        SUCCESS\u{1b}[2J", "{out}");
}
