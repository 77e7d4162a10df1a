//! The worker's settings: one typed struct with documented defaults, built
//! and checked once at start-up ([`flags`] reads the command line,
//! [`validate`] turns it into a [`WorkerConfig`]). Nothing reads the
//! environment deeper in the code.

pub mod backoff;
pub mod celery;
pub mod flags;
pub mod sources;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use broker_proto::topology::{COUNTDOWN_QUEUE, NEXT_POLL_QUEUE};
use celerity_db::DbConfig;

pub use self::backoff::Backoff;
use crate::broker::{QueueKinds, QueueType};

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
/// Next polls due within this window go to [`broker_proto::topology::COUNTDOWN_QUEUE`]
/// and wait in a worker's memory, unacked; later ones go through the delay
/// levels. A minute covers the intervals plugins poll at, and stays far
/// below RabbitMQ's `consumer_timeout` (30 minutes by default).
pub const DEFAULT_COUNTDOWN_WINDOW: Duration = Duration::from_secs(60);
/// The longest countdown window: held deliveries must stay far from
/// RabbitMQ's default `consumer_timeout` (30 minutes).
pub const MAX_COUNTDOWN_WINDOW: Duration = Duration::from_secs(600);
/// Countdowns one worker holds at once (its prefetch on the countdown queue
/// beyond the concurrency): enough for 10,000 running schedules polling
/// within the window; the rest wait in the queue, in due order.
pub const DEFAULT_COUNTDOWN_HOLD: u16 = 10_000;
/// Deliveries of one message before it is declared poison and dead-lettered.
pub const DEFAULT_MAX_DELIVERIES: u32 = crate::broker::topology::DEFAULT_DELIVERY_LIMIT;
/// How long in-flight polls may finish after SIGTERM before they are handed back.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long start-up waits for the broker before giving up.
pub const DEFAULT_BROKER_WAIT: Duration = Duration::from_secs(30);
/// The framework keeps finished schedules 30 days (`SCHEDULE_PERSISTENT_DAYS`).
pub const DEFAULT_DELETE_AFTER_DAYS: u32 = 30;
/// Rows deleted per transaction by `delete_expired_schedule`.
pub const DEFAULT_DELETE_BATCH: i64 = 500;
/// Where `/metrics` and `/healthz` listen: loopback, so nothing is exposed
/// unless the operator says so.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9540";
/// The broker a fresh local install has.
pub const DEFAULT_BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The database a fresh local install has.
pub const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306/celerity";
/// The framework's three queues, consumed when nothing else is said.
pub const DEFAULT_QUEUES: [&str; 3] = ["plugin_schedule", "plugin_callback", "schedule_delete"];

/// How often a worker tries a sweep round (one worker at a time wins it).
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// A schedule in POLL with no sign of life for this long counts as stranded.
/// Longer than any queue backlog a healthy deployment sees, so a message that
/// is only late is rarely doubled (and a doubled one is dropped as stale).
pub const DEFAULT_SWEEP_MARGIN: Duration = Duration::from_secs(300);
/// Schedules re-enqueued per sweep round at most.
pub const DEFAULT_SWEEP_BATCH: i64 = 1000;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What the sweeper counts as stranded, and how many it takes per round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepSettings {
    /// A schedule is stranded when its last sign of life is older than this.
    pub margin: Duration,
    /// Most schedules re-enqueued per round.
    pub batch: i64,
}

impl Default for SweepSettings {
    fn default() -> Self {
        SweepSettings { margin: DEFAULT_SWEEP_MARGIN, batch: DEFAULT_SWEEP_BATCH }
    }
}

/// Host processes when nothing else is said: one per CPU, as Celery's
/// prefork pool starts one child per CPU.
pub fn default_python_workers() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(1)
}

/// Steps that may kill their host before the schedule fails: a plugin that
/// crashes its process every time must not loop forever.
pub const DEFAULT_PLUGIN_MAX_CRASHES: u32 = 3;

