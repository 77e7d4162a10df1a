//! The same schedules, produced the way the framework produces them, run by
//! `celerity worker` and by the Python framework worker: every column of
//! `schedule_schedule` must end the same, but for the documented
//! improvements (a clear `err` and `finish_at` on every FAIL).

use std::process::Command;
use std::time::Duration;

use celerity::plugins::{Context, Outcome, Plugin, Registry};
use celerity_tests::{
    ChildGuard, InProcessWorker, RowView, Vhost, framework_app, migrated_database, python, python_script, temp_dir,
    wait_for_rows, worker_config,
};
use serde_json::json;

/// Rust twin of framework_app.py's "panic-1.0.0".
struct Panics;

impl Plugin for Panics {
    type Inputs = serde_json::Value;
    type ContextData = serde_json::Map<String, serde_json::Value>;

    fn execute(&self, _: serde_json::Value, ctx: &mut Context<Self::ContextData>) -> Outcome {
        ctx.storage.insert("touched".into(), true.into());
        panic!("boom");
    }
}

/// Rust twin of framework_app.py's "callback-1.0.0".
struct WaitsForCallback;

impl Plugin for WaitsForCallback {
    type Inputs = serde_json::Value;
    type ContextData = serde_json::Map<String, serde_json::Value>;

    fn execute(&self, _: serde_json::Value, ctx: &mut Context<Self::ContextData>) -> Outcome {
        let Some(cb) = ctx.callback.clone() else { return Outcome::WaitCallback };
        ctx.outputs.insert("callback_id".into(), cb.id.into());
        ctx.outputs.insert("callback_data".into(), cb.data);
        Outcome::Success
    }
}

fn registry() -> Registry {
    let mut r = Registry::with_builtin();
    r.register("panic-1.0.0", Panics).register("callback-1.0.0", WaitsForCallback);
    r
}

const CALLBACK_DATA: &str = r#"{"ok": true, "n": 1, "name": "é"}"#;

fn specs() -> serde_json::Value {
    json!([
        {"trace_id": "success0000000000000000000000000", "version": "1.0.0", "inputs": {"polls": 3, "interval": 0}},
        {"trace_id": "interval000000000000000000000000", "version": "1.0.0", "inputs": {"polls": 2, "interval": 1}},
        {"trace_id": "pluginerror000000000000000000000", "version": "1.0.0", "inputs": {"polls": 5, "fail_at": 3}},
        {"trace_id": "panic00000000000000000000000000", "version": "panic-1.0.0", "inputs": {}},
        {"trace_id": "unknownversion000000000000000000", "version": "9.9.9", "inputs": {"polls": 1}},
        {"trace_id": "badinputs00000000000000000000000", "version": "1.0.0",
         "raw_data": "{\"inputs\": {\"polls\": \"many\"}, \"context\": {\"storage\": {}, \"outputs\": {}, \"data\": {}}, \"outputs\": {}}"},
        {"trace_id": "badjson0000000000000000000000000", "version": "1.0.0", "raw_data": "{not json"},
        {"trace_id": "callback000000000000000000000000", "version": "callback-1.0.0", "inputs": {}},
    ])
}

