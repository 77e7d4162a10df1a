//! `run(config, shutdown)`: consume until `shutdown` resolves, then stop
//! taking deliveries, let in-flight polls finish within the grace period,
//! hand the rest back and close. A lost broker connection is not the end:
//! the worker reconnects with backoff, declares its topology again and
//! resumes; what was in flight is redelivered by the broker, and the guarded
//! update makes that harmless.

mod consumers;
pub mod daily;
pub mod first_scrape;
pub mod outage;
mod session;
mod subscriptions;
pub mod sweeper;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use celerity_db::{Db, DbError, ErrorClass};
use thiserror::Error;

use self::session::{SessionEnd, session};
use crate::broker::connect::{self, with_heartbeat};
use crate::broker::{BrokerAddr, BrokerError};
use crate::config::WorkerConfig;
use crate::control::endpoint::{self, Health};
use crate::control::pause::Pause;
use crate::meters;
use crate::operator::{self, Controls};
use crate::plugins::example::Example;
use crate::plugins::python::Pool;
use crate::plugins::{Callbacks, Plugins, Registry};

/// How long a stopping worker waits for the broker to answer a cancel or a
/// close: a broker that stopped answering must not keep the process alive.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long start-up waits for the first count of schedules by status.
const FIRST_COUNT_WAIT: Duration = Duration::from_secs(3);

/// Why the worker stopped other than by a shutdown signal.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The broker failed (unreachable at start-up, topology refused).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The database configuration cannot work.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The plugins cannot run (no source, a version offered twice, a
    /// Python project that does not start).
    #[error("{0}")]
    Plugins(String),
}

/// Runs a worker with the plugins its configuration names (`--python`,
/// `--example-plugin`).
pub async fn run(config: WorkerConfig, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
    run_with(config, Registry::new(), shutdown).await
}

/// Runs a worker with the given Rust plugins, and those its configuration names.
pub async fn run_with(
    mut config: WorkerConfig,
    mut registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    for setting in &config.settings_from {
        tracing::info!("{setting}");
    }
    if config.example_plugin {
        registry.register("1.0.0", Example);
    }
    let plugins = start_plugins(&config, registry).await?;
    // The tables' zone is settled before anything reads a row.
    if let Some(zone) = project_time_zone(&config, &plugins)? {
        config.db.time_zone = zone;
    }
    tracing::info!(zone = %config.db.time_zone, "naive datetimes in the tables are read and written in this zone");
    let db = Db::new(config.db.clone())?;
    check_database(&db, &config).await?;
    // Before any metric is recorded: what comes earlier is lost. The timer
    // drains histogram samples whether or not anyone scrapes; it stops when
    // the worker returns.
    let _upkeep = meters::upkeep(meters::UPKEEP_INTERVAL);
    first_scrape::register(&config);
    if let Some(pool) = plugins.python() {
        pool.report_hosts();
    }
    // Before the endpoint serves, so the first scrape has the counts; a
    // database that does not answer soon only delays them.
    let _ = tokio::time::timeout(FIRST_COUNT_WAIT, first_scrape::count_once(&db)).await;
    let _counting = config
        .schedules_count_interval
        .map(|every| AbortOnDrop(tokio::spawn(first_scrape::count_schedules(db.clone(), every))));
    let pause = Pause::new();
    let probing = tokio::spawn(outage::watch_over(db.clone(), pause.clone()));
    let _probing = AbortOnDrop(probing);
    let health = Health::new(db.clone(), pause);
    let addr = BrokerAddr { url: with_heartbeat(&config.broker_url), ca_pem: config.broker_ca_pem.clone() };
    let controls = config.admin_token.as_ref().map(|token| {
        let controls = Controls::new(db.clone(), addr.clone(), config.broker_wait);
        operator::http::routes(controls, token.0.clone())
    });
    let controls_on = controls.is_some();
    let _server = match endpoint::serve(config.http_addr, health.clone(), controls).await {
        Ok(server) => {
            let also = if controls_on { " and the operator controls on /schedules" } else { "" };
            tracing::info!(addr = %server.addr, "serving /metrics and /healthz{also}");
            Some(server)
        }
        // Several workers on one host with the default address: the first
        // serves, the rest run on without the endpoint.
        Err(e) => {
            tracing::error!(addr = %config.http_addr, error = %e, "cannot serve /metrics and /healthz");
            None
        }
    };
    let connected = connect::connect(&addr, config.broker_wait).await?;
    let (mut conn, mut node) = (connected.conn, connected.node);
    tokio::pin!(shutdown);
    let mut running = false;
    loop {
        let ended = session(&config, &db, &plugins, &conn, &health, &mut running, &mut shutdown).await;
        health.set_connection(None);
        health.set_not_ready(Vec::new());
        match ended? {
            SessionEnd::Shutdown => {
                plugins.close().await;
                bounded("connection close", conn.close(200, "worker stopping".into())).await;
                tracing::info!("worker stopped");
                return Ok(());
            }
            SessionEnd::Lost(reason) => tracing::warn!(%reason, "broker connection lost; reconnecting"),
        }
        conn = tokio::select! {
            _ = &mut shutdown => {
                plugins.close().await;
                tracing::info!("worker stopped while reconnecting");
                return Ok(());
            }
            connected = connect::reconnect(&addr, node) => {
                let connected = connected.map_err(BrokerError::from)?;
                node = connected.node;
                connected.conn
            }
        };
        metrics::counter!(meters::RECONNECTS).increment(1);
        tracing::info!("reconnected to the broker");
    }
}