/// How long a plugin step may run when `--plugin-timeout` is 0: Celery sets
/// no time limit by default, but a step must never hold its slot and host
/// for good (a reply lost in a broken stream, a plugin stuck on I/O), and
/// RabbitMQ closes the channel of a delivery unacked for 30 minutes (its
/// `consumer_timeout`) anyway. A poll that needs longer is not a poll.
pub const DEFAULT_STEP_LIMIT: Duration = Duration::from_secs(25 * 60);

/// How Python plugin hosts run (`--python` and its flags).
#[derive(Debug, Clone)]
pub struct PythonSettings {
    /// The plugin project's interpreter, e.g. its venv's `bin/python`.
    pub interpreter: PathBuf,
    /// Where the interpreter was named: `--python`, or the Python
    /// environment `celerity` is installed in.
    pub interpreter_from: &'static str,
    /// Host processes.
    pub workers: usize,
    /// A step running longer kills its host and fails the schedule
    /// (`--plugin-timeout`, or [`DEFAULT_STEP_LIMIT`] when that is 0).
    pub timeout: Duration,
    /// Steps after which a host is replaced (Celery's `worker_max_tasks_per_child`).
    pub max_tasks: Option<u64>,
    /// Resident memory in MiB past which a host is replaced after its step
    /// (Celery's `worker_max_memory_per_child`).
    pub max_memory_mib: Option<u64>,
    /// The most verbose level the worker logs: hosts send nothing below it.
    pub log_level: tracing::level_filters::LevelFilter,
}

/// Everything `celerity worker` needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where the broker, database and interpreter settings came from
    /// (passwords masked), and the Celery flags that had no effect: said at
    /// start-up.
    pub settings_from: Vec<String>,
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
    /// Next polls due within this window wait in the countdown queue and
    /// then in a worker's memory; later ones in the delay levels.
    pub countdown_window: Duration,
    /// Extra prefetch on the countdown queue: countdowns held at once.
    pub countdown_hold: u16,
    /// The framework's queues: classic priority queues or quorum queues.
    pub queue_type: QueueType,
    /// Celerity's own queues: classic or quorum.
    pub celerity_queue_type: QueueType,
    /// Deliveries before a message that never completes is dead-lettered.
    pub max_deliveries: u32,
    /// This worker's name (`celerity@host`), written to the attempt log.
    pub hostname: String,
    /// Where `/metrics` and `/healthz` will listen.
    pub http_addr: SocketAddr,
    /// Log line format.
    pub log_format: LogFormat,
    /// The most verbose level logged: `RUST_LOG`'s when set, else `--loglevel`'s, else info.
    pub log_level: tracing::level_filters::LevelFilter,
    /// Countdowns of the retries after transient database errors, and how many.
    pub backoff: Backoff,
    /// Grace period for in-flight polls at shutdown.
    pub shutdown_grace: Duration,
    /// Start-up wait for the broker.
    pub broker_wait: Duration,
    /// `delete_expired_schedule` removes schedules finished longer ago than this.
    pub delete_after_days: u32,
    /// Rows per delete transaction.
    pub delete_batch: i64,
    /// How often the consumed queues are counted for `/metrics`; `None` never.
    pub queue_stats_interval: Option<Duration>,
    /// RabbitMQ's management API, for the unacknowledged counts (default:
    /// the broker's host, port 15672, the broker's user).
    pub broker_management_url: Option<String>,
    /// No `--db-time-zone` was given: the zone is the project's Django
    /// `TIME_ZONE` (when `USE_TZ` is off), as its plugin hosts report it at
    /// start-up, else `db.time_zone`.
    pub time_zone_from_project: bool,
    /// Send the daily `delete_expired_schedule` at 00:00 UTC (one worker a
    /// day does), so no `celery beat` is needed.
    pub daily_delete: bool,
    /// Time between sweep rounds; `None` turns this worker's sweeper off.
    pub sweep_interval: Option<Duration>,
    /// What counts as stranded, and how many per round.
    pub sweep: SweepSettings,
    /// Send Celery events (`celeryev`) from the start.
    pub events: bool,
    /// Python plugin hosts, when `--python` names an interpreter.
    pub python: Option<PythonSettings>,
    /// Register the built-in example plugin `1.0.0`.
    pub example_plugin: bool,
    /// Steps of a schedule that may kill their host before it fails.
    pub plugin_max_crashes: u32,
    /// The bearer token of the HTTP operator controls; they are off without it.
    pub admin_token: Option<AdminToken>,
    /// How often to count the schedules by status for `/metrics` (a scan of
    /// `schedule_schedule`); `None` counts once, at start.
    pub schedules_count_interval: Option<Duration>,
    /// Extra certificate authorities (PEM) trusted for `https://` plugin
    /// callbacks, read once at start-up.
    pub callback_ca_pem: Option<String>,
}