/// Runs the specs through one worker; returns the final rows.
async fn run_side(celerity: bool) -> std::collections::BTreeMap<String, RowView> {
    let vhost = Vhost::create();
    let db = migrated_database();
    let dir = temp_dir();
    // Start the consumer first so the queues exist with the framework's arguments.
    let mut python_worker = None;
    let mut rust_worker = None;
    if celerity {
        rust_worker = Some(InProcessWorker::start(worker_config(&vhost.url(), &db.url()), registry()));
    } else {
        let mut cmd = Command::new(python());
        cmd.arg(python_script("framework_app.py")).args(["worker", "--broker", &vhost.url(), "--db", &db.url()]);
        python_worker = Some(ChildGuard::spawn(cmd, dir.join("python-worker.log")));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    framework_app(&["produce", "--broker", &vhost.url(), "--db", &db.url(), "--specs", &specs().to_string()]);
    let open =
        |rows: &std::collections::BTreeMap<String, RowView>| rows.len() == 8 && rows.values().all(|r| r.state != 2);
    wait_for_rows(&db, Duration::from_secs(60), open).await;
    framework_app(&[
        "callback",
        "--broker",
        &vhost.url(),
        "--trace-id",
        "callback000000000000000000000000",
        "--callback-id",
        "cb-1",
        "--data",
        CALLBACK_DATA,
    ]);
    let rows = wait_for_rows(&db, Duration::from_secs(60), |rows| rows.values().all(|r| r.state >= 4)).await;
    if let Some(w) = rust_worker {
        w.stop().await.expect("worker stops cleanly");
    }
    drop(python_worker);
    let _ = std::fs::remove_dir_all(dir);
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn celerity_leaves_every_column_as_the_python_worker_does() {
    let python_rows = run_side(false).await;
    let rust_rows = run_side(true).await;
    assert_eq!(python_rows.keys().collect::<Vec<_>>(), rust_rows.keys().collect::<Vec<_>>());

    // Same columns where the plugin ran.
    for id in ["success", "interval", "pluginerror", "panic", "callback"] {
        let (py, rs) = (pick(&python_rows, id), pick(&rust_rows, id));
        assert_eq!(rs, py, "{id}: Celerity and the Python worker disagree");
    }
    // The expected values of SPEC §5, checked on Celerity's side.
    let r = pick(&rust_rows, "success");
    assert_eq!((r.state, r.invoke_count, r.finished, r.err.as_str()), (4, 4, true, ""));
    assert_eq!(
        r.data,
        r#"{"inputs": {"polls": 3, "interval": 0}, "context": {"storage": {"executions": 4}, "outputs": {"polls_done": 3}, "data": {}}, "outputs": {"polls_done": 3}}"#
    );
    let r = pick(&rust_rows, "pluginerror");
    assert_eq!((r.state, r.invoke_count, r.err.as_str()), (5, 3, "plugin schedule failed: fail_at reached"));
    assert!(r.data.contains(r#""executions": 2"#), "{}", r.data);
    let r = pick(&rust_rows, "panic");
    assert_eq!((r.state, r.invoke_count, r.err.as_str()), (5, 2, "plugin schedule failed: boom"));
    assert!(!r.data.contains("touched"), "an unexpected error does not save data: {}", r.data);
    let r = pick(&rust_rows, "callback");
    assert_eq!((r.state, r.invoke_count, r.scheduling), (4, 2, false));
    assert!(r.data.contains(r#""callback_data": {"ok": true, "n": 1, "name": "\u00e9"}"#), "{}", r.data);

    // Where the plugin could not run, Python sets FAIL and nothing else;
    // Celerity also says why and sets finish_at (SPEC §3.4, §2).
    for (id, err) in [
        ("unknownversion", "can not find plugin for version 9.9.9"),
        ("badinputs", "inputs validation error: invalid type: string \"many\", expected i64"),
        ("badjson", "schedule data load error: data is not JSON"),
    ] {
        let (py, rs) = (pick(&python_rows, id), pick(&rust_rows, id));
        assert_eq!((py.state, py.finished, py.err.as_str()), (5, false, ""), "{id}: the Python worker's FAIL");
        assert_eq!((rs.state, rs.invoke_count, &rs.data), (5, py.invoke_count, &py.data), "{id}");
        assert!(rs.finished, "{id}: Celerity sets finish_at on every FAIL");
        assert!(rs.err.starts_with(err), "{id}: err {:?} should start with {err:?}", rs.err);
    }
}

fn pick<'a>(rows: &'a std::collections::BTreeMap<String, RowView>, prefix: &str) -> &'a RowView {
    rows.iter().find(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).unwrap_or_else(|| panic!("no row {prefix}"))
}
