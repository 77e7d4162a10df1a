//! Prometheus metrics: the names in one place, and the recorder, installed
//! once per process (several in-process workers in a test share it).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Deliveries handled, by task (`schedule`, `callback`, `delete`) and outcome.
pub const TASKS: &str = "celerity_tasks_total";
/// Retries published, by error class.
pub const RETRIES: &str = "celerity_retries_total";
/// Deliveries running now (holding a concurrency slot).
pub const IN_FLIGHT: &str = "celerity_polls_in_flight";
/// Seconds from a delivery's slot to its settlement, by task.
pub const POLL_SECONDS: &str = "celerity_poll_duration_seconds";
/// Seconds from a message's eta to its start.
pub const ETA_LATENESS: &str = "celerity_eta_lateness_seconds";
/// Pooled database connections, by state (`in_use`, `idle`).
pub const DB_POOL: &str = "celerity_db_pool_connections";
/// Broker connections re-established after a loss.
pub const RECONNECTS: &str = "celerity_broker_reconnects_total";
/// Messages moved to the dead-letter queue.
pub const DEAD_LETTERED: &str = "celerity_dead_lettered_total";

/// The process's recorder; the first call installs it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Buckets from a fast poll (a few ms) to a slow plugin (a minute).
        let buckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let recorder = PrometheusBuilder::new().set_buckets(&buckets).expect("buckets are not empty").build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (an embedding program's);
        // this handle then renders only what reaches it.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
