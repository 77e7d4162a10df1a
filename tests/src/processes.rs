//! Child processes killed when a test ends, their JSON log lines, ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

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

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// How the child ended, once it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("child status")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// The ports [`free_port`] hands out: below the kernel's ephemeral range
/// (32768 and up on Linux), so no port the kernel gives a `bind(0)` or an
/// outgoing connection is ever one of them.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port nothing listens on, claimed for this test process until it exits:
/// the process holds a UDP socket bound to the same number, which the
/// kernel frees when the process ends, and every test process skips a port
/// whose UDP twin is taken. So two tests starting servers at once (nextest
/// runs them in separate processes) never pick the same port between
/// choosing it and binding it. The servers themselves listen on TCP.
pub fn free_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<std::net::UdpSocket>> = std::sync::Mutex::new(Vec::new());
    let count = TEST_PORTS.end - TEST_PORTS.start;
    let start = (uuid::Uuid::new_v4().as_u128() % u128::from(count)) as u16;
    for i in 0..count {
        let port = TEST_PORTS.start + (start + i) % count;
        let Ok(claim) = std::net::UdpSocket::bind(("127.0.0.1", port)) else { continue };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(claim);
        return port;
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// `BIN worker --example-plugin --broker-url BROKER --database-url DATABASE`,
/// for more flags to follow.
pub fn example_worker(bin: PathBuf, broker: &str, database: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["worker", "--example-plugin", "--broker-url", broker, "--database-url", database]);
    cmd
}

/// A local address with a port free right now, for a server a test starts.
pub fn free_local_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}
