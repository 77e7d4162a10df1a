//! The command line of `celerity` (SPEC §6), as clap reads it. Every flag
//! also reads an environment variable `CELERITY_<FLAG>` (upper case, `-` →
//! `_`). [`super::validate`] checks the values and builds the config.

use std::net::SocketAddr;
use std::time::Duration;

use celerity_db::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LOCK_WAIT_TIMEOUT,
    DEFAULT_MAX_LIFETIME,
};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand};

use super::{self as config, DEFAULT_HTTP_ADDR, LogFormat};
use super::{backoff, celery};
use crate::broker::QueueType;

/// Celerity: a Rust worker for Celery schedule tasks of the BlueKing plugin framework.
#[derive(Debug, Parser)]
#[command(name = "celerity", version, about, long_about = None)]
pub struct Cli {
    /// Celery's app (`-A blueapps.core.celery`): accepted so a Celery command line runs as written; no effect.
    #[arg(short = 'A', long = "app", global = true, value_name = "APP")]
    pub app: Option<String>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses `argv`; a Celery flag Celerity does not take is refused by
    /// name, with what to use instead ([`celery::refusal`]).
    pub fn parse_from_argv<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_from(argv).map_err(|e| {
            let refused = match (e.kind(), e.get(ContextKind::InvalidArg)) {
                (ErrorKind::UnknownArgument, Some(ContextValue::String(flag))) => celery::refusal(flag),
                _ => None,
            };
            match refused {
                Some(why) => clap::Error::raw(ErrorKind::UnknownArgument, format!("{why}\n")),
                None => e,
            }
        })
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the framework's queues until SIGTERM or SIGINT.
    Worker(Box<WorkerArgs>),
    /// Create Celerity's tables, and schedule_schedule where it does not exist; safe to run again.
    Migrate(MigrateArgs),
    /// Show a schedule (PAUSED, RETRYING, POLL, CALLBACK, SUCCESS, FAIL; actions, attempts), or counts by status.
    Status(StatusArgs),
    /// Re-enqueue schedules stranded in POLL with no sign of life for longer than the margin.
    Sweep(SweepArgs),
    /// Roll back to Python workers: move next polls from celerity.schedule to plugin_schedule.
    HandBack(HandBackArgs),
    /// List every plugin version, where it runs, and the class or type behind it.
    Plugins(PluginsArgs),
    /// Hold schedules: messages that arrive for them are parked until they are resumed.
    Pause(ControlArgs),
    /// Lift a pause and send the parked messages again, due at their own eta.
    Resume(ControlArgs),
    /// End schedules FAIL with "stopped by operator: REASON" (--reason is required).
    Stop(ControlArgs),
}

/// `celerity pause | resume | stop`: which schedules, and why.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The schedules, by trace id.
    #[arg(conflicts_with_all = ["version", "state", "older_than"])]
    pub trace_ids: Vec<String>,
    /// Instead of trace ids: the open schedules of this plugin version.
    #[arg(long)]
    pub version: Option<String>,
    /// Instead of trace ids: the open schedules in this status (POLL, CALLBACK, RETRYING or PAUSED).
    #[arg(long)]
    pub state: Option<String>,
    /// Instead of trace ids: the open schedules created longer ago than this (e.g. 90s, 30m, 2h, 1d).
    #[arg(long)]
    pub older_than: Option<String>,
    /// Why, recorded with the action and shown by `celerity status`; a stop's err says it.
    #[arg(long)]
    pub reason: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseFlags,
    /// IANA zone of the tables' naive datetimes.
    #[arg(long, env = "CELERITY_DB_TIME_ZONE", default_value = "UTC")]
    pub db_time_zone: String,
    /// The broker a resume sends the parked messages to.
    #[command(flatten)]
    pub broker: BrokerFlags,
}

/// `celerity plugins`.
#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// Where the plugins come from.
    #[command(flatten)]
    pub plugins: PluginFlags,
}

/// `celerity hand-back`.
#[derive(Debug, Args)]
pub struct HandBackArgs {
    /// The broker.
    #[command(flatten)]
    pub broker: BrokerFlags,
}

/// How to reach the broker: shared by `worker`, `sweep` and `hand-back`.
#[derive(Debug, Args)]
pub struct BrokerFlags {
    /// The RabbitMQ (amqp:// or amqps://); without it, the plugin runtime's BK_PLUGIN_RUNTIME_BROKER_URL,
    /// else amqp://guest:guest@127.0.0.1:5672/%2f.
    #[arg(long, env = "CELERITY_BROKER_URL")]
    pub broker_url: Option<String>,
    /// PEM file of certificate authorities to trust for amqps:// beyond the system's.
    #[arg(long, env = "CELERITY_BROKER_CA_FILE")]
    pub broker_ca_file: Option<std::path::PathBuf>,
    /// Seconds to wait for the broker (at start-up, for the worker).
    #[arg(long, env = "CELERITY_BROKER_WAIT", default_value_t = Secs(config::DEFAULT_BROKER_WAIT))]
    pub broker_wait: Secs,
}

