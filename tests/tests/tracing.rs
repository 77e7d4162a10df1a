//! OpenTelemetry, configured as BlueKing apps configure it: a producer
//! instrumented with the real Celery instrumentation invokes the test
//! plugins; the framework's own worker (instrumented the same way) runs
//! one project and Celerity the other; a real OTLP receiver takes both
//! span trees, which must have the same parent chain from the producer's
//! span through every poll, with the same span names and key attributes.
//! Then a collector that is down, refuses or is slow: the polls do not
//! notice, and what is lost is counted.

use std::collections::BTreeMap;
use std::time::Duration;

use celerity_tests::otlp::{Answer, Receiver, Span, by_id, chain, children};
use celerity_tests::plugin_project::Project;
use celerity_tests::{
    ChildGuard, free_local_addr, free_port, http_get, metric_sample, python, rows, temp_dir, unique, wait_health,
};
use serde_json::json;

const SCHEDULE_TASK: &str = "bk_plugin_framework.runtime.schedule.celery.tasks.schedule";
const CALLBACK_TASK: &str = "bk_plugin_framework.runtime.callback.celery.tasks.callback";

/// How a process is told to trace: as blueapps reads it, or the standard way.
#[derive(Clone, Copy, Debug)]
enum Config {
    /// `ENABLE_OTEL_TRACE` and `BKAPP_OTEL_*`, OTLP/gRPC.
    BlueKing,
    /// `OTEL_*`, OTLP/HTTP with protobuf.
    Standard,
}

fn tracing_env(config: Config, receiver: &Receiver, service: &str) -> Vec<(String, String)> {
    let pairs: Vec<(&str, String)> = match config {
        Config::BlueKing => vec![
            ("ENABLE_OTEL_TRACE", "True".into()),
            ("BKAPP_OTEL_GRPC_HOST", format!("http://127.0.0.1:{}", receiver.grpc)),
            ("BKAPP_OTEL_SERVICE_NAME", service.into()),
            // blueapps' default (parentbased_always_off) would keep no
            // trace the producer starts itself.
            ("BKAPP_OTEL_SAMPLER", "always_on".into()),
            ("BKAPP_OTEL_BK_DATA_TOKEN", "data-token-for-tests".into()),
        ],
        Config::Standard => vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", receiver.http)),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_SERVICE_NAME", service.into()),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=tests".into()),
        ],
    };
    let mut env: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
    env
}

/// A trace id of 32 characters from a short name, the same in both projects.
fn id(name: &str) -> String {
    format!("{name:-<32}")
}

/// The framework's producer creates three schedules of `project`: one
/// polls three times, one fails, one waits for a callback.
fn create_schedules(project: &Project) {
    let (polls, failat, waits) = (id("polls"), id("failat"), id("waits"));
    project.produce(&[
        (&polls, "1.0.0", json!({"polls": 3}), json!({})),
        (&failat, "1.0.0", json!({"polls": 3, "fail_at": 2}), json!({})),
        (&waits, "1.2.0", json!({}), json!({})),
    ]);
}

/// Runs each project makes: three polls, one that fails, and the callback.
const RUNS: usize = 5;

fn produce(project: &mut Project, config: Config, receiver: &Receiver, producer: &str) {
    let worker_env = std::mem::replace(&mut project.extra_env, tracing_env(config, receiver, producer));
    create_schedules(project);
    project.extra_env = worker_env;
}

/// Waits until every schedule is final, or waiting for its callback.
async fn settled(project: &Project, worker: &ChildGuard) {
    let start = std::time::Instant::now();
    loop {
        let now = rows(&project.db);
        let waiting = |t: &String| t == &id("waits") && now[t].state == 3;
        if !now.is_empty() && now.iter().all(|(t, r)| r.state == 4 || r.state == 5 || waiting(t)) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "schedules not settled: {now:#?}\n{}", worker.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The framework's callback API, traced as the producer is, for the schedule waiting.
fn call_back(project: &mut Project, config: Config, receiver: &Receiver, producer: &str) {
    let worker_env = std::mem::replace(&mut project.extra_env, tracing_env(config, receiver, producer));
    project.callback(&id("waits"), "cb-1", &json!({"answer": 42}));
    project.extra_env = worker_env;
}

fn runs<'s>(spans: &'s [Span], service: &str) -> Vec<&'s Span> {
    spans.iter().filter(|s| s.service() == service && s.name().starts_with("run/")).collect()
}

