//! One plugin host: a Python process of the plugin project's interpreter
//! running `host.py`, one step at a time. Its log records reach the
//! worker's log at their level with the step's trace_id; what a plugin
//! prints reaches it as text lines.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use super::lines::{CappedLines, Line};
use super::protocol::{HostLine, LogRecord, PROTOCOL_VERSION, Ready, Reply, Request};
use crate::config::PythonSettings;
use crate::plugins::step::{StepInput, StepResult};

/// The host's Python code, shipped inside the binary.
pub const HOST_SOURCE: &str = include_str!("host.py");

/// Runs the host's code under its own name, so tracebacks say where they are.
const BOOTSTRAP: &str = "import sys; exec(compile(sys.argv.pop(1), 'celerity-plugin-host.py', 'exec'))";

/// The prefix of the worker's own settings in the environment
/// (`CELERITY_DATABASE_URL`, `CELERITY_ADMIN_TOKEN`, ...), none of which a
/// host is given.
const WORKER_ENV_PREFIX: &str = "CELERITY_";

/// How long a host may take to import the project and report ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Lines of a failed start's standard error kept for the message.
const START_ERROR_LINES: usize = 60;

/// Longest protocol line read: a reply carries the schedule's data, which
/// a message of at most 16 MiB started from; a longer line is not a reply.
const PROTOCOL_LINE_MAX: usize = 64 * 1024 * 1024;

/// Longest line of a plugin's output logged; the rest of a longer one is
/// dropped and its length logged.
const OUTPUT_LINE_MAX: usize = 64 * 1024;

/// What the protocol reader hands a step: a reply, or why the stream can
/// no longer be read.
type Replied = Result<Reply, String>;

/// A running host.
pub struct Host {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<Replied>,
    next_id: u64,
    /// Steps taken.
    pub steps: u64,
}

/// Why a step did not come back.
#[derive(Debug)]
pub enum Lost {
    /// The process ended; how.
    Died(String),
    /// It answered something that is not a reply to this step.
    Garbled(String),
}

impl Host {
    /// Starts a host and waits until it reports its plugins. A project
    /// that cannot be imported is an error with the host's traceback.
    pub async fn start(settings: &PythonSettings) -> Result<(Host, Ready), String> {
        let mut command = Command::new(&settings.interpreter);
        // The project's environment, without the worker's own settings: its
        // URLs carry passwords and its admin token opens the operator routes,
        // and a plugin (or anything it starts) would inherit them.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with(WORKER_ENV_PREFIX) {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args(["-c", BOOTSTRAP, HOST_SOURCE])
            .env("CELERITY_HOST_LOG_LEVEL", python_level(settings.log_level).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", settings.interpreter.display()))?;
        let (stdin, stdout, stderr) = match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (i, o, e),
            _ => return Err("the plugin host's pipes were not set up".into()),
        };
        let pid = child.id().unwrap_or_default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (reply_tx, replies) = mpsc::channel(1);
        tokio::spawn(read_protocol(stdout, ready_tx, reply_tx, pid));
        let start_errors = Arc::new(Mutex::new(Some(Vec::new())));
        tokio::spawn(read_output(stderr, start_errors.clone(), pid));
        let ready = tokio::time::timeout(START_TIMEOUT, ready_rx).await;
        let ready = match ready {
            Ok(Ok(ready)) => ready,
            Ok(Err(_)) => {
                let status = child.wait().await.map(describe_exit).unwrap_or_else(|e| e.to_string());
                // The output reader may still be draining the last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let text = start_errors.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default().join("\n");
                return Err(format!("the plugin host did not start ({status}):\n{text}"));
            }
            Err(_) => return Err(format!("the plugin host did not report ready within {START_TIMEOUT:?}")),
        };
        if ready.protocol != PROTOCOL_VERSION {
            return Err(format!("the plugin host speaks protocol {}, this worker {PROTOCOL_VERSION}", ready.protocol));
        }
        // From here on what it prints is logged as it comes; what it printed
        // while starting is logged now.
        let started = start_errors.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
        for line in started {
            tracing::info!(target: "plugin", pid, "{line}");
        }
        let host = Host { child, stdin, replies, next_id: 0, steps: 0 };
        Ok((host, ready))
    }

    /// The host's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Why the host cannot take a step, when its protocol stream broke (or
    /// sent something) while no step was running.
    pub fn broken(&mut self) -> Option<String> {
        match self.replies.try_recv() {
            Ok(Ok(reply)) => Some(format!("a reply to request {} came between steps", reply.id)),
            Ok(Err(why)) => Some(why),
            Err(_) => None,
        }
    }

    /// Runs one step and waits for its reply.
    pub async fn step(&mut self, input: &StepInput) -> Result<StepResult, Lost> {
        self.next_id += 1;
        let id = self.next_id;
        let mut line = serde_json::to_vec(&Request::new(id, input)).expect("a request serialises");
        line.push(b'\n');
        let sent = self.stdin.write_all(&line).await;
        let reply = match sent {
            Ok(()) => self.replies.recv().await,
            Err(_) => None,
        };
        let reply = match reply {
            Some(Ok(reply)) => reply,
            Some(Err(why)) => return Err(Lost::Garbled(why)),
            None => return Err(Lost::Died(self.exit().await)),
        };
        if reply.id != id {
            return Err(Lost::Garbled(format!("a reply to request {} came for request {id}", reply.id)));
        }
        self.steps += 1;
        reply.into_result().map_err(Lost::Garbled)
    }

