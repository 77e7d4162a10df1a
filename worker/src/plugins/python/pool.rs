//! The worker's plugin hosts: at most `workers` processes, each taking one
//! step at a time. A host that dies, hangs past the timeout or garbles the
//! protocol is killed and replaced; one past its task or memory limit is
//! retired between steps and replaced. Replacements start when a step next
//! needs a host.

use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::host::{Host, Lost};
use super::protocol::{PythonVersion, Ready};
use crate::config::PythonSettings;
use crate::control::meters;
use crate::plugins::step::{StepError, StepInput, StepResult};

/// The hosts of one worker.
pub struct Pool {
    settings: PythonSettings,
    ready: Ready,
    idle: Mutex<Vec<Host>>,
    slots: Semaphore,
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
            metrics::gauge!(meters::PYTHON_HOSTS).increment(1.0);
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
        Ok(Pool { settings, ready, idle: Mutex::new(hosts), slots: Semaphore::new(workers) })
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

    /// Runs one step on a host.
    pub async fn step(&self, input: &StepInput) -> Result<StepResult, StepError> {
        let _slot = self.slots.acquire().await.map_err(|_| StepError::NoHost("the pool is closed".into()))?;
        let taken = self.lock().pop();
        let mut host = match taken {
            Some(host) => host,
            None => {
                let (host, _) = Host::start(&self.settings).await.map_err(StepError::NoHost)?;
                metrics::gauge!(meters::PYTHON_HOSTS).increment(1.0);
                host
            }
        };
        let ran = match self.settings.timeout {
            Some(limit) => tokio::time::timeout(limit, host.step(input)).await.map_err(|_| limit),
            None => Ok(host.step(input).await),
        };
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
                Err(StepError::HostDied(why))
            }
            Err(limit) => {
                host.kill().await;
                self.gone("timeout");
                tracing::error!(?limit, "a plugin step ran past its time; its host was killed");
                Err(StepError::TimedOut(limit))
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
        metrics::gauge!(meters::PYTHON_HOSTS).decrement(1.0);
        metrics::counter!(meters::HOST_RESTARTS, "cause" => cause).increment(1);
    }

    /// Retires every idle host (the worker is stopping).
    pub async fn close(&self) {
        self.slots.close();
        let idle: Vec<Host> = std::mem::take(&mut *self.lock());
        for host in idle {
            metrics::gauge!(meters::PYTHON_HOSTS).decrement(1.0);
            host.retire().await;
        }
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
