//! The same schedules, produced by the framework's own producer
//! (`BKPluginExecutor.execute`, bk-plugin-framework 2.3.15), run by the
//! framework's own Celery worker with the plugin project's Python plugins
//! and by `celerity worker` with their Rust twins: every column of
//! `schedule_schedule` must end the same, but for the documented
//! improvements (a clear `err` and `finish_at` on every FAIL).

use std::time::Duration;

use broker_proto::topology;
use celerity::plugins::{Context, Outcome, Plugin, Registry};
use celerity_db::State;
use celerity_tests::plugin_project::Project;
use celerity_tests::{
    InProcessWorker, RowView, confirmed_channel, insert_schedule, publish_task, python, task_message, temp_dir,
    wait_for_rows, worker_config,
};
use serde_json::json;

/// Rust twin of the project's 1.4.0, which raises a ValueError.
struct Raises;

impl Plugin for Raises {
    type Inputs = serde_json::Value;
    type ContextData = serde_json::Map<String, serde_json::Value>;

    fn execute(&self, _: serde_json::Value, ctx: &mut Context<Self::ContextData>) -> Outcome {
        ctx.storage.insert("touched".into(), true.into());
        panic!("unexpected value 42");
    }
}

/// Rust twin of the project's 1.2.0, which waits for a callback.
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
    r.register("1.4.0", Raises).register("1.2.0", WaitsForCallback);
    r
}

fn specs() -> Vec<(&'static str, &'static str, serde_json::Value, serde_json::Value)> {
    vec![
        ("success0000000000000000000000000", "1.0.0", json!({"polls": 3, "interval": 0}), json!({})),
        ("interval000000000000000000000000", "1.0.0", json!({"polls": 2, "interval": 1}), json!({})),
        ("pluginerror000000000000000000000", "1.0.0", json!({"polls": 5, "fail_at": 3}), json!({})),
        ("panic00000000000000000000000000", "1.4.0", json!({}), json!({})),
        ("callback000000000000000000000000", "1.2.0", json!({}), json!({})),
    ]
}

/// Rows no producer writes, as an operator or an old version might leave them.
const RAW: [(&str, &str, &str); 3] = [
    (
        "unknownversion000000000000000000",
        "9.9.9",
        r#"{"inputs": {"polls": 1}, "context": {"storage": {}, "outputs": {}, "data": {}}, "outputs": {}}"#,
    ),
    (
        "badinputs00000000000000000000000",
        "1.0.0",
        r#"{"inputs": {"polls": "many"}, "context": {"storage": {}, "outputs": {}, "data": {}}, "outputs": {}}"#,
    ),
    ("badjson0000000000000000000000000", "1.0.0", "{not json"),
];

/// Runs the schedules through one worker; returns the final rows.
async fn run_side(celerity: bool) -> std::collections::BTreeMap<String, RowView> {
    let project = Project::new(&python());
    let dir = temp_dir();
    // Start the consumer first so the queues exist with the framework's arguments.
    let mut framework = None;
    let mut rust = None;
    if celerity {
        rust = Some(InProcessWorker::start(worker_config(&project.vhost.url(), &project.db.url()), registry()));
    } else {
        framework = Some(project.framework_worker(dir.join("framework.log")));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    project.produce(&specs());
    let (_conn, ch) = confirmed_channel(&project.vhost).await;
    for (trace_id, version, data) in RAW {
        insert_schedule(&project.db.url(), trace_id, version, State::Poll, data);
        let m = task_message(topology::SCHEDULE_TASK, &[("trace_id", trace_id)]);
        publish_task(&ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, &m).await;
    }
    let open =
        |rows: &std::collections::BTreeMap<String, RowView>| rows.len() == 8 && rows.values().all(|r| r.state != 2);
    wait_for_rows(&project.db, Duration::from_secs(60), open).await;
    project.callback("callback000000000000000000000000", "cb-1", &json!({"ok": true, "n": 1, "name": "é"}));
    let rows = wait_for_rows(&project.db, Duration::from_secs(60), |rows| rows.values().all(|r| r.state >= 4)).await;
    if let Some(w) = rust {
        w.stop().await.expect("worker stops cleanly");
    }
    drop(framework);
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
    assert_eq!((r.state, r.invoke_count, r.err.as_str()), (5, 2, "plugin schedule failed: unexpected value 42"));
    assert!(!r.data.contains("touched"), "an unexpected error does not save data: {}", r.data);
    let r = pick(&rust_rows, "callback");
    assert_eq!((r.state, r.invoke_count, r.scheduling), (4, 2, false));
    assert!(r.data.contains(r#""callback_data": {"ok": true, "n": 1, "name": "\u00e9"}"#), "{}", r.data);

    // Where the plugin could not run, the framework sets FAIL without a
    // reason (and finish_at only where its executor noticed; not for an
    // unknown version); Celerity also says why and always sets finish_at
    // (SPEC §3.4, §2).
    for (id, err) in [
        ("unknownversion", "can not find plugin for version 9.9.9"),
        ("badinputs", "inputs validation error: invalid type: string \"many\", expected i64"),
        ("badjson", "schedule data load error: data is not JSON"),
    ] {
        let (py, rs) = (pick(&python_rows, id), pick(&rust_rows, id));
        assert_eq!((py.state, py.err.as_str()), (5, ""), "{id}: the framework worker's FAIL");
        assert_eq!(py.finished, id != "unknownversion", "{id}: the framework worker's finish_at");
        assert_eq!((rs.state, rs.invoke_count, &rs.data), (5, py.invoke_count, &py.data), "{id}");
        assert!(rs.finished, "{id}: Celerity sets finish_at on every FAIL");
        assert!(rs.err.starts_with(err), "{id}: err {:?} should start with {err:?}", rs.err);
    }
}

fn pick<'a>(rows: &'a std::collections::BTreeMap<String, RowView>, prefix: &str) -> &'a RowView {
    rows.iter().find(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).unwrap_or_else(|| panic!("no row {prefix}"))
}