    /// How the process ended, once it has.
    async fn exit(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => describe_exit(status),
            Ok(Err(e)) => format!("its exit status cannot be read: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                "it stopped answering and was killed".into()
            }
        }
    }

    /// Kills the process now (a step past its time).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks the process to exit between steps, and reaps it.
    pub async fn retire(mut self) {
        let _ = self.stdin.write_all(b"{\"op\": \"exit\"}\n").await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Reads the protocol lines: readiness once, then log records and replies.
/// A line that is not the protocol (a plugin's `wait_poll("5")` once made
/// one; a forked child writing into the protocol's pipe interleaves) ends
/// the stream: whatever step waits gets why, and its host is replaced.
async fn read_protocol(
    stdout: tokio::process::ChildStdout,
    ready: oneshot::Sender<Ready>,
    replies: mpsc::Sender<Replied>,
    pid: u32,
) {
    let mut ready = Some(ready);
    let mut lines = CappedLines::new(BufReader::new(stdout), PROTOCOL_LINE_MAX);
    while let Ok(Some(line)) = lines.next_line().await {
        let parsed = match line.cut_from {
            Some(length) => Err(format!("a protocol line of {length} bytes, past the {PROTOCOL_LINE_MAX} allowed")),
            None => serde_json::from_str::<HostLine>(&line.text).map_err(|e| {
                let start: String = line.text.chars().take(200).collect();
                format!("a line that is not the protocol ({e}): {start:?}")
            }),
        };
        match parsed {
            Ok(HostLine::Ready { ready: r }) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(r);
                }
            }
            Ok(HostLine::Log { log }) => emit(&log, pid),
            Ok(HostLine::Reply(reply)) => {
                if replies.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
            Err(why) => {
                tracing::error!(pid, %why, "a plugin host's protocol stream cannot be read");
                let _ = replies.send(Err(why)).await;
                return;
            }
        }
    }
}

/// The line `host.py` writes into its output where a step starts (with the
/// trace_id) and ends (without).
const STEP_MARK: &str = "\u{1e}celerity-step ";

/// Reads what plugins print as log lines, each with the trace_id of the
/// step it came from (and, before ready, the start-up's output).
async fn read_output(stderr: tokio::process::ChildStderr, start_errors: Arc<Mutex<Option<Vec<String>>>>, pid: u32) {
    let mut lines = CappedLines::new(BufReader::new(stderr), OUTPUT_LINE_MAX);
    let mut trace_id = String::new();
    while let Ok(Some(Line { text: mut line, cut_from })) = lines.next_line().await {
        if let Some(length) = cut_from {
            line.push_str(&format!(" [line cut: {length} bytes, {OUTPUT_LINE_MAX} logged]"));
        }
        if let Some(step) = line.strip_prefix(STEP_MARK) {
            step.clone_into(&mut trace_id);
            continue;
        }
        // Until the host is ready its output is the start-up's story, told
        // once in the start-up error if it fails.
        if let Some(kept) = start_errors.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            if kept.len() < START_ERROR_LINES {
                kept.push(line);
            }
            continue;
        }
        tracing::info!(target: "plugin", pid, %trace_id, "{line}");
    }
}

/// A Python log record in the worker's log, at its level.
fn emit(log: &LogRecord, pid: u32) {
    let trace_id = log.trace_id.as_deref().unwrap_or_default();
    let (logger, message) = (log.logger.as_str(), log.message.as_str());
    match log.level {
        40.. => tracing::error!(target: "plugin", pid, %trace_id, logger, "{message}"),
        30..=39 => tracing::warn!(target: "plugin", pid, %trace_id, logger, "{message}"),
        20..=29 => tracing::info!(target: "plugin", pid, %trace_id, logger, "{message}"),
        _ => tracing::debug!(target: "plugin", pid, %trace_id, logger, "{message}"),
    }
}

/// The Python level matching the worker's most verbose enabled level, so a
/// host sends no record the worker would drop.
fn python_level(level: tracing::level_filters::LevelFilter) -> u32 {
    use tracing::level_filters::LevelFilter;
    match level {
        LevelFilter::TRACE | LevelFilter::DEBUG => 10,
        LevelFilter::INFO => 20,
        LevelFilter::WARN => 30,
        LevelFilter::ERROR => 40,
        _ => 50,
    }
}

/// `exit code 3`, or `killed by signal 9 (SIGKILL)`.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(signal) => format!("killed by signal {signal} ({})", signal_name(signal)),
        None => status.to_string(),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn exits_are_named_by_code_or_signal() {
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exit code 3");
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "killed by signal 9 (SIGKILL)");
        assert_eq!(describe_exit(ExitStatus::from_raw(11)), "killed by signal 11 (SIGSEGV)");
    }

    #[test]
    fn the_host_sends_no_record_the_worker_drops() {
        use tracing::level_filters::LevelFilter;
        assert_eq!(python_level(LevelFilter::INFO), 20);
        assert_eq!(python_level(LevelFilter::DEBUG), 10);
        assert_eq!(python_level(LevelFilter::OFF), 50);
    }
}
