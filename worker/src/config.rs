//! The worker's settings: one typed struct, built and checked once at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use celerity_db::DbConfig;

use crate::retry::RetryPolicy;

/// Polls run at once when nothing else is said: polls wait on the database
/// and the broker, so more than the core count keeps both busy.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Deliveries due within the eta window that a worker holds in memory beyond
/// its concurrency (bounded by the channel's prefetch); later ones wait in the
/// broker's delay topology.
pub const DEFAULT_ETA_HOLD: u16 = 100;
/// Messages due within this window wait in memory; later ones go to the
/// broker. A second matches the delay topology's one-second resolution.
pub const DEFAULT_ETA_WINDOW: Duration = Duration::from_secs(1);
/// Deliveries of one message before it is declared poison and dead-lettered.
pub const DEFAULT_MAX_DELIVERIES: u32 = 10;
/// How long in-flight polls may finish after SIGTERM before they are handed back.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long start-up waits for the broker before giving up.
pub const DEFAULT_BROKER_WAIT: Duration = Duration::from_secs(30);
/// The framework keeps finished schedules 30 days (`SCHEDULE_PERSISTENT_DAYS`).
pub const DEFAULT_DELETE_AFTER_DAYS: u32 = 30;
/// Rows deleted per transaction by `delete_expired_schedule`.
pub const DEFAULT_DELETE_BATCH: i64 = 500;

/// How often a worker tries a sweep round (one worker at a time wins it).
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// A schedule in POLL with no sign of life for this long counts as stranded.
/// Longer than any queue backlog a healthy deployment sees, so a message that
/// is only late is rarely doubled (and a doubled one is dropped as stale).
pub const DEFAULT_SWEEP_MARGIN: Duration = Duration::from_secs(300);
/// Schedules re-enqueued per sweep round at most.
pub const DEFAULT_SWEEP_BATCH: i64 = 1000;

/// Which kind of queue to declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Classic queues with `x-max-priority = 255`, as the framework declares them.
    Classic,
    /// Quorum queues (`x-queue-type = quorum`), replicated across a cluster.
    Quorum,
}

impl WorkerConfig {
    /// The queues consumed: those asked for, plus the next-poll queue when
    /// this worker polls schedules and it is not among them.
    pub fn consumed_queues(&self) -> Vec<String> {
        let mut queues = self.queues.clone();
        let polls = queues.iter().any(|q| q == broker_proto::topology::SCHEDULE_QUEUE.name);
        if polls && !queues.contains(&self.next_poll_queue) {
            queues.push(self.next_poll_queue.clone());
        }
        queues
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything `celerity worker` needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `amqp://` or `amqps://user:pass@host:port/vhost`.
    pub broker_url: String,
    /// Extra certificate authorities (PEM) trusted for `amqps://`, read once
    /// at start-up from `--broker-ca-file`.
    pub broker_ca_pem: Option<String>,
    /// The database and its pool.
    pub db: DbConfig,
    /// Queues to consume.
    pub queues: Vec<String>,
    /// Where this worker sends the next polls it causes: Celerity's own
    /// queue (default), or `plugin_schedule` to keep them where Python
    /// workers read them.
    pub next_poll_queue: String,
    /// Polls at once.
    pub concurrency: usize,
    /// Extra prefetch for deliveries due within the eta window.
    pub eta_hold: u16,
    /// Deliveries due within this window are held in memory; later ones are
    /// moved to the broker's delay topology.
    pub eta_window: Duration,
    /// Classic priority queues or quorum queues.
    pub queue_type: QueueType,
    /// Deliveries before a message that never completes is dead-lettered.
    pub max_deliveries: u32,
    /// This worker's name (`celerity@host`), written to the attempt log.
    pub hostname: String,
    /// Where `/metrics` and `/healthz` will listen.
    pub http_addr: SocketAddr,
    /// Log line format.
    pub log_format: LogFormat,
    /// Transient database error retries.
    pub retry: RetryPolicy,
    /// Grace period for in-flight polls at shutdown.
    pub shutdown_grace: Duration,
    /// Start-up wait for the broker.
    pub broker_wait: Duration,
    /// `delete_expired_schedule` removes schedules finished longer ago than this.
    pub delete_after_days: u32,
    /// Rows per delete transaction.
    pub delete_batch: i64,
    /// Time between sweep rounds; `None` turns this worker's sweeper off.
    pub sweep_interval: Option<Duration>,
    /// What counts as stranded, and how many per round.
    pub sweep: crate::sweep::SweepSettings,
    /// Send Celery events (`celeryev`) from the start.
    pub events: bool,
}
