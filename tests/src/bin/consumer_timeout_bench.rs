//! celery#6760, shown on this broker: with RabbitMQ's `consumer_timeout`
//! lowered, a Python Celery worker holding a countdown message unacked in
//! memory loses its channel, while a Celerity worker, which moves the
//! countdown into the broker's delay queues, keeps its own. Prints what
//! happened; asserts nothing.
//!
//! It changes the broker-wide `consumer_timeout` for the run (channels read
//! it when they open) and restores it afterwards: run it alone, not during
//! the test suite. Usage: consumer_timeout_bench [--timeout-ms 20000] [--countdown 240] [--watch 100]

use std::process::{Command, Stdio};
use std::time::Duration;

use celerity_tests::{Vhost, migrated_database, python, python_script, temp_dir, workspace_root};

fn rabbitmqctl_eval(expr: &str) -> String {
    let out = Command::new("rabbitmqctl").args(["eval", expr]).output().expect("rabbitmqctl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Restores the broker's consumer_timeout when dropped.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let expr = match self.0.strip_prefix("{ok,").and_then(|v| v.strip_suffix('}')) {
            Some(v) => format!("application:set_env(rabbit, consumer_timeout, {v})."),
            None => "application:unset_env(rabbit, consumer_timeout).".to_owned(),
        };
        rabbitmqctl_eval(&expr);
        println!("consumer_timeout restored to {}", self.0);
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn send_countdown(broker: &str, countdown: u64) {
    let script = format!(
        "import sys; sys.path.insert(0, {dir:?}); from framework import make_app, SCHEDULE_TASK; \
         make_app('p', {broker:?}, 'plugin_schedule').send_task(SCHEDULE_TASK, kwargs={{'trace_id': 'ct'}}, \
         countdown={countdown}, queue='plugin_schedule')",
        dir = python_script("").display().to_string(),
    );
    let out = Command::new(python()).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn main() {
    let timeout_ms = arg("--timeout-ms", 20_000);
    let countdown = arg("--countdown", 240);
    let watch = arg("--watch", 100);
    let before = rabbitmqctl_eval("application:get_env(rabbit, consumer_timeout).");
    let _restore = Restore(before.clone());
    rabbitmqctl_eval(&format!("application:set_env(rabbit, consumer_timeout, {timeout_ms})."));
    println!("consumer_timeout {before} -> {timeout_ms} ms; countdown {countdown} s; watching {watch} s");

    let dir = temp_dir();
    let (py_vhost, rs_vhost) = (Vhost::create(), Vhost::create());
    let db = migrated_database();
    let celerity = std::env::var_os("CELERITY_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/celerity"));

    let mut python_worker = Command::new(python())
        .arg(python_script("interop.py"))
        .args(["worker", "--broker", &py_vhost.url(), "--queue", "plugin_schedule", "--out"])
        .arg(dir.join("ran.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("python.log")).unwrap()))
        .spawn()
        .unwrap();
    let mut celerity_worker = Command::new(&celerity)
        .args([
            "worker",
            "--example-plugin",
            "--broker-url",
            &rs_vhost.url(),
            "--database-url",
            &db.url(),
            "--queues",
            "plugin_schedule",
        ])
        .stderr(Stdio::from(std::fs::File::create(dir.join("celerity.log")).unwrap()))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    send_countdown(&py_vhost.url(), countdown);
    send_countdown(&rs_vhost.url(), countdown);
    std::thread::sleep(Duration::from_secs(watch));

    let python_log = std::fs::read_to_string(dir.join("python.log")).unwrap_or_default();
    let celerity_log = std::fs::read_to_string(dir.join("celerity.log")).unwrap_or_default();
    let python_lost = python_log.contains("PRECONDITION_FAILED") || python_log.contains("ack timed out");
    let celerity_alive = celerity_worker.try_wait().unwrap().is_none();
    let celerity_errors = celerity_log.lines().filter(|l| l.contains("ERROR") || l.contains("PRECONDITION")).count();
    let consumers = Command::new("rabbitmqctl")
        .args(["list_consumers", "-q", "-p"])
        .arg(rs_vhost.url().rsplit('/').next().unwrap())
        .output()
        .unwrap();
    println!(
        "Python Celery (holds the countdown in memory): channel closed by consumer_timeout: {python_lost}{}",
        python_log
            .lines()
            .find(|l| l.contains("PRECONDITION_FAILED"))
            .map(|l| format!("\n  {}", l.trim()))
            .unwrap_or_default()
    );
    println!(
        "Celerity (countdown in the delay queues): still running: {celerity_alive}; error lines: {celerity_errors}; consumers on its vhost:\n  {}",
        String::from_utf8_lossy(&consumers.stdout).trim().replace('\n', "\n  ")
    );
    let _ = python_worker.kill();
    let _ = python_worker.wait();
    let _ = celerity_worker.kill();
    let _ = celerity_worker.wait();
    let _ = std::fs::remove_dir_all(dir);
}
