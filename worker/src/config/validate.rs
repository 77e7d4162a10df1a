//! From flags to settings: every check runs here, once, at start-up, and
//! every error is one line that never shows a password.

use celerity_db::{Db, DbConfig, Tz};
use tracing::level_filters::LevelFilter;

use super::celery;
use super::flags::{BrokerFlags, DatabaseFlags, PluginFlags, SweepFlags, WorkerArgs};
use super::sources::{self, Setting};
use super::{
    AdminToken, Backoff, MIN_ADMIN_TOKEN, PythonSettings, SweepSettings, WorkerConfig, default_hostname,
    default_python_workers,
};
use crate::broker::BrokerAddr;

impl WorkerArgs {
    /// Checks the flags and builds the worker's configuration.
    pub fn into_config(self) -> Result<WorkerConfig, String> {
        let broker = self.broker.addr()?;
        let database = self.database.setting()?;
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        let queues: Vec<String> = self.queues.iter().map(|q| q.trim().to_owned()).collect();
        celery::check_queues(&queues)?;
        let hostname = match &self.hostname {
            Some(pattern) => celery::expand_hostname(pattern, &gethostname::gethostname().to_string_lossy())?,
            None => default_hostname(),
        };
        let log_level = match &self.loglevel {
            Some(level) => celery::parse_loglevel(level)?,
            None => LevelFilter::INFO,
        };
        // RUST_LOG, when set, says more than a level: it wins.
        let log_level = rust_log_level().unwrap_or(log_level);
        let python = self.plugins.python_settings(log_level)?;
        let mut settings_from =
            vec![format!("broker {}", self.broker.setting().describe()), format!("database {}", database.describe())];
        if let Some(python) = &python {
            settings_from.push(format!(
                "plugin hosts' interpreter {} from {}",
                python.interpreter.display(),
                python.interpreter_from
            ));
        }
        settings_from.extend(celery::no_effect(self.app.as_deref(), self.pool.as_deref()));
        let time_zone = self.db_time_zone.as_deref().map(parse_zone).transpose()?;
        let sweep = self.sweep.settings()?;
        let pool_size = self.db_pool_size.unwrap_or(self.concurrency as u32 + 4);
        if (pool_size as usize) < self.concurrency {
            return Err(format!("--db-pool-size {pool_size} is below --concurrency {}", self.concurrency));
        }
        if self.countdown_window.0 > super::MAX_COUNTDOWN_WINDOW {
            return Err(format!(
                "--countdown-window {} s is above {} s: a countdown held that long nears RabbitMQ's consumer_timeout",
                self.countdown_window.0.as_secs(),
                super::MAX_COUNTDOWN_WINDOW.as_secs()
            ));
        }
        Ok(WorkerConfig {
            settings_from,
            broker_url: broker.url,
            broker_ca_pem: broker.ca_pem,
            db: DbConfig {
                pool_size,
                checkout_timeout: self.db_checkout_timeout.0,
                call_timeout: self.db_call_timeout.0,
                lock_wait_timeout: self.db_lock_wait_timeout.0,
                max_lifetime: self.db_max_lifetime.0,
                idle_timeout: self.db_idle_timeout.0,
                time_zone: time_zone.unwrap_or(Tz::UTC),
                ..DbConfig::new(database.url.clone())
            },
            queues,
            next_poll_queue: self.next_poll_queue,
            concurrency: self.concurrency,
            eta_hold: self.eta_hold,
            eta_window: self.eta_window.0,
            countdown_window: self.countdown_window.0,
            countdown_hold: self.countdown_hold,
            queue_type: self.queue_type,
            celerity_queue_type: self.celerity_queue_type.unwrap_or(self.queue_type),
            max_deliveries: self.max_deliveries.max(1),
            hostname,
            http_addr: self.http_addr,
            log_format: self.log_format,
            log_level,
            backoff: Backoff { base: self.retry_base.0, max: self.retry_max.0, max_retries: self.max_retries },
            shutdown_grace: self.shutdown_grace.0,
            broker_wait: self.broker.broker_wait.0,
            delete_after_days: self.delete_after_days,
            delete_batch: self.delete_batch,
            daily_delete: !self.without_daily_delete,
            time_zone_from_project: time_zone.is_none(),
            queue_stats_interval: (!self.queue_stats_interval.0.is_zero()).then_some(self.queue_stats_interval.0),
            broker_management_url: self.broker_management_url,
            sweep_interval: (!self.sweep_interval.0.is_zero()).then_some(self.sweep_interval.0),
            events: !self.without_events,
            sweep,
            python,
            example_plugin: self.plugins.example_plugin,
            plugin_max_crashes: self.plugins.plugin_max_crashes.max(1),
            admin_token: admin_token(match &self.admin_token_file {
                Some(path) => Some(read_token_file(path)?),
                None => self.admin_token,
            })?,
            schedules_count_interval: (!self.schedules_count_interval.0.is_zero())
                .then_some(self.schedules_count_interval.0),
            callback_ca_pem: match self.callback_ca_file {
                Some(path) => read_ca_file("--callback-ca-file", Some(&path))?,
                None => {
                    let bundle = sources::process_env(sources::REQUESTS_CA_BUNDLE).map(std::path::PathBuf::from);
                    read_ca_file(sources::REQUESTS_CA_BUNDLE, bundle.as_deref())?
                }
            },
        })
    }
}