/// Where the database is: shared by every command that uses it.
#[derive(Debug, Args)]
pub struct DatabaseFlags {
    /// The MySQL/MariaDB (mysql://user:password@host:port/database); without it, the plugin runtime's
    /// BK_PLUGIN_RUNTIME_DB_{NAME,HOST,PORT,USER,PWD}, else mysql://root@127.0.0.1:3306/celerity.
    #[arg(long, env = "CELERITY_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// `celerity sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The broker the re-enqueued polls are published to.
    #[command(flatten)]
    pub broker: BrokerFlags,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseFlags,
    /// IANA zone of the tables' naive datetimes.
    #[arg(long, env = "CELERITY_DB_TIME_ZONE", default_value = "UTC")]
    pub db_time_zone: String,
    /// What counts as stranded and how many at most.
    #[command(flatten)]
    pub sweep: SweepFlags,
    /// List the stranded schedules without re-enqueueing them.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The sweep settings shared by `celerity worker` and `celerity sweep`.
#[derive(Debug, Args)]
pub struct SweepFlags {
    /// Seconds a schedule in POLL may show no sign of life before it counts as stranded.
    #[arg(long, env = "CELERITY_SWEEP_MARGIN", default_value_t = Secs(config::DEFAULT_SWEEP_MARGIN))]
    pub sweep_margin: Secs,
    /// Most schedules re-enqueued per round.
    #[arg(long, env = "CELERITY_SWEEP_BATCH", default_value_t = config::DEFAULT_SWEEP_BATCH)]
    pub sweep_batch: i64,
}

/// `celerity status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The schedule to show.
    #[arg(required_unless_present = "summary", conflicts_with = "summary")]
    pub trace_id: Option<String>,
    /// Count schedules by state instead, RETRYING included.
    #[arg(long)]
    pub summary: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseFlags,
}

/// `celerity migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseFlags,
}

