//! A worker in the test's own process, with settings that make failure
//! paths finish quickly.

use std::time::Duration;

use crate::unique;

/// A worker configuration for tests: small pool, short timeouts, retries in
/// tenths of a second, so failure paths finish quickly.
pub fn worker_config(broker_url: &str, database_url: &str) -> celerity::config::WorkerConfig {
    use celerity::config::{Backoff, WorkerConfig};
    let defaults = WorkerConfig::new(broker_url, database_url);
    WorkerConfig {
        db: celerity_db::DbConfig {
            pool_size: 8,
            checkout_timeout: Duration::from_millis(500),
            call_timeout: Duration::from_secs(5),
            lock_wait_timeout: Duration::from_secs(2),
            ..defaults.db.clone()
        },
        concurrency: 4,
        // Below the 1 s retry countdowns of the tests, so those go through the delay queues.
        eta_window: Duration::from_millis(500),
        max_deliveries: 5,
        hostname: unique("celerity-test"),
        http_addr: "127.0.0.1:0".parse().expect("socket address"),
        backoff: Backoff { base: Duration::from_millis(200), max: Duration::from_millis(800), max_retries: 3 },
        shutdown_grace: Duration::from_secs(5),
        broker_wait: Duration::from_secs(10),
        delete_batch: 100,
        sweep_interval: None,
        ..defaults
    }
}

/// A worker running in this process until dropped.
pub struct InProcessWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), celerity::worker::WorkerError>>>,
}

impl InProcessWorker {
    /// Starts `celerity::worker::run_with` on the current runtime.
    pub fn start(config: celerity::config::WorkerConfig, registry: celerity::plugins::Registry) -> InProcessWorker {
        if std::env::var_os("CELERITY_TEST_LOG").is_some() {
            celerity::control::logging::init(config.log_format, config.log_level);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(celerity::worker::run_with(config, registry, async move {
            let _ = stopped.await;
        }));
        InProcessWorker { stop: Some(stop), handle: Some(handle) }
    }

    /// Signals shutdown and waits for the worker to return; a worker that
    /// does not stop within a minute fails the test.
    pub async fn stop(mut self) -> Result<(), celerity::worker::WorkerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the worker did not stop within 60 s of being asked")
            .expect("worker task")
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