/// For each schedule (by the trace id its invoke span carries), the chain
/// of span names from the producer's span to its last poll.
fn chains(spans: &[Span], worker: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out = BTreeMap::new();
    for run in runs(spans, worker) {
        let chain = chain(spans, run);
        let root = chain[0];
        let trace_id = root.attr("bk_plugin.trace_id").as_str().unwrap_or("(no request span)").to_owned();
        let schedule = (trace_id, root.name().to_owned());
        let names: Vec<String> = chain.iter().map(|s| format!("{} [{}]", s.name(), s.kind())).collect();
        let longest = out.entry(schedule).or_insert_with(Vec::new);
        if names.len() > longest.len() {
            *longest = names;
        }
    }
    out
}

/// Every run span of `worker`: a child of the producer span that published
/// its message, with Celery's key attributes.
fn check_runs(spans: &[Span], worker: &str) {
    let by_id = by_id(spans);
    for run in runs(spans, worker) {
        let parent = by_id.get(run.ids().1).unwrap_or_else(|| panic!("{worker}: run span without its parent: {run:?}"));
        let task = run.name().strip_prefix("run/").unwrap_or_default();
        assert!([SCHEDULE_TASK, CALLBACK_TASK].contains(&task), "{run:?}");
        assert_eq!(parent.name(), format!("apply_async/{task}"), "{worker}: {run:?}");
        assert_eq!(parent.kind(), 4, "the publish is a PRODUCER span");
        assert_eq!(run.kind(), 5, "the run is a CONSUMER span");
        assert_eq!(run.attr("celery.action"), "run");
        assert_eq!(run.attr("celery.task_name"), task);
        assert_eq!(run.attr("celery.state"), "SUCCESS", "{worker}: {run:?}");
        assert_eq!(parent.attr("celery.action"), "apply_async");
        assert_eq!(
            run.attr("messaging.message.id"),
            parent.attr("messaging.message.id"),
            "{worker}: the run is of the message its parent published"
        );
    }
}