/// The first line of the admin token's file, read once at start-up.
fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--admin-token-file {}: cannot be read: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// The admin token, if one is set: long enough, and without spaces (a
/// bearer token is one word).
fn admin_token(token: Option<String>) -> Result<Option<AdminToken>, String> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if token.len() < MIN_ADMIN_TOKEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "--admin-token must be at least {MIN_ADMIN_TOKEN} characters with no spaces (e.g. `openssl rand -hex 24`)"
        ));
    }
    Ok(Some(AdminToken(token)))
}

impl PluginFlags {
    /// The Python hosts' settings, when `--python` names an interpreter or
    /// `celerity` is installed in a Python environment
    /// ([`sources::python_beside`]); hosts send no record below `log_level`.
    pub fn python_settings(&self, log_level: LevelFilter) -> Result<Option<PythonSettings>, String> {
        let beside = || std::env::current_exe().ok().and_then(|exe| sources::python_beside(&exe));
        let (interpreter, interpreter_from) = match &self.python {
            Some(python) => (python.clone(), "--python / CELERITY_PYTHON"),
            None => match beside() {
                Some(found) => found,
                None => return Ok(None),
            },
        };
        if self.python_workers == Some(0) {
            return Err("--python-workers must be at least 1".into());
        }
        let positive = |n: u64| (n > 0).then_some(n);
        Ok(Some(PythonSettings {
            interpreter,
            interpreter_from,
            workers: self.python_workers.unwrap_or_else(default_python_workers),
            timeout: match self.plugin_timeout.0 {
                std::time::Duration::ZERO => super::DEFAULT_STEP_LIMIT,
                limit => limit,
            },
            max_tasks: positive(self.python_max_tasks),
            max_memory_mib: positive(self.python_max_memory),
            log_level,
        }))
    }
}

/// The most verbose level `RUST_LOG` lets through, when it is set.
pub fn rust_log_level() -> Option<LevelFilter> {
    tracing_subscriber::EnvFilter::try_from_default_env().ok().and_then(|f| f.max_level_hint())
}

impl BrokerFlags {
    /// The broker URL and where it came from (see [`sources`]).
    pub fn setting(&self) -> Setting {
        sources::broker_url(self.broker_url.clone(), sources::process_env)
    }

    /// Checks the URL and reads the CA file, once; errors never show the password.
    pub fn addr(&self) -> Result<BrokerAddr, String> {
        let url = self.setting().url;
        check_broker_url(&url)?;
        Ok(BrokerAddr { url, ca_pem: read_ca_file("--broker-ca-file", self.broker_ca_file.as_deref())? })
    }
}

impl DatabaseFlags {
    /// The database URL, checked, and where it came from (see [`sources`]).
    pub fn setting(&self) -> Result<Setting, String> {
        let setting = sources::database_url(self.database_url.clone(), sources::process_env);
        check_database_url(&setting.url)?;
        Ok(setting)
    }

    /// The database's settings with their defaults.
    pub fn config(&self) -> Result<DbConfig, String> {
        Ok(DbConfig::new(self.setting()?.url))
    }
}

impl SweepFlags {
    /// Checks the flags.
    pub fn settings(&self) -> Result<SweepSettings, String> {
        if self.sweep_batch < 1 {
            return Err("--sweep-batch must be at least 1".into());
        }
        Ok(SweepSettings { margin: self.sweep_margin.0, batch: self.sweep_batch })
    }
}

/// An IANA zone name for `--db-time-zone`.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse().map_err(|_| format!("--db-time-zone {name:?} is not an IANA zone name"))
}

/// Reads a file of certificate authorities that `setting` names, once, at start-up.
pub fn read_ca_file(setting: &str, path: Option<&std::path::Path>) -> Result<Option<String>, String> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{setting} {} cannot be read: {e}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{setting} {} holds no PEM certificate", path.display()));
    }
    Ok(Some(pem))
}

