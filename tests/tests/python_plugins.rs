//! The framework's Python plugins, unchanged, under `celerity worker
//! --python`: the same rows as the framework's own Celery worker, column
//! for column, on pydantic v2 and v1; plugins that print, log, hang, exit
//! or die of a signal take nothing else down and strand nothing; hosts are
//! recycled by task count and memory; a project that does not import stops
//! start-up with its traceback.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celerity_tests::plugin_project::{Project, python_pydantic1};
use celerity_tests::{
    ChildGuard, RowView, celerity_bin, celery_inspect, free_local_addr, http_get, python, rows, temp_dir, unique,
    workspace_root,
};
use serde_json::{Value, json};

/// A trace id of 32 characters from a short name.
fn id(name: &str) -> String {
    format!("{name:0<32}")
}

/// JSON bodies posted, by path.
type Posted = Arc<Mutex<BTreeMap<String, Vec<Value>>>>;

/// A local endpoint answering every POST with `{"result": true}`; the
/// bodies it got, by path.
fn callback_server() -> (String, Posted) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(BTreeMap::<String, Vec<Value>>::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap_or_default();
            let path = request.split_whitespace().nth(1).unwrap_or_default().to_owned();
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap_or_default();
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock().unwrap().entry(path).or_default().push(value);
            let answer = r#"{"result": true}"#;
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (base, got)
}

/// The schedules both workers run: every kind of step the framework knows.
fn specs(callback_url: &str) -> Vec<(String, &'static str, Value, Value)> {
    vec![
        (id("polls"), "1.0.0", json!({"polls": 3}), json!({})),
        (id("failat"), "1.0.0", json!({"polls": 3, "fail_at": 3}), json!({})),
        (id("coerce"), "1.1.0", json!({"count": "3", "ratio": "0.25"}), json!({})),
        (id("waits"), "1.2.0", json!({}), json!({})),
        (id("error"), "1.3.0", json!({}), json!({})),
        (id("raises"), "1.4.0", json!({}), json!({})),
        (
            id("postsback"),
            "1.5.0",
            json!({}),
            json!({"plugin_callback_info": {"url": callback_url, "data": {"k": "v", "n": 1}}}),
        ),
        (id("prints"), "1.6.0", json!({}), json!({})),
    ]
}

