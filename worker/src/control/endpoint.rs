//! The worker's HTTP endpoint on `--http-addr`: `/metrics` (Prometheus text
//! format), the operator controls when `--admin-token` is set (see
//! [`crate::operator::http`]), and `/healthz` (200 only when the broker
//! connection is open, every queue is consumed and every part of the
//! topology declared, the worker is not paused by an environment fault, and
//! the database answered its last check; 503 otherwise, with the reason).
//! Anyone who reaches the port can connect: connections are capped, their
//! request heads and lives timed out, and `/healthz` answers from state the
//! worker keeps (a request costs the database nothing) without the
//! database's own error text.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Router};
use celerity_db::{Db, repo};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use lapin::ConnectionStatus;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::pause::Pause;
use crate::meters;

/// How long a check of the database may take.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the database is checked for `/healthz`.
const DB_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Connections served at once: scrapers, probes and consoles need a few;
/// each one more would hold a descriptor the database pool and the plugin
/// hosts need (a thousand idle sockets once starved a worker of them).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's head, idle keep-alive
/// connections included.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may stay open, whatever it does (a body sent a
/// byte at a time, a client that keeps it alive for ever).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after a failed accept.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A queue not consumed, or a part of the topology not declared, in this
/// broker session: the worker tries it again by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// The queue, or the part of the topology.
    pub name: String,
    /// The broker's last answer.
    pub reason: String,
    /// Since when.
    pub since: Instant,
}

/// What `/healthz` and `/metrics` look at.
pub struct Health {
    db: Db,
    pause: Arc<Pause>,
    /// The connection of the current broker session, if any.
    broker: Mutex<Option<ConnectionStatus>>,
    /// What the session has not consumed or declared yet.
    not_ready: Mutex<Vec<NotReady>>,
    /// Whether the database answered its last check; `None` before the first.
    database: Mutex<Option<bool>>,
}

impl Health {
    /// Health of a worker using `db`, with no broker session yet.
    pub fn new(db: Db, pause: Arc<Pause>) -> Arc<Health> {
        let (broker, not_ready, database) = (Mutex::new(None), Mutex::new(Vec::new()), Mutex::new(None));
        Arc::new(Health { db, pause, broker, not_ready, database })
    }

    /// The worker's pause switch.
    pub fn pause(&self) -> &Arc<Pause> {
        &self.pause
    }

    /// Records the session's connection, or `None` when it ended.
    pub fn set_connection(&self, status: Option<ConnectionStatus>) {
        *self.broker.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Records what the session has not consumed or declared yet.
    pub fn set_not_ready(&self, not_ready: Vec<NotReady>) {
        *self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) = not_ready;
    }

    fn broker_up(&self) -> bool {
        self.broker.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(ConnectionStatus::connected)
    }

    /// One line per queue not consumed (or part not declared), or `None`.
    fn not_ready(&self) -> Option<String> {
        let not_ready = self.not_ready.lock().unwrap_or_else(|p| p.into_inner());
        let lines = not_ready.iter().map(|n| {
            let secs = n.since.elapsed().as_secs();
            format!("broker: {} not available for {secs} s, trying again: {}\n", n.name, n.reason)
        });
        let text: String = lines.collect();
        (!text.is_empty()).then_some(text)
    }
}

/// The running endpoint; dropping it stops serving.
pub struct Server {
    /// The address bound (the port chosen, for `:0`).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    checking: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        self.checking.abort();
    }
}

/// Binds `addr` and serves, with `more` routes beside `/metrics` and
/// `/healthz` (the operator controls, when they are on). A port already
/// taken is the caller's to report: the worker runs on without the endpoint.
pub async fn serve(addr: SocketAddr, health: Arc<Health>, more: Option<Router>) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut app =
        Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(health.clone());
    if let Some(more) = more {
        app = app.merge(more);
    }
    let task = tokio::spawn(accept(listener, app));
    let checking = tokio::spawn(check_database(health));
    Ok(Server { addr: bound, task, checking })
}

/// Serves each connection with a timeout on its request heads and on its
/// whole life, at most [`MAX_CONNECTIONS`] at once: past that, new ones
/// wait in the kernel's backlog, holding none of the worker's descriptors.
async fn accept(listener: tokio::net::TcpListener, app: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: the next accept may work.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        // The peer's address: the operator controls record it as who acted.
        let service = TowerToHyperService::new(app.clone().layer(Extension(ConnectInfo(peer))));
        connections.spawn(async move {
            let _slot = slot;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}

/// Pings the database every [`DB_CHECK_EVERY`] for `/healthz`, which then
/// answers from the last result: a request costs the database nothing.
async fn check_database(health: Arc<Health>) {
    loop {
        let answered = matches!(tokio::time::timeout(DB_CHECK_TIMEOUT, health.db.call(repo::ping)).await, Ok(Ok(())));
        *health.database.lock().unwrap_or_else(|p| p.into_inner()) = Some(answered);
        tokio::time::sleep(DB_CHECK_EVERY).await;
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> String {
    let (in_use, idle) = health.db.pool_connections();
    metrics::gauge!(meters::DB_POOL, "state" => "in_use").set(f64::from(in_use));
    metrics::gauge!(meters::DB_POOL, "state" => "idle").set(f64::from(idle));
    meters::render()
}

async fn healthz(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    if !health.broker_up() {
        return (StatusCode::SERVICE_UNAVAILABLE, "broker: not connected\n".into());
    }
    if let Some(lines) = health.not_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, lines);
    }
    if let Some(paused) = health.pause.paused() {
        let secs = paused.since.elapsed().as_secs();
        return (StatusCode::SERVICE_UNAVAILABLE, format!("paused for {secs} s: {}\n", paused.public()));
    }
    let database = *health.database.lock().unwrap_or_else(|p| p.into_inner());
    match database {
        Some(true) => (StatusCode::OK, "ok\n".into()),
        Some(false) => (StatusCode::SERVICE_UNAVAILABLE, "database: not answering\n".into()),
        None => (StatusCode::SERVICE_UNAVAILABLE, "database: not checked yet\n".into()),
    }
}