async fn side_by_side(config: Config) {
    let receiver = Receiver::start(Answer::Accept);
    let dir = temp_dir();
    let (theirs_name, ours_name) = (unique("framework"), unique("celerity"));
    let mut theirs = Project::new(&python());
    let mut ours = Project::new(&python());
    produce(&mut theirs, config, &receiver, &format!("{theirs_name}-producer"));
    produce(&mut ours, config, &receiver, &format!("{ours_name}-producer"));
    theirs.extra_env = tracing_env(config, &receiver, &theirs_name);
    ours.extra_env = tracing_env(config, &receiver, &ours_name);
    let framework = theirs.framework_worker(dir.join("framework.log"));
    let format = match config {
        Config::BlueKing => "json",
        Config::Standard => "text",
    };
    let celerity = ours.celerity(&["--python-workers", "1", "--log-format", format], dir.join("celerity.log"));
    for (project, worker, name) in [(&mut theirs, &framework, &theirs_name), (&mut ours, &celerity, &ours_name)] {
        settled(project, worker).await;
        call_back(project, config, &receiver, &format!("{name}-producer"));
        let waits = id("waits");
        let start = std::time::Instant::now();
        while rows(&project.db)[&waits].state != 4 {
            assert!(start.elapsed() < Duration::from_secs(60), "the callback did not land: {}", worker.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let spans = receiver
        .wait_for(Duration::from_secs(60), "every run span of both workers", |spans| {
            runs(spans, &theirs_name).len() == RUNS && runs(spans, &ours_name).len() == RUNS
        })
        .await;
    let log = || format!("framework log:\n{}\ncelerity log:\n{}", framework.log(), celerity.log());

    // One trace per schedule, the same chain from the producer's span to the last poll.
    let (their_chains, our_chains) = (chains(&spans, &theirs_name), chains(&spans, &ours_name));
    assert_eq!(their_chains.len(), 3, "{their_chains:#?}\n{}", log());
    assert_eq!(their_chains, our_chains, "the framework's worker (left) and Celerity (right) differ\n{}", log());
    let polls = &our_chains[&(id("polls"), "POST /bk_plugin/invoke".to_owned())];
    assert_eq!(polls.len(), 1 + 2 * 3, "invoke, then publish and run for each of 3 polls: {polls:#?}");
    assert!(polls[0].starts_with("POST /bk_plugin/invoke"), "{polls:#?}");
    check_runs(&spans, &theirs_name);
    check_runs(&spans, &ours_name);

    // What Celerity adds: the schedule, the plugin version, the outcome,
    // and children for the plugin step and the database transaction.
    for run in runs(&spans, &ours_name) {
        let schedule = run.attr("bk_plugin.trace_id").as_str().unwrap_or_default();
        assert!([id("polls"), id("failat"), id("waits")].contains(&schedule.to_owned()), "{run:?}");
        let version = if schedule == id("waits") { "1.2.0" } else { "1.0.0" };
        assert_eq!(run.attr("bk_plugin.version"), version);
        let outcome = run.attr("celerity.outcome").as_str().unwrap_or_default();
        assert!(["poll", "success", "fail"].contains(&outcome), "{run:?}");
        let names: Vec<&str> = children(&spans, run).iter().map(|s| s.name()).collect();
        assert!(names.contains(&"plugin step"), "{names:?}");
        assert!(names.contains(&"database transaction"), "{names:?}");
    }
    let any = runs(&spans, &ours_name)[0].clone();
    match config {
        Config::BlueKing => {
            assert_eq!(any.0["via"], "grpc");
            assert_eq!(any.0["resource"]["bk.data.token"], "data-token-for-tests");
        }
        Config::Standard => {
            assert_eq!(any.0["via"], "http");
            assert_eq!(any.0["resource"]["deployment.environment"], "tests");
        }
    }
    let logged = celerity.log();
    assert!(logged.contains("tracing: endpoint"), "the start-up log says where spans go: {logged}");
    logs_carry_the_span(&logged, config, &runs(&spans, &ours_name));
}

/// Each run's log line `polled` carries its span's trace id and span id.
fn logs_carry_the_span(log: &str, config: Config, runs: &[&Span]) {
    let polled: Vec<&str> = log.lines().filter(|l| l.contains("polled")).collect();
    assert_eq!(polled.len(), runs.len(), "one `polled` line per run:\n{log}");
    for run in runs {
        let (span_id, _, trace_id) = run.ids();
        let found = polled.iter().any(|line| match config {
            Config::BlueKing => {
                let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
                json["span"]["trace_id"] == trace_id && json["span"]["span_id"] == span_id
            }
            Config::Standard => line.contains(&format!("otel{{trace_id={trace_id} span_id={span_id}}}")),
        });
        assert!(found, "no `polled` line with trace {trace_id} span {span_id}:\n{}", polled.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_blueapps_settings_one_trace_per_schedule_as_the_frameworks_worker_makes() {
    side_by_side(Config::BlueKing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_standard_otel_variables_one_trace_per_schedule_as_the_frameworks_worker_makes() {
    side_by_side(Config::Standard).await;
}

/// Celerity alone, traced into the collector at `grpc_port`, with `extra`
/// settings: every schedule finishes; returns its `/metrics`.
async fn polls_despite(receiver: &Receiver, grpc_port: u16, extra: &[(&str, &str)], what: &str) -> String {
    let dir = temp_dir();
    let mut project = Project::new(&python());
    // The producer does not trace: the polls start their own traces.
    create_schedules(&project);
    let mut env = tracing_env(Config::BlueKing, receiver, "celerity");
    env.retain(|(k, _)| k != "BKAPP_OTEL_GRPC_HOST");
    env.push(("BKAPP_OTEL_GRPC_HOST".into(), format!("http://127.0.0.1:{grpc_port}")));
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    project.extra_env = env;
    let http = free_local_addr();
    let celerity =
        project.celerity(&["--python-workers", "1", "--http-addr", &http.to_string()], dir.join("celerity.log"));
    wait_health(http, 200, Duration::from_secs(60)).await;
    settled(&project, &celerity).await;
    let start = std::time::Instant::now();
    loop {
        let metrics = http_get(http, "/metrics").map(|(_, body)| body).unwrap_or_default();
        let dropped: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("celerity_trace_spans_dropped_total"))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum();
        if dropped > 0.0 {
            return metrics;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: no drop counted\n{metrics}\n{}", celerity.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collector_that_is_down_or_refuses_costs_the_polls_nothing_and_the_loss_is_counted() {
    let refusing = Receiver::start(Answer::Refuse);
    let metrics = polls_despite(&refusing, refusing.grpc, &[], "a refusing collector").await;
    let failed = metric_sample(&metrics, "celerity_trace_spans_dropped_total{reason=\"export failed\"}");
    assert!(failed.is_some_and(|n| n > 0.0), "{metrics}");
    assert!(refusing.spans().is_empty(), "a refusing receiver keeps nothing");

    let nowhere = free_port();
    let metrics = polls_despite(&refusing, nowhere, &[], "no collector at all").await;
    let failed = metric_sample(&metrics, "celerity_trace_spans_dropped_total{reason=\"export failed\"}");
    assert!(failed.is_some_and(|n| n > 0.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_collector_fills_the_bounded_queue_not_the_polls() {
    let slow = Receiver::start(Answer::Slow(30));
    let tiny = [("OTEL_BSP_MAX_QUEUE_SIZE", "2"), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")];
    let metrics = polls_despite(&slow, slow.grpc, &tiny, "a slow collector").await;
    let full = metric_sample(&metrics, "celerity_trace_spans_dropped_total{reason=\"queue full\"}");
    assert!(full.is_some_and(|n| n > 0.0), "{metrics}");
}

#[test]
fn a_bad_tracing_setting_stops_start_up_naming_it() {
    let out = std::process::Command::new(celerity_tests::celerity_bin())
        .args([
            "worker",
            "--example-plugin",
            "--broker-url",
            "amqp://127.0.0.1:1//",
            "--database-url",
            "mysql://x@127.0.0.1:1/x",
        ])
        .env("ENABLE_OTEL_TRACE", "true")
        .env("BKAPP_OTEL_SAMPLER", "sometimes")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("BKAPP_OTEL_SAMPLER"), "{stderr}");
}

/// A plain HTTP server answering 200 to every request; the request heads it got.
fn http_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/status", listener.local_addr().unwrap());
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            got.lock().unwrap().push(head);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (url, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugins_http_call_is_a_child_of_its_poll_span() {
    let receiver = Receiver::start(Answer::Accept);
    let (url, heads) = http_server();
    let dir = temp_dir();
    let mut project = Project::new(&python());
    let service = unique("celerity");
    project.extra_env = tracing_env(Config::BlueKing, &receiver, &format!("{service}-producer"));
    let calls = id("calls");
    project.produce(&[(&calls, "3.1.0", json!({"url": url}), json!({}))]);
    project.extra_env = tracing_env(Config::BlueKing, &receiver, &service);
    let celerity = project.celerity(&["--python-workers", "1"], dir.join("celerity.log"));
    let spans = receiver
        // The host sends its span as soon as the call ends; the run's span
        // comes after the step, from the worker: wait for the whole chain.
        .wait_for(Duration::from_secs(90), "the plugin's HTTP call and the spans above it", |spans| {
            spans.iter().filter(|s| s.kind() == 3 && s.name() == "GET").any(|get| chain(spans, get).len() == 4)
        })
        .await;
    let get = spans.iter().find(|s| s.kind() == 3 && s.name() == "GET").unwrap();
    let chain: Vec<&str> = chain(&spans, get).iter().map(|s| s.name()).collect();
    assert_eq!(
        chain,
        ["POST /bk_plugin/invoke", &format!("apply_async/{SCHEDULE_TASK}"), &format!("run/{SCHEDULE_TASK}"), "GET"],
        "{}",
        celerity.log()
    );
    assert_eq!(get.attr("http.status_code").as_i64().or(get.attr("http.response.status_code").as_i64()), Some(200));
    let head = heads.lock().unwrap().join("\n").to_lowercase();
    assert!(head.contains(&format!("traceparent: 00-{}-{}", get.ids().2, get.ids().0)), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poll_sent_again_and_its_fail_fallback_stay_in_the_schedules_trace() {
    let receiver = Receiver::start(Answer::Accept);
    let dir = temp_dir();
    let mut project = Project::new(&python());
    let service = unique("celerity");
    project.extra_env = tracing_env(Config::BlueKing, &receiver, &format!("{service}-producer"));
    let exits = id("exits");
    // 1.8.0 kills its host on every poll: the message goes again after each
    // death, and after the third the schedule ends FAIL.
    project.produce(&[(&exits, "1.8.0", json!({}), json!({}))]);
    project.extra_env = tracing_env(Config::BlueKing, &receiver, &service);
    let celerity = project.celerity(&["--python-workers", "1"], dir.join("celerity.log"));
    let spans = receiver
        .wait_for(Duration::from_secs(90), "a run that ends FAILURE", |spans| {
            runs(spans, &service).iter().any(|s| s.attr("celery.state") == "FAILURE")
        })
        .await;
    let runs = runs(&spans, &service);
    assert!(runs.len() >= 3, "{runs:#?}\n{}", celerity.log());
    let trace = runs[0].ids().2;
    assert!(runs.iter().all(|r| r.ids().2 == trace), "every run of the schedule is in one trace: {runs:#?}");
    check_parents(&spans, &runs);
    for run in &runs {
        assert_eq!(run.status(), 2, "a poll sent again or failed has an error status: {run:?}");
        let state = run.attr("celery.state").as_str().unwrap_or_default();
        assert!(["RETRY", "FAILURE"].contains(&state), "{run:?}");
        if state == "RETRY" {
            assert_eq!(run.attr("celerity.error_class"), "plugin host died", "{run:?}");
            assert_eq!(run.0["events"][0]["attributes"]["exception.type"], "plugin host died", "{run:?}");
        }
    }
}

/// Every run in `runs` is a child of the publish of its own message, whose
/// parent is the producer's publish or an earlier run.
fn check_parents(spans: &[Span], runs: &[&Span]) {
    let by_id = by_id(spans);
    for run in runs {
        let publish = by_id[run.ids().1];
        assert_eq!(publish.name(), format!("apply_async/{SCHEDULE_TASK}"));
        assert_eq!(run.attr("messaging.message.id"), publish.attr("messaging.message.id"));
        let above = by_id.get(publish.ids().1).map(|s| s.name()).unwrap_or_default();
        assert!(above == "POST /bk_plugin/invoke" || above.starts_with("run/"), "{above}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_opentelemetry_in_the_projects_environment_the_steps_run_as_before() {
    let receiver = Receiver::start(Answer::Accept);
    let (url, heads) = http_server();
    let dir = temp_dir();
    // `opentelemetry` cannot be imported by the project's processes.
    let shadow = dir.join("no-opentelemetry");
    std::fs::create_dir_all(shadow.join("opentelemetry")).unwrap();
    std::fs::write(shadow.join("opentelemetry/__init__.py"), "raise ImportError('not installed here')\n").unwrap();
    let mut project = Project::new(&python());
    create_schedules(&project);
    let calls = id("calls");
    project.produce(&[(&calls, "3.1.0", json!({"url": url}), json!({}))]);
    let service = unique("celerity");
    project.extra_env = tracing_env(Config::BlueKing, &receiver, &service);
    let path = project.env().into_iter().find(|(k, _)| k == "PYTHONPATH").map(|(_, v)| v).unwrap_or_default();
    project.extra_env.push(("PYTHONPATH".into(), format!("{}:{path}", shadow.display())));
    let celerity = project.celerity(&["--python-workers", "1"], dir.join("celerity.log"));
    settled(&project, &celerity).await;
    let rows = rows(&project.db);
    assert_eq!((rows[&id("polls")].state, rows[&id("polls")].invoke_count), (4, 4), "{}", celerity.log());
    assert_eq!(rows[&id("failat")].err, "plugin schedule failed: fail_at reached");
    assert!(rows[&calls].data.contains(r#""status": 200"#), "{}", rows[&calls].data);
    // The worker's own spans still go out; the plugin's call was made
    // untraced, as before: no span of it, no traceparent sent.
    let spans =
        receiver.wait_for(Duration::from_secs(60), "the worker's run spans", |s| runs(s, &service).len() == 5).await;
    assert!(spans.iter().all(|s| s.service() == service && s.name() != "GET"), "{spans:#?}");
    let head = heads.lock().unwrap().join("\n").to_lowercase();
    assert!(head.contains("get /status") && !head.contains("traceparent"), "{head}");
}