/// Default of `--queue-stats-interval`: as often as Prometheus usually scrapes.
pub const DEFAULT_QUEUE_STATS_INTERVAL: Duration = Duration::from_secs(15);

/// Default of `--schedules-count-interval`.
pub const DEFAULT_SCHEDULES_COUNT_INTERVAL: Duration = Duration::from_secs(30);

/// The bearer token of the HTTP operator controls, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

/// Shortest admin token accepted: a guessable token guards nothing.
pub const MIN_ADMIN_TOKEN: usize = 16;

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl WorkerConfig {
    /// The documented defaults, for the broker and database at these URLs.
    pub fn new(broker_url: impl Into<String>, database_url: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            settings_from: Vec::new(),
            broker_url: broker_url.into(),
            broker_ca_pem: None,
            db: DbConfig { pool_size: DEFAULT_CONCURRENCY as u32 + 4, ..DbConfig::new(database_url) },
            queues: DEFAULT_QUEUES.map(String::from).to_vec(),
            next_poll_queue: broker_proto::topology::NEXT_POLL_QUEUE.into(),
            concurrency: DEFAULT_CONCURRENCY,
            eta_hold: DEFAULT_ETA_HOLD,
            eta_window: DEFAULT_ETA_WINDOW,
            countdown_window: DEFAULT_COUNTDOWN_WINDOW,
            countdown_hold: DEFAULT_COUNTDOWN_HOLD,
            queue_type: QueueType::Classic,
            celerity_queue_type: QueueType::Classic,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            hostname: default_hostname(),
            http_addr: DEFAULT_HTTP_ADDR.parse().expect("the default address parses"),
            log_format: LogFormat::Text,
            log_level: tracing::level_filters::LevelFilter::INFO,
            daily_delete: true,
            time_zone_from_project: false,
            queue_stats_interval: Some(DEFAULT_QUEUE_STATS_INTERVAL),
            broker_management_url: None,
            backoff: Backoff::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            broker_wait: DEFAULT_BROKER_WAIT,
            delete_after_days: DEFAULT_DELETE_AFTER_DAYS,
            delete_batch: DEFAULT_DELETE_BATCH,
            sweep_interval: Some(DEFAULT_SWEEP_INTERVAL),
            sweep: SweepSettings::default(),
            events: true,
            python: None,
            example_plugin: false,
            plugin_max_crashes: DEFAULT_PLUGIN_MAX_CRASHES,
            admin_token: None,
            schedules_count_interval: Some(DEFAULT_SCHEDULES_COUNT_INTERVAL),
            callback_ca_pem: None,
        }
    }

    /// The queues consumed: those asked for, plus the next-poll queue when
    /// this worker polls schedules and it is not among them.
    pub fn consumed_queues(&self) -> Vec<String> {
        let mut queues = self.queues.clone();
        let polls = queues.iter().any(|q| q == broker_proto::topology::SCHEDULE_QUEUE.name);
        if polls && !queues.contains(&self.next_poll_queue) {
            queues.push(self.next_poll_queue.clone());
        }
        if queues.iter().any(|q| q == NEXT_POLL_QUEUE) && !queues.iter().any(|q| q == COUNTDOWN_QUEUE) {
            queues.push(COUNTDOWN_QUEUE.to_owned());
        }
        queues
    }

    /// How each queue is declared.
    pub fn queue_kinds(&self) -> QueueKinds {
        QueueKinds { framework: self.queue_type, own: self.celerity_queue_type, delivery_limit: self.max_deliveries }
    }

    /// The queues declared: those consumed, plus the next-poll queue.
    pub fn declared_queues(&self) -> Vec<String> {
        let mut queues = self.consumed_queues();
        if !queues.contains(&self.next_poll_queue) {
            queues.push(self.next_poll_queue.clone());
        }
        if self.countdowns_queued() && !queues.iter().any(|q| q == COUNTDOWN_QUEUE) {
            queues.push(COUNTDOWN_QUEUE.to_owned());
        }
        queues
    }

    /// Whether next polls due within the countdown window go to the
    /// countdown queue: only when they go to Celerity's own next-poll queue,
    /// which only Celerity workers consume (a Python worker on
    /// `plugin_schedule` never reads the countdown queue).
    pub fn countdowns_queued(&self) -> bool {
        self.next_poll_queue == NEXT_POLL_QUEUE
    }

    /// How long a delivery from `queue` may wait in memory for its eta.
    pub fn hold_window(&self, queue: &str) -> Duration {
        if queue == COUNTDOWN_QUEUE { self.countdown_window.max(self.eta_window) } else { self.eta_window }
    }

    /// The prefetch of `queue`'s consumer: the countdown queue's holds
    /// `--countdown-hold` countdowns beyond the concurrency, the others
    /// [`WorkerConfig::prefetch`]. A large prefetch on a queue of polls due
    /// now would let one worker take a backlog its peers could share.
    pub fn prefetch_for(&self, queue: &str) -> u16 {
        if queue == COUNTDOWN_QUEUE {
            u16::try_from(self.concurrency).unwrap_or(u16::MAX).saturating_add(self.countdown_hold)
        } else {
            self.prefetch()
        }
    }

    /// Deliveries unacked at once: the concurrency for running polls, plus
    /// room for deliveries waiting on their eta.
    pub fn prefetch(&self) -> u16 {
        u16::try_from(self.concurrency).unwrap_or(u16::MAX).saturating_add(self.eta_hold)
    }
}

