//! Prometheus metrics: the names in one place, and the recorder, installed
//! once per process (several in-process workers in a test share it).
//!
//! The exporter keeps every histogram sample until something drains it into
//! its buckets: a scrape does, and so does [`upkeep`], which every worker runs
//! every [`UPKEEP_INTERVAL`] so that a worker nobody scrapes stays flat.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

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
/// Consumers the broker cancelled (their queue deleted, their node down), by queue.
pub const CANCELLATIONS: &str = "celerity_consumer_cancellations_total";
/// Queues not consumed and parts of the topology not declared because the
/// broker could not serve them (a node down, no quorum), once per outage, by name.
pub const QUEUE_UNAVAILABLE: &str = "celerity_queue_unavailable_total";
/// 1 while the worker consumes a queue, 0 while it cannot or is paused, by queue.
pub const CONSUMING: &str = "celerity_queue_consuming";
/// Broker connections made, by node (`host:port`): which node of a failover list is in use.
pub const BROKER_CONNECTIONS: &str = "celerity_broker_connections_total";
/// Broker connections re-established after a loss.
pub const RECONNECTS: &str = "celerity_broker_reconnects_total";
/// Messages moved to the dead-letter queue.
pub const DEAD_LETTERED: &str = "celerity_dead_lettered_total";
/// Database errors seen by tasks, by class (`transient`, `environment`,
/// `schedule`) and MySQL code (`none` when there is no number).
pub const DB_ERRORS: &str = "celerity_db_errors_total";
/// Messages in a consumed queue, by queue and state (`ready`; `unacked`
/// when RabbitMQ's management API answers), every `--queue-stats-interval`.
pub const QUEUE_MESSAGES: &str = "celerity_queue_messages";
/// Consumers of a consumed queue (every worker's, Python ones too), by queue.
pub const QUEUE_CONSUMERS: &str = "celerity_queue_consumers";
/// 1 while the worker takes no deliveries because of an environment fault.
pub const PAUSED: &str = "celerity_consumption_paused";

/// Spans sent to the OTLP collector.
pub const SPANS_EXPORTED: &str = "celerity_trace_spans_exported_total";
/// Spans lost, by reason (`queue full`: the collector is slower than the
/// polls; `export failed`: it refused or could not be reached).
pub const SPANS_DROPPED: &str = "celerity_trace_spans_dropped_total";
/// The `reason` labels of [`SPANS_DROPPED`].
pub const SPAN_DROP_REASONS: [&str; 2] = [QUEUE_FULL, EXPORT_FAILED];
/// A span found the queue to the collector full.
pub const QUEUE_FULL: &str = "queue full";
/// A span's batch was refused, or the collector did not answer.
pub const EXPORT_FAILED: &str = "export failed";

/// 1, labelled with the build: `version`.
pub const BUILD_INFO: &str = "celerity_build_info";
/// Schedules by status (POLL, CALLBACK, RETRYING, PAUSED, SUCCESS, FAIL,
/// EMPTY), counted every `--schedules-count-interval`.
pub const SCHEDULES: &str = "celerity_schedules";

/// Python plugin hosts running now.
pub const PYTHON_HOSTS: &str = "celerity_python_hosts";
/// Python plugin hosts replaced, by cause (`died`, `timeout`, `protocol`,
/// `max_tasks`, `max_memory`).
pub const HOST_RESTARTS: &str = "celerity_python_host_restarts_total";
/// Seconds of one plugin step, by version and outcome.
pub const STEP_SECONDS: &str = "celerity_plugin_step_seconds";

/// How often a worker drains histogram samples into their buckets without
/// a scrape: the exporter's own default, so at 1,000 polls/s at most about
/// 5,000 samples (40 KiB) wait between drains.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process's exporter, and how many histogram samples went into it.
struct Exporter {
    handle: PrometheusHandle,
    /// CPU, memory, open fds, threads and start time, read at each render.
    process: metrics_process::Collector,
    /// Samples recorded into any histogram since start.
    recorded: Arc<AtomicU64>,
    /// `recorded` as it stood before the last drain began: everything up to
    /// it has left the exporter's sample storage.
    drained: AtomicU64,
}