/// `celerity worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The broker to consume from.
    #[command(flatten)]
    pub broker: BrokerFlags,
    /// The MySQL/MariaDB holding schedule_schedule.
    #[command(flatten)]
    pub database: DatabaseFlags,
    /// Queues to consume, comma-separated: any of the framework's three (Celery's -Q).
    #[arg(
        short = 'Q',
        long,
        env = "CELERITY_QUEUES",
        value_delimiter = ',',
        default_value = "plugin_schedule,plugin_callback,schedule_delete"
    )]
    pub queues: Vec<String>,
    /// Polls running at once (Celery's -c).
    #[arg(short = 'c', long, env = "CELERITY_CONCURRENCY", default_value_t = config::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Queue for the next polls this worker sends (consumed with plugin_schedule); plugin_schedule keeps them
    /// where Python workers read them.
    #[arg(long, env = "CELERITY_NEXT_POLL_QUEUE", default_value = broker_proto::topology::NEXT_POLL_QUEUE)]
    pub next_poll_queue: String,
    /// Worker name, shown in the attempt log and to remote control (default celerity@%h); Celery's -n, with its
    /// %h (host name), %n (its first label) and %d (its domain).
    #[arg(short = 'n', long, env = "CELERITY_HOSTNAME")]
    pub hostname: Option<String>,
    /// Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL, any case (Celery's -l); RUST_LOG, when set, wins.
    #[arg(short = 'l', long, env = "CELERITY_LOGLEVEL")]
    pub loglevel: Option<String>,
    /// Celery's pool (`-P threads`): accepted so a Celery command line runs as written; no effect.
    #[arg(short = 'P', long, value_name = "POOL")]
    pub pool: Option<String>,
    /// Celery's `-A`, given before or after `worker` ([`Cli::app`]), to be said at start-up.
    #[arg(skip)]
    pub app: Option<String>,
    /// IANA zone of the tables' naive datetimes; default: the project's Django TIME_ZONE when USE_TZ=False (UTC
    /// when on), as its plugin hosts report it, else UTC.
    #[arg(long, env = "CELERITY_DB_TIME_ZONE")]
    pub db_time_zone: Option<String>,
    /// Where /metrics and /healthz listen.
    #[arg(long, env = "CELERITY_HTTP_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    /// Log line format.
    #[arg(long, env = "CELERITY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Database connections (default: concurrency + 4).
    #[arg(long, env = "CELERITY_DB_POOL_SIZE")]
    pub db_pool_size: Option<u32>,
    /// Seconds to wait for a pooled database connection.
    #[arg(long, env = "CELERITY_DB_CHECKOUT_TIMEOUT", default_value_t = Secs(DEFAULT_CHECKOUT_TIMEOUT))]
    pub db_checkout_timeout: Secs,
    /// Seconds one database call may take before it counts as a hung server.
    #[arg(long, env = "CELERITY_DB_CALL_TIMEOUT", default_value_t = Secs(DEFAULT_CALL_TIMEOUT))]
    pub db_call_timeout: Secs,
    /// Seconds a database connection lives at most before the pool replaces it.
    #[arg(long, env = "CELERITY_DB_MAX_LIFETIME", default_value_t = Secs(DEFAULT_MAX_LIFETIME))]
    pub db_max_lifetime: Secs,
    /// Seconds an idle database connection stays in the pool.
    #[arg(long, env = "CELERITY_DB_IDLE_TIMEOUT", default_value_t = Secs(DEFAULT_IDLE_TIMEOUT))]
    pub db_idle_timeout: Secs,
    /// innodb_lock_wait_timeout of the worker's sessions, in seconds.
    #[arg(long, env = "CELERITY_DB_LOCK_WAIT_TIMEOUT", default_value_t = Secs(DEFAULT_LOCK_WAIT_TIMEOUT))]
    pub db_lock_wait_timeout: Secs,
    /// Countdown of the first retry after a transient database error, in seconds.
    #[arg(long, env = "CELERITY_RETRY_BASE", default_value_t = Secs(backoff::DEFAULT_BASE))]
    pub retry_base: Secs,
    /// Longest retry countdown, in seconds.
    #[arg(long, env = "CELERITY_RETRY_MAX", default_value_t = Secs(backoff::DEFAULT_MAX))]
    pub retry_max: Secs,
    /// Retries before a schedule is failed.
    #[arg(long, env = "CELERITY_MAX_RETRIES", default_value_t = backoff::DEFAULT_MAX_RETRIES)]
    pub max_retries: u32,
    /// Deliveries due within the eta window held in memory beyond the concurrency.
    #[arg(long, env = "CELERITY_ETA_HOLD", default_value_t = config::DEFAULT_ETA_HOLD)]
    pub eta_hold: u16,
    /// Seconds: messages due sooner wait in memory, later ones in the broker's delay queues.
    #[arg(long, env = "CELERITY_ETA_WINDOW", default_value_t = Secs(config::DEFAULT_ETA_WINDOW))]
    pub eta_window: Secs,
    /// Seconds: next polls due sooner wait in the countdown queue, then in a worker's memory (at most 600).
    #[arg(long, env = "CELERITY_COUNTDOWN_WINDOW", default_value_t = Secs(config::DEFAULT_COUNTDOWN_WINDOW))]
    pub countdown_window: Secs,
    /// Countdowns held in memory at once, beyond the concurrency (the countdown queue's prefetch).
    #[arg(long, env = "CELERITY_COUNTDOWN_HOLD", default_value_t = config::DEFAULT_COUNTDOWN_HOLD)]
    pub countdown_hold: u16,
    /// Type of the framework's queues: classic (x-max-priority = 255, as its producers declare them) or quorum.
    #[arg(long, env = "CELERITY_QUEUE_TYPE", value_enum, default_value = "classic")]
    pub queue_type: QueueType,
    /// Type of Celerity's own queues (next polls, delay levels, dead letters); default: --queue-type.
    /// quorum is the recommended setting on a cluster.
    #[arg(long, env = "CELERITY_CELERITY_QUEUE_TYPE", value_enum)]
    pub celerity_queue_type: Option<QueueType>,
    /// Deliveries of a message that never completes before it is dead-lettered.
    #[arg(long, env = "CELERITY_MAX_DELIVERIES", default_value_t = config::DEFAULT_MAX_DELIVERIES)]
    pub max_deliveries: u32,
    /// Seconds in-flight polls may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "CELERITY_SHUTDOWN_GRACE", default_value_t = Secs(config::DEFAULT_SHUTDOWN_GRACE))]
    pub shutdown_grace: Secs,
    /// delete_expired_schedule removes schedules finished more than this many days ago.
    #[arg(long, env = "CELERITY_DELETE_AFTER_DAYS", default_value_t = config::DEFAULT_DELETE_AFTER_DAYS)]
    pub delete_after_days: u32,
    /// Do not send the daily delete_expired_schedule at 00:00 UTC (keep `celery beat` for it instead).
    #[arg(long, env = "CELERITY_WITHOUT_DAILY_DELETE")]
    pub without_daily_delete: bool,
    /// Rows per delete transaction.
    #[arg(long, env = "CELERITY_DELETE_BATCH", default_value_t = config::DEFAULT_DELETE_BATCH)]
    pub delete_batch: i64,
    /// Seconds between sweep rounds (0 turns this worker's sweeper off).
    #[arg(long, env = "CELERITY_SWEEP_INTERVAL", default_value_t = Secs(config::DEFAULT_SWEEP_INTERVAL))]
    pub sweep_interval: Secs,
    /// What counts as stranded and how many per round.
    #[command(flatten)]
    pub sweep: SweepFlags,
    /// Do not send Celery events (Flower, `celery events`) until an
    /// `enable_events` control command asks for them.
    #[arg(long, env = "CELERITY_WITHOUT_EVENTS")]
    pub without_events: bool,
    /// How plugins run.
    #[command(flatten)]
    pub plugins: PluginFlags,
    /// Seconds between counts of the schedules by status for /metrics (each scans schedule_schedule;
    /// 0 counts once, at start).
    #[arg(long, env = "CELERITY_SCHEDULES_COUNT_INTERVAL", default_value_t = Secs(config::DEFAULT_SCHEDULES_COUNT_INTERVAL))]
    pub schedules_count_interval: Secs,
    /// Seconds between counts of the consumed queues' ready and unacknowledged messages and consumers for
    /// /metrics (0: never).
    #[arg(long, env = "CELERITY_QUEUE_STATS_INTERVAL", default_value_t = Secs(config::DEFAULT_QUEUE_STATS_INTERVAL))]
    pub queue_stats_interval: Secs,
    /// RabbitMQ's management API (http://user:password@host:15672), for the unacknowledged counts on /metrics;
    /// default: the broker's host on port 15672 with the broker's user.
    #[arg(long, env = "CELERITY_BROKER_MANAGEMENT_URL", hide_env_values = true)]
    pub broker_management_url: Option<String>,
    /// Bearer token of the HTTP operator controls (/schedules/...); they are off without it. On the command
    /// line it shows in `ps`: prefer the environment or --admin-token-file.
    #[arg(long, env = "CELERITY_ADMIN_TOKEN", hide_env_values = true, conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,
    /// A file holding the admin token (its first line), e.g. a mounted secret.
    #[arg(long, env = "CELERITY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// PEM file of certificate authorities to trust for https:// plugin callbacks beyond the system's;
    /// without it, REQUESTS_CA_BUNDLE (what the plugins' Python callbacks trusted), if set.
    #[arg(long, env = "CELERITY_CALLBACK_CA_FILE")]
    pub callback_ca_file: Option<std::path::PathBuf>,
}