/// `celerity@<host name>`, as Celery names a worker.
pub fn default_hostname() -> String {
    format!("celerity@{}", gethostname::gethostname().to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_poll_queue_is_consumed_only_by_a_worker_that_polls() {
        let mut config = WorkerConfig::new(DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL);
        assert_eq!(
            config.consumed_queues(),
            ["plugin_schedule", "plugin_callback", "schedule_delete", "celerity.schedule", "celerity.countdown"]
        );
        config.queues = vec!["plugin_callback".into()];
        assert_eq!(config.consumed_queues(), ["plugin_callback"]);
        assert_eq!(
            config.declared_queues(),
            ["plugin_callback", "celerity.schedule", "celerity.countdown"],
            "its next polls may go to the countdown queue"
        );
        config.queues = vec!["plugin_schedule".into()];
        config.next_poll_queue = "plugin_schedule".into();
        assert!(!config.countdowns_queued(), "a Python worker never reads the countdown queue");
        assert_eq!(config.consumed_queues(), ["plugin_schedule"]);
        assert_eq!(config.declared_queues(), ["plugin_schedule"]);
    }

    #[test]
    fn prefetch_is_concurrency_plus_eta_hold_and_saturates() {
        let mut config = WorkerConfig::new(DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL);
        assert_eq!(config.prefetch(), 116);
        assert_eq!(config.prefetch_for("celerity.schedule"), 116, "polls due now: a small prefetch");
        assert_eq!(config.prefetch_for("celerity.countdown"), 10_016, "countdowns: room to hold them");
        assert_eq!(config.hold_window("celerity.countdown"), DEFAULT_COUNTDOWN_WINDOW);
        assert_eq!(config.hold_window("celerity.schedule"), DEFAULT_ETA_WINDOW);
        config.concurrency = 1 << 20;
        assert_eq!(config.prefetch(), u16::MAX);
        assert_eq!(config.prefetch_for("celerity.countdown"), u16::MAX);
    }
}
