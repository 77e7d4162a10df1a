//! The real `celery inspect` against a worker.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::python;

/// `celery -b <broker> inspect <command> -d <node> -j`: its exit status and stdout.
pub fn celery_inspect_once(broker: &str, command: &str, node: &str) -> (bool, String) {
    let out = Command::new(python())
        .args(["-m", "celery", "-b", broker, "inspect", command, "-d", node, "-t", "3", "-j"])
        .output()
        .expect("run celery inspect");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The node's reply to `celery inspect COMMAND`, once the worker's mailbox is up.
pub async fn celery_inspect(broker: &str, command: &'static str, node: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (b, n) = (broker.to_owned(), node.to_owned());
        let (ok, stdout) = tokio::task::spawn_blocking(move || celery_inspect_once(&b, command, &n)).await.unwrap();
        if ok {
            let all: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
            return all.get(node).cloned().unwrap_or_else(|| panic!("no reply from {node}: {stdout}"));
        }
        assert!(start.elapsed() < Duration::from_secs(30), "celery inspect {command} got no reply: {stdout}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