impl Exporter {
    /// Runs `drain` (a render or an upkeep, which both empty the exporter's
    /// sample storage) and moves the drained mark.
    fn draining<T>(&self, drain: impl FnOnce(&PrometheusHandle) -> T) -> T {
        let before = self.recorded.load(Ordering::Acquire);
        let out = drain(&self.handle);
        self.drained.fetch_max(before, Ordering::AcqRel);
        out
    }
}

fn exporter() -> &'static Exporter {
    static EXPORTER: OnceLock<Exporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        // Buckets from a fast poll (a few ms) to a slow plugin (a minute).
        let buckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let inner = PrometheusBuilder::new().set_buckets(&buckets).expect("buckets are not empty").build_recorder();
        let handle = inner.handle();
        let recorded = Arc::new(AtomicU64::new(0));
        // Another recorder may be installed already (an embedding program's);
        // this handle then renders only what reaches it.
        let _ = metrics::set_global_recorder(CountingRecorder { inner, recorded: recorded.clone() });
        let process = metrics_process::Collector::default();
        process.describe();
        process.collect();
        Exporter { handle, process, recorded, drained: AtomicU64::new(0) }
    })
}

/// Installs the recorder; call before recording anything (what comes earlier is lost).
pub fn install() {
    exporter();
}

/// The metrics in Prometheus text format, the process's read now. Drains
/// the histograms.
pub fn render() -> String {
    let exporter = exporter();
    exporter.process.collect();
    exporter.draining(PrometheusHandle::render)
}

/// Drains histogram samples into their buckets, as a scrape would.
pub fn run_upkeep() {
    exporter().draining(PrometheusHandle::run_upkeep);
}

/// Histogram samples recorded and not drained yet: what a worker holds in
/// memory for metrics beyond their fixed buckets.
pub fn undrained_samples() -> u64 {
    let exporter = exporter();
    let recorded = exporter.recorded.load(Ordering::Acquire);
    recorded.saturating_sub(exporter.drained.load(Ordering::Acquire))
}

/// Histogram samples recorded since the process started.
pub fn recorded_samples() -> u64 {
    exporter().recorded.load(Ordering::Acquire)
}

/// Runs [`run_upkeep`] every `every` until dropped.
pub struct Upkeep {
    task: tokio::task::JoinHandle<()>,
}

/// Starts the drain timer on the current runtime.
pub fn upkeep(every: Duration) -> Upkeep {
    install();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // A late tick is not worth catching up on: one drain empties everything.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            run_upkeep();
        }
    });
    Upkeep { task }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The exporter's recorder, counting every histogram sample it takes so
/// that [`undrained_samples`] can tell whether the storage is drained.
struct CountingRecorder {
    inner: PrometheusRecorder,
    recorded: Arc<AtomicU64>,
}

/// A histogram of the exporter that counts its samples.
struct CountedHistogram {
    inner: Histogram,
    recorded: Arc<AtomicU64>,
}

impl HistogramFn for CountedHistogram {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.recorded.fetch_add(1, Ordering::AcqRel);
    }
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let inner = self.inner.register_histogram(key, metadata);
        Histogram::from_arc(Arc::new(CountedHistogram { inner, recorded: self.recorded.clone() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upkeep_drains_what_no_scrape_took() {
        install();
        let before = recorded_samples();
        for i in 0..10_000 {
            metrics::histogram!(POLL_SECONDS, "task" => "unit-test").record(f64::from(i) / 1e4);
        }
        assert!(recorded_samples() >= before + 10_000);
        assert!(undrained_samples() >= 10_000, "samples wait in the exporter until drained");
        run_upkeep();
        assert_eq!(undrained_samples(), 0);
        // The samples reached the buckets.
        let text = render();
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix(r#"celerity_poll_duration_seconds_count{task="unit-test"} "#))
            .and_then(|n| n.parse::<u64>().ok());
        assert_eq!(count, Some(10_000), "{text}");
    }
}