fn produce(project: &Project, specs: &[(String, &'static str, Value, Value)]) {
    let specs: Vec<(&str, &str, Value, Value)> =
        specs.iter().map(|(t, v, i, c)| (t.as_str(), *v, i.clone(), c.clone())).collect();
    project.produce(&specs);
}

async fn wait_until(
    project: &Project,
    within: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<String, RowView>) -> bool,
) {
    let start = Instant::now();
    loop {
        let now = rows(&project.db);
        if done(&now) {
            return;
        }
        assert!(start.elapsed() < within, "{what} not reached within {within:?}: {now:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn all_final(rows: &BTreeMap<String, RowView>) -> bool {
    rows.values().all(|r| r.state == 4 || r.state == 5)
}

fn final_or_waiting(rows: &BTreeMap<String, RowView>) -> bool {
    rows.iter().all(|(t, r)| if t == &id("waits") { r.state == 3 } else { r.state == 4 || r.state == 5 })
}

/// The framework's own worker on one project and Celerity on another, with
/// the same schedules from the framework's own producer and the same
/// callback from its callback API: every column of every row the same.
async fn same_rows_as_the_frameworks_worker(python: &Path) {
    let (server, posted) = callback_server();
    let dir = temp_dir();
    let theirs = Project::new(python);
    let ours = Project::new(python);
    produce(&theirs, &specs(&format!("{server}/theirs")));
    produce(&ours, &specs(&format!("{server}/ours")));
    let framework = theirs.framework_worker(dir.join("framework.log"));
    let celerity = ours.celerity(&["--python-workers", "2"], dir.join("celerity.log"));
    for project in [&theirs, &ours] {
        wait_until(project, Duration::from_secs(90), "every poll", final_or_waiting).await;
        project.callback(&id("waits"), "cb-1", &json!({"answer": 42, "list": [1, "two"]}));
        let waits = id("waits");
        wait_until(project, Duration::from_secs(60), "the callback", |r| r[&waits].state == 4).await;
    }
    let theirs_rows = rows(&theirs.db);
    let mut ours_rows = rows(&ours.db);
    // The one difference the projects have: where each posts its plugin callback.
    for row in ours_rows.values_mut() {
        row.data = row.data.replace("/ours", "/theirs");
    }
    assert_eq!(theirs_rows.len(), 8);
    for (trace_id, theirs) in &theirs_rows {
        assert_eq!(
            Some(theirs),
            ours_rows.get(trace_id),
            "{trace_id}: the framework's worker (left) and Celerity (right) differ\nframework log:\n{}\ncelerity log:\n{}",
            framework.log(),
            celerity.log()
        );
    }
    // Spot checks of what the rows say, so a shared mistake shows too.
    let row = |t: &str| theirs_rows[&id(t)].clone();
    assert_eq!((row("polls").state, row("polls").invoke_count), (4, 4));
    assert!(row("polls").data.contains(r#""outputs": {"polls_done": 3}"#), "{}", row("polls").data);
    assert_eq!((row("failat").state, row("failat").err.as_str()), (5, "plugin schedule failed: fail_at reached"));
    assert!(row("coerce").data.contains(r#""count_plus_one": 4, "types": ["int", "float"]"#), "{}", row("coerce").data);
    assert!(row("coerce").data.contains(r#"{"count": "3", "ratio": "0.25"}"#), "inputs saved as given");
    assert!(row("waits").data.contains(r#""callback_data": {"answer": 42, "list": [1, "two"]}"#));
    assert_eq!(row("error").err, "plugin schedule failed: the remote system said no");
    assert!(row("error").data.contains(r#""touched": true"#), "a plugin error saves data");
    assert_eq!(row("raises").err, "plugin schedule failed: unexpected value 42");
    assert!(!row("raises").data.contains("touched"), "an unexpected error saves no data");
    // Each posted its plugin callback once, with the plugin's data.
    let posted = posted.lock().unwrap().clone();
    for side in ["/theirs", "/ours"] {
        assert_eq!(posted.get(side), Some(&vec![json!({"k": "v", "n": 1})]), "{side}: {posted:?}");
    }
    // What the plugin printed reached Celerity's log with its trace id.
    let log = celerity.log();
    let printed = log.lines().find(|l| l.contains("printed by the plugin")).unwrap_or_default();
    assert!(printed.contains(&id("prints")), "no printed line with its trace id:\n{log}");
    assert!(log.contains("written to fd 1 by the plugin"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_plugins_make_the_same_rows_as_the_frameworks_own_worker() {
    same_rows_as_the_frameworks_worker(&python()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_plugins_make_the_same_rows_on_pydantic_v1() {
    same_rows_as_the_frameworks_worker(&python_pydantic1()).await;
}

/// The value of the sample line starting with `series`.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misbehaving_plugins_take_nothing_else_down_and_strand_nothing() {
    let dir = temp_dir();
    let project = Project::new(&python());
    let mut specs = vec![
        (id("hangs"), "1.7.0", json!({}), json!({})),
        (id("exits"), "1.8.0", json!({}), json!({})),
        (id("killed"), "2.0.0", json!({}), json!({})),
        (id("prints"), "1.6.0", json!({}), json!({})),
    ];
    for n in 0..4 {
        specs.push((id(&format!("fine{n}")), "1.0.0", json!({"polls": 3}), json!({})));
    }
    produce(&project, &specs);
    let http = free_local_addr();
    let worker = project.celerity(
        &["--python-workers", "2", "--plugin-timeout", "3", "--log-format", "json", "--http-addr", &http.to_string()],
        dir.join("celerity.log"),
    );
    wait_until(&project, Duration::from_secs(120), "every schedule final", all_final).await;
    let rows = rows(&project.db);
    let row = |t: &str| rows[&id(t)].clone();
    assert_eq!((row("hangs").state, row("hangs").err.as_str()), (5, "plugin schedule timed out after 3 s"));
    let exits = row("exits");
    assert_eq!(exits.state, 5);
    assert!(exits.err.contains("died 3 times") && exits.err.contains("exit code 3"), "{}", exits.err);
    let killed = row("killed");
    assert!(killed.err.contains("killed by signal 9 (SIGKILL)"), "{}", killed.err);
    assert_eq!((exits.invoke_count, killed.invoke_count), (1, 1), "no poll of theirs landed");
    assert_eq!(row("prints").state, 4);
    for n in 0..4 {
        let fine = row(&format!("fine{n}"));
        assert_eq!((fine.state, fine.invoke_count), (4, 4), "fine{n} polled on while others misbehaved");
    }

    // Plugin logs and prints in the worker's JSON log, at their level, with the trace id.
    let log = worker.log();
    let records: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let find = |message: &str| records.iter().find(|r| r["message"] == message).cloned();
    let warning = find("a warning from the plugin").unwrap_or_else(|| panic!("no plugin warning:\n{log}"));
    assert_eq!(
        (warning["level"].as_str(), warning["trace_id"].as_str(), warning["logger"].as_str()),
        (Some("WARN"), Some(id("prints").as_str()), Some("bk_plugin"))
    );
    let root = find("an info line on the root logger").unwrap_or_else(|| panic!("no root logger line:\n{log}"));
    assert_eq!(root["level"], "INFO");
    let printed = find("printed by the plugin").unwrap_or_else(|| panic!("no printed line:\n{log}"));
    assert_eq!(printed["trace_id"].as_str(), Some(id("prints").as_str()));

    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(http, "/metrics")).await.unwrap().unwrap();
    assert_eq!(sample(&metrics, r#"celerity_python_host_restarts_total{cause="died"}"#), 6.0, "{metrics}");
    assert_eq!(sample(&metrics, r#"celerity_python_host_restarts_total{cause="timeout"}"#), 1.0, "{metrics}");
    assert!(
        sample(&metrics, r#"celerity_plugin_step_seconds_count{version="1.0.0",outcome="poll"}"#) >= 8.0,
        "{metrics}"
    );
}

/// Output hostile to the host's pipes ends the step that wrote it and no
/// other, and no step waits for a reply that will not come: bytes that are
/// not UTF-8 and a 100 MiB line are logged (cut) and the step goes on;
/// `wait_poll(inf)` FAILs with the reason (before, Python wrote `Infinity`,
/// which is not JSON, and the step waited for good; `wait_poll("5")` the
/// framework itself refuses); a line in the protocol's own pipe
/// during a step FAILs that step with the reason; one written after a step
/// (a forked child) replaces the host before the next step, which runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_plugin_output_ends_its_own_step_and_no_step_waits_for_good() {
    let dir = temp_dir();
    let project = Project::new(&python());
    let mut specs = vec![
        (id("badoutput"), "2.1.0", json!({}), json!({})),
        (id("intervalstr"), "2.2.0", json!({"interval": "5"}), json!({})),
        (id("intervalinf"), "2.2.0", json!({"infinite": true}), json!({})),
        (id("during"), "2.3.0", json!({"when": "during"}), json!({})),
    ];
    for n in 0..3 {
        specs.push((id(&format!("fine{n}")), "1.0.0", json!({"polls": 3}), json!({})));
    }
    produce(&project, &specs);
    let http = free_local_addr();
    // One host: what one step leaves behind meets the next.
    let worker = project.celerity(
        &["--python-workers", "1", "--log-format", "json", "--http-addr", &http.to_string()],
        dir.join("celerity.log"),
    );
    wait_until(&project, Duration::from_secs(120), "every schedule final", all_final).await;
    let rows = rows(&project.db);
    let row = |t: &str| rows[&id(t)].clone();
    let bad = row("badoutput");
    assert_eq!(bad.state, 4, "{bad:?}");
    assert!(bad.data.contains(r#""survived": true"#), "{bad:?}");
    let err = |t: &str| (row(t).state, row(t).err);
    // The framework's own wait_poll refuses a string, as its worker would write it.
    assert_eq!(
        err("intervalstr"),
        (5, "plugin schedule failed: '>' not supported between instances of 'int' and 'str'".to_owned())
    );
    assert_eq!(
        err("intervalinf"),
        (5, "plugin schedule failed: wait_poll interval must be a finite number of seconds, got inf".to_owned())
    );
    let (state, during) = err("during");
    assert_eq!(state, 5);
    assert!(
        during.starts_with(
            "plugin schedule failed: the plugin host's reply cannot be read: a line that is not the protocol"
        ),
        "{during}"
    );
    for n in 0..3 {
        let fine = row(&format!("fine{n}"));
        assert_eq!((fine.state, fine.invoke_count), (4, 4), "fine{n} is charged for nobody's output");
    }
    // A step whose forked child writes into the protocol a second after
    // it: the next step finds its host broken, and runs on a new one.
    produce(&project, &[(id("after"), "2.3.0", json!({"when": "after"}), json!({}))]);
    wait_until(&project, Duration::from_secs(60), "after final", |r| r[&id("after")].state == 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    produce(&project, &[(id("next"), "1.0.0", json!({"polls": 1}), json!({}))]);
    wait_until(&project, Duration::from_secs(60), "the next schedule final", |r| r[&id("next")].state == 4).await;

    let log = worker.log();
    let records: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let said = |part: &str| records.iter().any(|r| r["message"].as_str().is_some_and(|m| m.contains(part)));
    assert!(said("\u{fffd}\u{fffd}\u{fffd}\u{fffd} in GBK"), "the GBK line, replaced:\n{log}");
    assert!(said("not UTF-8 on fd 1"), "{log}");
    assert!(said("[line cut: 104857600 bytes, 65536 logged]"), "the long line, cut:\n{log}");
    assert!(said("after the long line"), "the reader read on:\n{log}");
    assert!(said("a plugin host's stream broke between steps"), "the forked child's line:\n{log}");
    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(http, "/metrics")).await.unwrap().unwrap();
    assert_eq!(sample(&metrics, r#"celerity_python_host_restarts_total{cause="protocol"}"#), 2.0, "{metrics}");
    assert_eq!(sample(&metrics, r#"celerity_python_host_restarts_total{cause="died"}"#), 0.0, "{metrics}");
    assert_eq!(sample(&metrics, "celerity_python_hosts"), 1.0, "back to full: {metrics}");
}

/// A plugin's log message holding `\n` and its output holding `\r`, in
/// the worker's text log: each stays inside its own line, escaped, and no
/// line of the log is one the plugin wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugin_output_cannot_forge_a_line_of_the_workers_log() {
    let dir = temp_dir();
    let project = Project::new(&python());
    produce(&project, &[(id("forges"), "2.4.0", json!({}), json!({}))]);
    let worker = project.celerity(&["--python-workers", "1", "--log-format", "text"], dir.join("celerity.log"));
    wait_until(&project, Duration::from_secs(60), "final", |r| r[&id("forges")].state == 4).await;
    let log = worker.log();
    let forged: Vec<&str> = log.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(forged.len(), 2, "both arrived:\n{log}");
    for line in forged {
        assert!(!line.starts_with("ERROR") && !line.contains("\r"), "{line:?}");
        assert!(
            line.contains(r"done\nERROR celerity: FORGED") || line.contains(r"done\rERROR celerity: FORGED"),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_are_recycled_by_task_count_and_by_memory() {
    let dir = temp_dir();
    let project = Project::new(&python());
    // Four steps of one and two of the other through one host that may take
    // two steps and hold 100 MiB: however they interleave, some host is
    // retired for its task count and some for its memory.
    produce(
        &project,
        &[
            (id("counted"), "1.0.0", json!({"polls": 4}), json!({})),
            (id("grows"), "1.9.0", json!({"mib": 80, "polls": 2}), json!({})),
        ],
    );
    let http = free_local_addr();
    let worker = project.celerity(
        &[
            "--python-workers",
            "1",
            "--python-max-tasks",
            "2",
            "--python-max-memory",
            "100",
            "--http-addr",
            &http.to_string(),
        ],
        dir.join("celerity.log"),
    );
    wait_until(&project, Duration::from_secs(90), "both final", |r| r.values().all(|r| r.state == 4)).await;
    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(http, "/metrics")).await.unwrap().unwrap();
    assert!(sample(&metrics, r#"celerity_python_host_restarts_total{cause="max_tasks"}"#) >= 1.0, "{metrics}");
    assert!(
        sample(&metrics, r#"celerity_python_host_restarts_total{cause="max_memory"}"#) >= 1.0,
        "{metrics}\n{}",
        worker.log()
    );
    let rows = rows(&project.db);
    assert_eq!(rows[&id("counted")].invoke_count, 5);
    assert!(rows[&id("grows")].data.contains(r#""hoarded": 1"#), "a fresh host each time: {:?}", rows[&id("grows")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn celery_inspect_shows_the_plugin_versions_and_the_python_pool() {
    let dir = temp_dir();
    let project = Project::new(&python());
    let node = format!("{}@plugins", unique("node"));
    let worker = project.celerity(&["--python-workers", "2", "--hostname", &node], dir.join("celerity.log"));
    let registered = celery_inspect(&project.vhost.url(), "registered", &node).await;
    assert!(
        registered.as_array().is_some_and(
            |names| names.contains(&json!("plugin 1.2.0 (python: bk_plugin.versions.callback.WaitsForCallback)"))
        ),
        "{registered}\n{}",
        worker.log()
    );
    let stats = celery_inspect(&project.vhost.url(), "stats", &node).await;
    let python = &stats["pool"]["plugins"]["python"];
    assert_eq!(python["bk-plugin-framework"], "2.3.15", "{stats}");
    assert_eq!(python["processes"], 2, "{stats}");
    assert_eq!(stats["pool"]["plugins"]["versions"], 18, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_the_projects_environment_the_plugin_runtimes_settings_are_enough() {
    let dir = temp_dir();
    let project = Project::new(&python());
    produce(&project, &[(id("runtime"), "1.0.0", json!({"polls": 2}), json!({}))]);
    // No --broker-url, no --database-url: the project's BK_PLUGIN_RUNTIME_* only.
    let mut cmd = std::process::Command::new(celerity_bin());
    cmd.args(["worker", "--python"])
        .arg(python())
        .args(["--http-addr", "127.0.0.1:0", "--sweep-interval", "0"])
        .envs(project.env())
        .env_remove("CELERITY_BROKER_URL")
        .env_remove("CELERITY_DATABASE_URL");
    let worker = ChildGuard::spawn(cmd, dir.join("celerity.log"));
    wait_until(&project, Duration::from_secs(60), "the schedule final", |r| r[&id("runtime")].state == 4).await;
    let log = worker.log();
    let vhost = project.vhost.url().rsplit('/').next().unwrap().to_owned();
    let database = project.db.url().rsplit('/').next().unwrap().to_owned();
    assert!(
        log.contains(&format!("broker amqp://guest:***@127.0.0.1:5672/{vhost} from BK_PLUGIN_RUNTIME_BROKER_URL")),
        "{log}"
    );
    assert!(
        log.contains(&format!("database mysql://root@127.0.0.1:3306/{database} from BK_PLUGIN_RUNTIME_DB_*")),
        "{log}"
    );
    assert!(!log.contains("guest:guest"), "the password is masked: {log}");
}

#[test]
fn a_project_that_does_not_import_stops_start_up_with_its_traceback() {
    let project = Project::new(&python());
    let out = std::process::Command::new(celerity_bin())
        .args(["worker", "--python"])
        .arg(python())
        .args(["--broker-url", &project.vhost.url(), "--database-url", &project.db.url(), "--http-addr", "127.0.0.1:0"])
        .envs(project.env())
        .env("DJANGO_SETTINGS_MODULE", "plugin_project.no_such_settings")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the plugin host did not start (exit code 3)"), "{err}");
    assert!(err.contains("Traceback") && err.contains("No module named 'plugin_project.no_such_settings'"), "{err}");
}

#[test]
fn plugins_lists_every_version_and_a_version_offered_twice_is_refused() {
    let project = Project::new(&python());
    let out = std::process::Command::new(celerity_bin())
        .args(["plugins", "--python"])
        .arg(python())
        .envs(project.env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line =
        |v: &str| text.lines().find(|l| l.starts_with(v)).unwrap_or_default().split_whitespace().collect::<Vec<_>>();
    assert_eq!(line("1.2.0 "), ["1.2.0", "python", "bk_plugin.versions.callback.WaitsForCallback"], "{text}");
    assert_eq!(text.lines().filter(|l| l.contains(" python ")).count(), 18, "{text}");
    assert!(text.contains("bk-plugin-framework 2.3.15"), "{text}");

    let both = std::process::Command::new(celerity_bin())
        .args(["worker", "--example-plugin", "--python"])
        .arg(python())
        .args(["--broker-url", &project.vhost.url(), "--database-url", &project.db.url(), "--http-addr", "127.0.0.1:0"])
        .envs(project.env())
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(1));
    let err = String::from_utf8_lossy(&both.stderr);
    assert!(err.contains("plugin version 1.0.0") && err.contains("bk_plugin.versions.polling.Polling"), "{err}");

    let none = std::process::Command::new(celerity_bin())
        .args(["worker", "--broker-url", &project.vhost.url(), "--database-url", &project.db.url()])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("--python PATH") && err.contains("--example-plugin"), "{err}");
}

#[test]
fn the_host_is_python_3_8_syntax() {
    let host = workspace_root().join("worker/src/plugins/python/host.py");
    let out = std::process::Command::new(python())
        .args(["-c", "import ast, sys; ast.parse(open(sys.argv[1]).read(), feature_version=(3, 8))"])
        .arg(&host)
        .output()
        .unwrap();
    assert!(out.status.success(), "host.py is not Python 3.8: {}", String::from_utf8_lossy(&out.stderr));
}

/// A plugin host starts with only its pipes: none of the worker's database
/// sockets (libmariadb opens them without close-on-exec, so a host started
/// while the pool held connections inherited authenticated sessions), and
/// none of the worker's own settings in its environment (its URLs carry
/// passwords; its admin token opens the operator routes). The project's
/// own settings (`BK_PLUGIN_RUNTIME_*`) stay: the framework reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_gets_no_database_socket_and_no_worker_secret() {
    let dir = temp_dir();
    let project = Project::new(&python());
    let node = format!("{}@hosts", unique("node"));
    let mut cmd = std::process::Command::new(celerity_bin());
    cmd.args(["worker", "--python"])
        .arg(python())
        .args(["--python-workers", "2", "--hostname", &node, "--http-addr", "127.0.0.1:0", "--sweep-interval", "0"])
        .envs(project.env())
        .env("CELERITY_BROKER_URL", project.vhost.url())
        .env("CELERITY_DATABASE_URL", project.db.url())
        .env("CELERITY_ADMIN_TOKEN", "a-token-no-plugin-may-see-0123456789");
    let worker = ChildGuard::spawn(cmd, dir.join("celerity.log"));
    let stats = celery_inspect(&project.vhost.url(), "stats", &node).await;
    let pids: Vec<u64> = stats["pool"]["plugins"]["python"]["idle-pids"]
        .as_array()
        .map(|pids| pids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert_eq!(pids.len(), 2, "{stats}\n{}", worker.log());
    for pid in pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let names: Vec<String> = environ
            .split(|b| *b == 0)
            .filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, _)| k.to_owned()))
            .collect();
        let leaked: Vec<&String> =
            names.iter().filter(|k| k.starts_with("CELERITY_") && *k != "CELERITY_HOST_LOG_LEVEL").collect();
        assert!(leaked.is_empty(), "host {pid} has the worker's settings {leaked:?}");
        assert!(
            names.iter().any(|k| k == "BK_PLUGIN_RUNTIME_DB_NAME"),
            "host {pid} keeps the project's settings: {names:?}"
        );
        let mut fds = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
            let target = std::fs::read_link(entry.path()).map(|t| t.display().to_string()).unwrap_or_default();
            fds.push(format!("{}={target}", entry.file_name().to_string_lossy()));
        }
        assert!(!fds.iter().any(|fd| fd.contains("socket:")), "host {pid} holds a socket: {fds:?}");
        assert!(fds.len() <= 6, "host {pid}: standard streams and the two protocol pipes only: {fds:?}");
    }
    drop(worker);
}

/// A worker killed while its callback step runs, holding the framework's
/// `scheduling` lock, leaves no schedule waiting for good: the callback's
/// redelivered copy is recognised as the lock's owner by its task id and
/// runs the step again. Before, the copy found the lock taken, re-queued
/// itself every 1–5 s, and the schedule stayed in CALLBACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_callback_leaves_no_lock_behind() {
    let dir = temp_dir();
    let ledger = dir.join("ledger");
    std::fs::create_dir_all(&ledger).unwrap();
    let mut project = Project::new(&python());
    project.extra_env.push(("NEMESIS_LEDGER_DIR".into(), ledger.display().to_string()));
    let trace_id = id("killedmidcallback");
    let inputs = json!({"polls": 0, "callback": true, "callback_sleep": 6});
    produce(&project, &[(trace_id.clone(), "4.0.0", inputs, json!({}))]);
    let first = project.celerity(&[], dir.join("first.log"));
    wait_until(&project, Duration::from_secs(60), "the schedule waiting for its callback", |r| r[&trace_id].state == 3)
        .await;
    project.callback(&trace_id, "cb-1", &json!({"n": 1}));
    // The ledger's line for invoke_count 2 is written as the callback step starts.
    let started = Instant::now();
    let step_lines = |dir: &Path| -> usize {
        let files = std::fs::read_dir(dir).unwrap().flatten();
        let text: String = files.map(|f| std::fs::read_to_string(f.path()).unwrap_or_default()).collect();
        text.lines().filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["n"] == 2)).count()
    };
    while step_lines(&ledger) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "the callback step never started:\n{}", first.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rows(&project.db)[&trace_id].scheduling, "the step runs holding the lock");
    drop(first); // SIGKILL, mid-step
    let second = project.celerity(&[], dir.join("second.log"));
    wait_until(&project, Duration::from_secs(90), "the callback to complete on the second worker", |r| {
        r[&trace_id].state == 4
    })
    .await;
    let row = rows(&project.db)[&trace_id].clone();
    assert!(!row.scheduling, "the lock is released: {row:?}");
    assert_eq!(row.invoke_count, 2, "{row:?}");
    assert!(row.data.contains(r#""callback_data": {"n": 1}"#), "{}", row.data);
    assert_eq!(step_lines(&ledger), 2, "the step ran again once, on the second worker:\n{}", second.log());
}
