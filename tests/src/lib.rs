//! Harness for the integration tests: the real RabbitMQ (a private vhost per
//! test), the Python venv with real Celery, and child processes that are
//! killed when a test ends, pass or fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker_proto::{FieldTable, topology};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The Python interpreter of the test venv, with real `celery` and `kombu`.
///
/// A missing venv fails the test with instructions; it is never skipped.
pub fn python() -> PathBuf {
    let path = std::env::var_os("CELERITY_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "no Python venv at {} (set CELERITY_TEST_PYTHON, or run scripts/test, which creates .venv with celery)",
        path.display()
    );
    path
}

/// A Python helper script under `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    workspace_root().join("tests/python").join(name)
}

/// `amqp://user:pass@host:port` of the test broker, without a vhost.
pub fn amqp_base() -> String {
    std::env::var("CELERITY_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A RabbitMQ vhost of this test's own, deleted when dropped.
pub struct Vhost {
    name: String,
}

impl Vhost {
    /// Creates a fresh vhost with full permissions for `guest`.
    pub fn create() -> Vhost {
        let name = unique("celerity-test");
        rabbitmqctl(&["add_vhost", &name]);
        let vhost = Vhost { name };
        rabbitmqctl(&["set_permissions", "-p", &vhost.name, "guest", ".*", ".*", ".*"]);
        vhost
    }

    /// The AMQP URL of this vhost.
    pub fn url(&self) -> String {
        format!("{}/{}", amqp_base(), self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.name]).stdout(Stdio::null()).status();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out =
        Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl runs (is rabbitmq-server installed?)");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Connects to `url`.
pub async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Declares a queue as the framework does: durable, `x-max-priority = 255`,
/// bound to the direct exchange `default` with routing key = queue name.
pub async fn declare_framework_queue(channel: &Channel, queue: &str) {
    channel
        .exchange_declare(
            topology::EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    let mut args = FieldTable::default();
    args.insert(topology::MAX_PRIORITY_ARG.into(), broker_proto::AMQPValue::LongInt(topology::MAX_PRIORITY.into()));
    channel
        .queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .expect("declare queue");
    channel
        .queue_bind(
            queue.into(),
            topology::EXCHANGE.into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind queue");
}

/// A child process killed when dropped, with its output in a log file.
pub struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> ChildGuard {
        let file = std::fs::File::create(&log).expect("create log file");
        let child = cmd
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard { child, log }
    }

    /// What the child has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory for one test's files.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("celerity-test"));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Waits until `file` holds at least `n` JSON lines, or panics after `timeout`
/// with `context` (e.g. the other process's log).
pub async fn wait_for_json_lines(
    file: &Path,
    n: usize,
    timeout: Duration,
    context: impl Fn() -> String,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < timeout,
            "only {} of {n} lines in {} after {timeout:?}; log:\n{}",
            lines.len(),
            file.display(),
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