/// The worker's plugins: the Rust ones, and the Python project's hosts when
/// `--python` names an interpreter, which must start and report their
/// versions before the worker consumes anything.
async fn start_plugins(config: &WorkerConfig, registry: Registry) -> Result<Plugins, WorkerError> {
    let pool = match &config.python {
        Some(settings) => Some(Arc::new(Pool::start(settings.clone()).await.map_err(WorkerError::Plugins)?)),
        None => None,
    };
    let plugins = Plugins::new(registry, pool).map_err(WorkerError::Plugins)?;
    Ok(match &config.callback_ca_pem {
        Some(pem) => plugins.posting_with(Callbacks::with_ca_pem(pem).map_err(WorkerError::Plugins)?),
        None => plugins,
    })
}

/// The project's zone for the tables' naive datetimes, when no
/// `--db-time-zone` was given and its plugin hosts report one (Django's
/// `TIME_ZONE` with `USE_TZ = False`): what the framework's own worker and
/// producers write.
fn project_time_zone(config: &WorkerConfig, plugins: &Plugins) -> Result<Option<celerity_db::Tz>, WorkerError> {
    let reported = plugins.python().and_then(|pool| pool.ready().time_zone.clone());
    match reported {
        Some(zone) if config.time_zone_from_project => {
            let tz = zone.parse().map_err(|_| {
                WorkerError::Plugins(format!(
                    "the project's Django TIME_ZONE {zone:?} is not an IANA zone name; give --db-time-zone"
                ))
            })?;
            tracing::info!(%zone, "database time zone from the project's Django settings (TIME_ZONE, USE_TZ)");
            Ok(Some(tz))
        }
        _ => Ok(None),
    }
}

/// A database that is down at start-up is a transient condition: polls
/// retry. One that refuses the configuration at start-up (a wrong password,
/// no such database) is bad configuration: the worker exits rather than
/// start paused. The same errors later, in a running worker, pause it.
async fn check_database(db: &Db, config: &WorkerConfig) -> Result<(), WorkerError> {
    let checked = db.clone();
    let check = tokio::task::spawn_blocking(move || checked.check_connection());
    match tokio::time::timeout(config.db.call_timeout, check).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) if e.class() == ErrorClass::Environment => return Err(WorkerError::Db(e)),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "database not reachable at start-up; polls will retry until it is")
        }
        Ok(Err(join)) => panic!("database check panicked: {join}"),
        Err(_) => tracing::warn!("database not answering at start-up; polls will retry until it does"),
    }
    Ok(())
}

/// Runs one shutdown step against the broker, giving up after
/// [`CLOSE_TIMEOUT`]; its outcome does not change what happens next.
async fn bounded<T>(step: &str, fut: impl Future<Output = lapin::Result<T>>) {
    match tokio::time::timeout(CLOSE_TIMEOUT, fut).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(step, error = %e, "broker refused a shutdown step"),
        Err(_) => tracing::warn!(step, "broker did not answer a shutdown step in time; going on"),
    }
}

/// Aborts a background task when the worker returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
