//! The worker's plugin hosts: at most `workers` processes, each taking one
//! step at a time. A host that dies, hangs past the timeout or garbles the
//! protocol is killed and replaced; one past its task or memory limit is
//! retired between steps and replaced. Replacements start when a step next
//! needs a host.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use super::host::{Host, Lost};
use super::protocol::{PythonVersion, Ready};
use crate::config::PythonSettings;
use crate::meters;
use crate::plugins::step::{StepError, StepInput, StepResult};

/// The hosts of one worker.
pub struct Pool {
    settings: PythonSettings,
    ready: Ready,
    idle: Mutex<Vec<Host>>,
    slots: Semaphore,
    /// Hosts running, idle or in a step: `celerity_python_hosts`.
    running: AtomicUsize,
}

impl Pool {
    /// Starts every host; the first that cannot start (the project does not
    /// import, the interpreter is missing) stops start-up with its story.
    pub async fn start(settings: PythonSettings) -> Result<Pool, String> {
        let workers = settings.workers.max(1);
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let settings = settings.clone();
            starting.spawn(async move { Host::start(&settings).await });
        }
        let mut hosts = Vec::with_capacity(workers);
        let mut ready = None;
        while let Some(started) = starting.join_next().await {
            let (host, host_ready) = started.map_err(|e| format!("a plugin host start panicked: {e}"))??;
            hosts.push(host);
            ready.get_or_insert(host_ready);
        }
        let ready = ready.ok_or("no plugin host started")?;
        tracing::info!(
            hosts = hosts.len(),
            python = %ready.python,
            framework = %ready.framework,
            pydantic = %ready.pydantic,
            versions = ?ready.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(),
            "plugin hosts ready"
        );
        let running = AtomicUsize::new(hosts.len());
        let pool = Pool { settings, ready, idle: Mutex::new(hosts), slots: Semaphore::new(workers), running };
        pool.report_hosts();
        Ok(pool)
    }

    /// What the hosts run.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// The project's plugin version, if it has it.
    pub fn version(&self, version: &str) -> Option<&PythonVersion> {
        self.ready.versions.iter().find(|v| v.version == version)
    }

    /// The settings the hosts run with.
    pub fn settings(&self) -> &PythonSettings {
        &self.settings
    }

    /// Process ids of the idle hosts (the busy ones are in steps).
    pub fn idle_pids(&self) -> Vec<u32> {
        self.lock().iter().filter_map(Host::pid).collect()
    }

    /// Runs one step on a host, within the step limit.
    pub async fn step(&self, input: &StepInput) -> Result<StepResult, StepError> {
        let _slot = self.slots.acquire().await.map_err(|_| StepError::NoHost("the pool is closed".into()))?;
        // A host whose stream broke between steps is replaced before the
        // step runs: no schedule is charged for another's output.
        let mut host = loop {
            let mut host = self.take().await?;
            match host.broken() {
                None => break host,
                Some(why) => {
                    tracing::error!(why = %why, "a plugin host's stream broke between steps; a new one takes the step");
                    host.kill().await;
                    self.gone("protocol");
                }
            }
        };
        let limit = self.settings.timeout;
        let ran = tokio::time::timeout(limit, host.step(input)).await.map_err(|_| limit);
        match ran {
            Ok(Ok(result)) => {
                self.put_back(host).await;
                Ok(result)
            }
            Ok(Err(Lost::Died(status))) => {
                self.gone("died");
                tracing::error!(status = %status, "a plugin host died during a step; a new one will take its place");
                Err(StepError::HostDied(status))
            }
            Ok(Err(Lost::Garbled(why))) => {
                host.kill().await;
                self.gone("protocol");
                tracing::error!(why = %why, "a plugin host's reply cannot be read; the schedule fails and the host is replaced");
                Err(StepError::Unreadable(why))
            }
            Err(limit) => {
                host.kill().await;
                self.gone("timeout");
                tracing::error!(?limit, "a plugin step ran past its time; its host was killed");
                Err(StepError::TimedOut(limit))
            }
        }
    }

    /// An idle host, or a new one.
    async fn take(&self) -> Result<Host, StepError> {
        let taken = self.lock().pop();
        match taken {
            Some(host) => Ok(host),
            None => {
                let (host, _) = Host::start(&self.settings).await.map_err(StepError::NoHost)?;
                self.running.fetch_add(1, Ordering::Relaxed);
                self.report_hosts();
                Ok(host)
            }
        }
    }

    /// Returns a host to the idle ones, or retires it past its limits.
    async fn put_back(&self, host: Host) {
        let past_tasks = self.settings.max_tasks.is_some_and(|max| host.steps >= max);
        let past_memory = self
            .settings
            .max_memory_mib
            .is_some_and(|max| host.pid().and_then(rss_kib).is_some_and(|kib| kib / 1024 >= max));
        let cause = match (past_tasks, past_memory) {
            (_, true) => "max_memory",
            (true, false) => "max_tasks",
            (false, false) => {
                self.lock().push(host);
                return;
            }
        };
        tracing::info!(cause, steps = host.steps, "retiring a plugin host");
        self.gone(cause);
        host.retire().await;
    }

    /// Counts a host that left, by why.
    fn gone(&self, cause: &'static str) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        self.report_hosts();
        metrics::counter!(meters::HOST_RESTARTS, "cause" => cause).increment(1);
    }

    /// Sets `celerity_python_hosts` to the hosts running: also once the
    /// metrics recorder is installed, which is after the first hosts start.
    pub fn report_hosts(&self) {
        metrics::gauge!(meters::PYTHON_HOSTS).set(self.running.load(Ordering::Relaxed) as f64);
    }

    /// Retires every idle host (the worker is stopping).
    pub async fn close(&self) {
        self.slots.close();
        let idle: Vec<Host> = std::mem::take(&mut *self.lock());
        for host in idle {
            self.running.fetch_sub(1, Ordering::Relaxed);
            host.retire().await;
        }
        self.report_hosts();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Host>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Resident memory of a process in KiB, from `/proc`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}
