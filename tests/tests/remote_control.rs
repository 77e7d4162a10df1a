//! Real `celery inspect` (Celery 5.7 in the test venv) against a Celerity
//! worker's mailbox on `celery.pidbox`: ping, stats, registered,
//! active_queues.

use std::time::{Duration, Instant};

use celerity::plugins::Registry;
use celerity_tests::{
    ChildGuard, InProcessWorker, Vhost, celerity_bin, celery_inspect as reply, celery_inspect_once as inspect, connect,
    example_worker, free_local_addr, migrated_database, temp_dir, unique, worker_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn celery_inspect_gets_answers_from_a_celerity_worker() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let node = format!("{}@celerity-test", unique("node"));
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.hostname = node.clone();
    config.concurrency = 7;
    let worker = InProcessWorker::start(config, Registry::with_builtin());

    assert_eq!(reply(&vhost.url(), "ping", &node).await, serde_json::json!({"ok": "pong"}));
    let stats = reply(&vhost.url(), "stats", &node).await;
    assert_eq!(stats["pool"]["max-concurrency"], 7, "{stats}");
    assert_eq!(stats["pid"], std::process::id(), "{stats}");
    assert_eq!(stats["sw_ident"], "celerity", "{stats}");

    let registered = reply(&vhost.url(), "registered", &node).await;
    assert!(
        registered.as_array().is_some_and(|t| t.contains(&broker_proto::topology::SCHEDULE_TASK.into())),
        "{registered}"
    );
    let queues = reply(&vhost.url(), "active_queues", &node).await;
    let names: Vec<&str> = queues.as_array().unwrap().iter().filter_map(|q| q["name"].as_str()).collect();
    assert_eq!(
        names,
        ["plugin_schedule", "plugin_callback", "schedule_delete", "celerity.schedule", "celerity.countdown"],
        "{queues}"
    );

    // Addressed to another node: this one stays silent, so nobody replies.
    let other = format!("{}@elsewhere", unique("node"));
    let (b, o) = (vhost.url(), other.clone());
    let (ok, stdout) = tokio::task::spawn_blocking(move || inspect(&b, "ping", &o)).await.unwrap();
    assert!(!ok && !stdout.contains(&node), "a request for {other} was answered: {stdout}");
    worker.stop().await.unwrap();
}

/// Sleeps, then succeeds: a poll that is running when inspected.
struct Sleepy;

impl celerity::plugins::Plugin for Sleepy {
    type Inputs = serde_json::Value;
    type ContextData = serde_json::Value;

    fn execute(
        &self,
        _: serde_json::Value,
        _: &mut celerity::plugins::Context<serde_json::Value>,
    ) -> celerity::plugins::Outcome {
        std::thread::sleep(Duration::from_secs(8));
        celerity::plugins::Outcome::Success
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn celery_inspect_lists_active_reserved_and_scheduled_tasks() {
    use broker_proto::topology;
    use celerity_db::State;
    use celerity_tests::{
        confirmed_channel, declare_framework_queue, example_data, insert_schedule, publish_task, task_message,
    };

    let vhost = Vhost::create();
    let tdb = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let ids: Vec<String> = (0..3).map(|_| unique("i").replace('-', "")).collect();
    insert_schedule(&tdb.url(), &ids[0], "sleepy-1.0.0", State::Poll, &example_data(1, 0));
    for id in &ids[1..] {
        insert_schedule(&tdb.url(), id, "1.0.0", State::Poll, &example_data(1, 0));
    }
    let node = format!("{}@celerity-test", unique("node"));
    let mut config = worker_config(&vhost.url(), &tdb.url());
    config.hostname = node.clone();
    config.concurrency = 1;
    config.eta_window = Duration::from_secs(30);
    let mut registry = Registry::with_builtin();
    registry.register("sleepy-1.0.0", Sleepy);
    let worker = InProcessWorker::start(config, registry);

    let running = task_message(topology::SCHEDULE_TASK, &[("trace_id", &ids[0])]);
    publish_task(&ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, &running).await;
    let start = Instant::now();
    loop {
        let active = reply(&vhost.url(), "active", &node).await;
        if active.as_array().is_some_and(|a| a.iter().any(|t| t["id"] == running.id.as_str())) {
            assert!(active[0]["time_start"].as_f64().is_some(), "{active}");
            assert_eq!(active[0]["name"], topology::SCHEDULE_TASK);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(6), "not active: {active}");
    }
    // The only slot is taken: the next delivery waits for it.
    let waiting = task_message(topology::SCHEDULE_TASK, &[("trace_id", &ids[1])]);
    publish_task(&ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, &waiting).await;
    // Due in 20 s, inside the eta window: held in memory until then.
    let mut later = task_message(topology::SCHEDULE_TASK, &[("trace_id", &ids[2])]);
    let eta = chrono::Utc::now() + chrono::Duration::seconds(20);
    later.eta = Some(eta.fixed_offset());
    publish_task(&ch, topology::EXCHANGE, topology::SCHEDULE_QUEUE.name, &later).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let reserved = reply(&vhost.url(), "reserved", &node).await;
    assert!(reserved.as_array().is_some_and(|r| r.iter().any(|t| t["id"] == waiting.id.as_str())), "{reserved}");
    let scheduled = reply(&vhost.url(), "scheduled", &node).await;
    let entry = scheduled.as_array().and_then(|s| s.iter().find(|t| t["request"]["id"] == later.id.as_str()));
    assert!(entry.is_some_and(|e| e["eta"].as_str().is_some()), "{scheduled}");
    worker.stop().await.unwrap();
}

/// Hostile requests on the control exchange, which anyone who can publish
/// on the vhost reaches every worker through: 200,000 `*` (the recursive
/// matcher overflowed the stack and aborted the process), `*a*a…*b`
/// (exponential backtracking pinned a runtime thread), a 1 MiB body. Each
/// addresses no node; the worker process stays up and answers a ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_patterns_on_the_control_exchange_leave_every_worker_answering() {
    let vhost = Vhost::create();
    let tdb = migrated_database();
    let node = format!("celerity@{}", "a".repeat(60));
    let dir = temp_dir();
    let mut cmd = example_worker(celerity_bin(), &vhost.url(), &tdb.url());
    cmd.args(["--hostname", &node, "--http-addr", &free_local_addr().to_string()]);
    let mut worker = ChildGuard::spawn(cmd, dir.join("worker.log"));
    assert_eq!(reply(&vhost.url(), "ping", &node).await, serde_json::json!({"ok": "pong"}));

    let conn = connect(&vhost.url()).await;
    let ch = conn.create_channel().await.unwrap();
    let request = |pattern: String| {
        serde_json::json!({
            "method": "ping", "arguments": {}, "destination": null, "pattern": pattern, "matcher": "glob",
            "ticket": unique("t"), "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": unique("r")},
        })
        .to_string()
        .into_bytes()
    };
    let mut bodies = vec![request("*".repeat(200_000)), request(format!("{}b", "*a".repeat(500)))];
    bodies.push(request(format!("{}{}", "x".repeat(1 << 20), node)));
    for body in bodies {
        let props = lapin::BasicProperties::default().with_content_type("application/json".into());
        ch.basic_publish("celery.pidbox".into(), "".into(), Default::default(), &body, props).await.unwrap();
    }
    assert_eq!(reply(&vhost.url(), "ping", &node).await, serde_json::json!({"ok": "pong"}));
    assert!(worker.running(), "the worker exited:\n{}", worker.log());
    drop(worker);
    let _ = std::fs::remove_dir_all(dir);
}
