//! A real OTLP receiver for the tracing tests (`tests/python/otlp_receiver.py`,
//! on the published opentelemetry-proto definitions), and the span trees it
//! received.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{ChildGuard, python, python_script, temp_dir};

/// How the receiver answers exports.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// At once, accepting every span.
    Accept,
    /// This many seconds late, accepting.
    Slow(u32),
    /// At once, refusing (gRPC UNAVAILABLE, HTTP 503).
    Refuse,
    /// At once, accepting and only counting (for benchmarks).
    Count,
}

/// A running receiver: its ports and what it has received.
pub struct Receiver {
    /// OTLP/gRPC port.
    pub grpc: u16,
    /// OTLP/HTTP port.
    pub http: u16,
    out: PathBuf,
    _child: ChildGuard,
}

impl Receiver {
    /// Starts a receiver answering as `answer` says.
    pub fn start(answer: Answer) -> Receiver {
        let dir = temp_dir();
        let out = dir.join("spans.jsonl");
        let mut cmd = Command::new(python());
        cmd.arg(python_script("otlp_receiver.py")).arg("--out").arg(&out);
        match answer {
            Answer::Accept => {}
            Answer::Slow(s) => {
                cmd.args(["--slow", &s.to_string()]);
            }
            Answer::Refuse => {
                cmd.arg("--refuse");
            }
            Answer::Count => {
                cmd.arg("--count-only");
            }
        }
        let ports = dir.join("ports.json");
        cmd.arg("--ports").arg(&ports);
        let child = ChildGuard::spawn(cmd, dir.join("receiver.log"));
        let start = Instant::now();
        let line = loop {
            let text = std::fs::read_to_string(&ports).unwrap_or_default();
            if text.ends_with('\n') {
                break text;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the OTLP receiver did not start: {}", child.log());
            std::thread::sleep(Duration::from_millis(100));
        };
        let ports: Value = serde_json::from_str(line.trim()).expect("the receiver's ports");
        let port = |k: &str| ports[k].as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port");
        Receiver { grpc: port("grpc"), http: port("http"), out, _child: child }
    }

    /// How many spans a counting receiver ([`Answer::Count`]) took so far.
    pub fn count(&self) -> u64 {
        std::fs::read_to_string(&self.out).ok().and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        let Ok(file) = std::fs::File::open(&self.out) else { return Vec::new() };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .map(|l| Span(serde_json::from_str(&l).expect("a JSON line from the receiver")))
            .collect()
    }

    /// Waits until `done` holds of the spans received; returns them.
    pub async fn wait_for(&self, within: Duration, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                start.elapsed() < within,
                "{what}: not received within {within:?}; {} spans: {:#?}",
                spans.len(),
                spans.iter().map(|s| s.name()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// One span as the receiver wrote it.
#[derive(Debug, Clone)]
pub struct Span(pub Value);

impl Span {
    /// Its name.
    pub fn name(&self) -> &str {
        self.0["name"].as_str().unwrap_or_default()
    }

    /// `service.name` of the process that sent it.
    pub fn service(&self) -> &str {
        self.0["resource"]["service.name"].as_str().unwrap_or_default()
    }

    /// The attribute `key`.
    pub fn attr(&self, key: &str) -> &Value {
        &self.0["attributes"][key]
    }

    /// Its span id, its parent's (empty for a root) and its trace id.
    pub fn ids(&self) -> (&str, &str, &str) {
        let s = |k: &str| self.0[k].as_str().unwrap_or_default();
        (s("span_id"), s("parent_span_id"), s("trace_id"))
    }

    /// OTLP's span kind: 2 server, 4 producer, 5 consumer, 1 internal.
    pub fn kind(&self) -> i64 {
        self.0["kind"].as_i64().unwrap_or_default()
    }

    /// OTLP's status code: 0 unset, 1 ok, 2 error.
    pub fn status(&self) -> i64 {
        self.0["status"]["code"].as_i64().unwrap_or_default()
    }
}

/// `spans` by span id.
pub fn by_id(spans: &[Span]) -> BTreeMap<&str, &Span> {
    spans.iter().map(|s| (s.ids().0, s)).collect()
}

/// The chain of span names from the root of the trace down to `leaf`, root
/// first, following parent ids through `spans` (any service).
pub fn chain<'s>(spans: &'s [Span], leaf: &'s Span) -> Vec<&'s Span> {
    let all = by_id(spans);
    let mut out = vec![leaf];
    let mut at = leaf;
    while let Some(parent) = all.get(at.ids().1) {
        out.push(parent);
        at = parent;
        assert!(out.len() < 1000, "a parent cycle");
    }
    out.reverse();
    out
}

/// The children of `parent` in `spans`.
pub fn children<'s>(spans: &'s [Span], parent: &Span) -> Vec<&'s Span> {
    spans.iter().filter(|s| s.ids().1 == parent.ids().0 && s.ids().2 == parent.ids().2).collect()
}