/// Where the plugins come from and how Python ones run: shared by `worker` and `plugins`.
#[derive(Debug, Args)]
pub struct PluginFlags {
    /// The plugin project's interpreter (e.g. its venv's bin/python): its Python plugins run in host processes
    /// of it, with the worker's environment.
    #[arg(long, env = "CELERITY_PYTHON")]
    pub python: Option<std::path::PathBuf>,
    /// Plugin host processes (default: one per CPU).
    #[arg(long, env = "CELERITY_PYTHON_WORKERS")]
    pub python_workers: Option<usize>,
    /// Seconds one plugin step may run before its host is killed and the schedule fails (0: the default limit,
    /// 1500 s).
    #[arg(long, env = "CELERITY_PLUGIN_TIMEOUT", default_value_t = Secs(Duration::ZERO))]
    pub plugin_timeout: Secs,
    /// Steps after which a plugin host is replaced (0: never).
    #[arg(long, env = "CELERITY_PYTHON_MAX_TASKS", default_value_t = 0)]
    pub python_max_tasks: u64,
    /// Resident MiB past which a plugin host is replaced after its step (0: no limit).
    #[arg(long, env = "CELERITY_PYTHON_MAX_MEMORY", default_value_t = 0)]
    pub python_max_memory: u64,
    /// Steps of one schedule that may kill their plugin host before the schedule fails.
    #[arg(long, env = "CELERITY_PLUGIN_MAX_CRASHES", default_value_t = config::DEFAULT_PLUGIN_MAX_CRASHES)]
    pub plugin_max_crashes: u32,
    /// Run Celerity's example plugin as version 1.0.0 (the demo and the tests use it).
    #[arg(long, env = "CELERITY_EXAMPLE_PLUGIN")]
    pub example_plugin: bool,
}

/// A duration given in seconds on the command line, possibly fractional (`0.2`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Secs(pub Duration);

impl std::fmt::Display for Secs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl std::str::FromStr for Secs {
    type Err = String;

    fn from_str(text: &str) -> Result<Secs, String> {
        let secs: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
        Duration::try_from_secs_f64(secs).map(Secs).map_err(|_| format!("{text:?} is not a usable number of seconds"))
    }
}