/// Checks a `--broker-url`; errors never show the password.
pub fn check_broker_url(url: &str) -> Result<(), String> {
    let nodes = crate::broker::connect::nodes(url);
    if nodes.is_empty() {
        return Err("--broker-url names no broker".into());
    }
    for url in nodes {
        if !url.starts_with("amqp://") && !url.starts_with("amqps://") {
            return Err(format!(
                "--broker-url must be an amqp:// or amqps:// URL (or several separated by ';'), got {}",
                celerity_db::redact_url(url)
            ));
        }
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|e| format!("--broker-url {} is not a valid AMQP URL: {e}", celerity_db::redact_url(url)))?;
    }
    Ok(())
}

/// Checks a `--database-url`; errors never show the password.
pub fn check_database_url(url: &str) -> Result<(), String> {
    if !url.starts_with("mysql://") {
        return Err(format!("--database-url must be a mysql:// URL, got {}", celerity_db::redact_url(url)));
    }
    Ok(())
}

/// A database handle for a one-shot command, after checking its URL.
pub fn open_database(config: DbConfig) -> Result<Db, String> {
    check_database_url(&config.url)?;
    Db::new(config).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::flags::{Cli, Command, WorkerArgs};

    fn worker(args: &[&str]) -> Result<WorkerConfig, String> {
        let argv = ["celerity", "worker"].iter().chain(args);
        match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
            Command::Worker(args) => args.into_config(),
            other => panic!("not the worker command: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = worker(&[]).unwrap();
        let defaults = WorkerConfig::new(super::super::DEFAULT_BROKER_URL, super::super::DEFAULT_DATABASE_URL);
        assert_eq!(config.broker_url, defaults.broker_url);
        assert_eq!(config.db.url, defaults.db.url);
        assert_eq!(config.db.pool_size, 20, "concurrency + 4");
        assert_eq!(config.queues, defaults.queues);
        assert_eq!(config.concurrency, defaults.concurrency);
        assert_eq!(config.backoff, defaults.backoff);
        assert_eq!(config.sweep, defaults.sweep);
        assert_eq!(config.sweep_interval, defaults.sweep_interval);
        assert_eq!(config.http_addr, defaults.http_addr);
        assert!(config.events);
    }

    #[test]
    fn flags_reach_the_config() {
        let config = worker(&[
            "--concurrency",
            "3",
            "--queues",
            " plugin_schedule ,plugin_callback",
            "--retry-base",
            "0.5",
            "--max-retries",
            "2",
            "--sweep-interval",
            "0",
            "--db-time-zone",
            "Asia/Shanghai",
            "--max-deliveries",
            "0",
            "--without-events",
        ])
        .unwrap();
        assert_eq!(config.concurrency, 3);
        assert_eq!(config.db.pool_size, 7);
        assert_eq!(config.queues, ["plugin_schedule", "plugin_callback"]);
        assert_eq!(config.backoff.base, std::time::Duration::from_millis(500));
        assert_eq!(config.backoff.max_retries, 2);
        assert_eq!(config.sweep_interval, None, "0 turns the sweeper off");
        assert_eq!(config.db.time_zone, Tz::Asia__Shanghai);
        assert_eq!(config.max_deliveries, 1, "at least one delivery");
        assert!(!config.events);
    }

    #[test]
    fn bad_values_are_one_line_without_the_password() {
        let err = |args: &[&str]| worker(args).unwrap_err();
        assert_eq!(err(&["--concurrency", "0"]), "--concurrency must be at least 1");
        assert_eq!(err(&["--queues", "plugin_schedule,,plugin_callback"]), "--queues has an empty queue name");
        assert_eq!(err(&["--concurrency", "8", "--db-pool-size", "4"]), "--db-pool-size 4 is below --concurrency 8");
        assert_eq!(err(&["--sweep-batch", "0"]), "--sweep-batch must be at least 1");
        assert!(err(&["--db-time-zone", "Mars/Olympus"]).contains("is not an IANA zone name"));
        let url = err(&["--database-url", "postgres://u:hunter2@h/db"]);
        assert!(url.starts_with("--database-url must be a mysql:// URL") && !url.contains("hunter2"), "{url}");
        let url = err(&["--broker-url", "http://u:hunter2@h/"]);
        assert!(url.starts_with("--broker-url must be an amqp://") && !url.contains("hunter2"), "{url}");
        let ca = err(&["--broker-ca-file", "/no/such/file.pem"]);
        assert!(ca.starts_with("--broker-ca-file /no/such/file.pem cannot be read"), "{ca}");
        let callback_ca = err(&["--callback-ca-file", "/no/such/file.pem"]);
        assert!(callback_ca.starts_with("--callback-ca-file /no/such/file.pem cannot be read"), "{callback_ca}");
        let not_pem = err(&["--callback-ca-file", "/proc/self/cmdline"]);
        assert!(not_pem.ends_with("holds no PEM certificate"), "{not_pem}");
        let list = err(&["--broker-url", "amqp://a//;http://u:hunter2@b/"]);
        assert!(list.contains("or several separated by ';'") && !list.contains("hunter2"), "{list}");
        assert_eq!(err(&["--broker-url", " ; "]), "--broker-url names no broker");
    }

    /// The plugin template's `schedule` command with `celery` changed to
    /// `celerity`, in both of the orders the templates write it.
    #[test]
    fn the_templates_celery_command_line_runs_as_written() {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        for argv in [
            "celerity -A blueapps.core.celery worker -P threads -n schedule_worker@%h -c 500 -Q plugin_schedule,plugin_callback,schedule_delete -l INFO",
            "celerity worker -A blueapps.core.celery -P threads -n schedule_worker@%h -c 500 -Q plugin_schedule,plugin_callback,schedule_delete -l info",
        ] {
            let cli = Cli::parse_from_argv(argv.split_whitespace()).unwrap_or_else(|e| panic!("{argv}: {e}"));
            let Command::Worker(args) = cli.command else { panic!("not the worker command") };
            let config = WorkerArgs { app: cli.app, ..*args }.into_config().unwrap();
            assert_eq!(config.concurrency, 500);
            assert_eq!(config.queues, ["plugin_schedule", "plugin_callback", "schedule_delete"]);
            assert_eq!(config.hostname, format!("schedule_worker@{host}"));
            assert_eq!(config.db.pool_size, 504, "concurrency + 4; opened as needed");
            let said = config.settings_from.join("\n");
            assert!(said.contains("-A blueapps.core.celery has no effect"), "{said}");
            assert!(said.contains("-P threads has no effect"), "{said}");
        }
        let quiet = worker(&["-l", "warning"]).unwrap();
        assert!(quiet.log_level == LevelFilter::WARN || std::env::var_os("RUST_LOG").is_some());
    }

    #[test]
    fn a_celery_flag_celerity_does_not_take_stops_start_up_naming_it() {
        for (flag, named) in [
            (&["-B"][..], "-B is a Celery flag"),
            (&["--autoscale=10,3"][..], "--autoscale is a Celery flag"),
            (&["--max-tasks-per-child", "50"][..], "--max-tasks-per-child is a Celery flag"),
            (&["--without-gossip"][..], "--without-gossip is a Celery flag"),
            (&["-E"][..], "-E is a Celery flag"),
        ] {
            let argv = ["celerity", "worker", "-c", "5"].into_iter().chain(flag.iter().copied());
            let err = Cli::parse_from_argv(argv).unwrap_err().to_string();
            assert!(err.contains(named), "{flag:?}: {err}");
        }
        let other = Cli::parse_from_argv(["celerity", "worker", "--no-such-flag"]).unwrap_err().to_string();
        assert!(other.contains("unexpected argument '--no-such-flag'"), "{other}");
        assert!(
            worker(&["-Q", "plugin_schedule,celery"]).unwrap_err().contains("is not one of the framework's queues")
        );
        assert!(worker(&["-l", "verbose"]).unwrap_err().contains("--loglevel \"verbose\""));
        assert!(worker(&["-n", "w@%x"]).unwrap_err().contains("%x is not one of"));
    }

    #[test]
    fn a_failover_list_of_brokers_is_accepted_as_celery_writes_it() {
        assert_eq!(check_broker_url("amqp://a:5672//;amqp://b:5672//;amqp://c:5672//"), Ok(()));
    }

    #[test]
    fn the_admin_token_comes_from_a_file_or_the_flag_never_both() {
        let dir = std::env::temp_dir().join(format!("celerity-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-a-mounted-secret-0123456789\nignored\n").unwrap();
        let path = file.to_str().unwrap();
        let config = worker(&["--admin-token-file", path]).unwrap();
        assert_eq!(config.admin_token.map(|t| t.0).as_deref(), Some("from-a-mounted-secret-0123456789"));
        let both = worker(&["--admin-token-file", path, "--admin-token", "another-token-0123456789"]).unwrap_err();
        assert!(both.contains("cannot be used with"), "{both}");
        let missing = worker(&["--admin-token-file", "/no/such/token"]).unwrap_err();
        assert!(missing.starts_with("--admin-token-file /no/such/token: cannot be read"), "{missing}");
        std::fs::write(&file, "short\n").unwrap();
        assert!(worker(&["--admin-token-file", path]).unwrap_err().contains("at least 16"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
