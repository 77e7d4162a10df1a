//! The worker's HTTP endpoint on `--http-addr`: `/metrics` (Prometheus text
//! format), the operator controls when `--admin-token` is set (see
//! [`crate::operator::http`]), and `/healthz` (200 only when the broker
//! connection is open, every queue is consumed and every part of the
//! topology declared, the worker is not paused by an environment fault, and
//! a database connection answers; 503 otherwise, with the reason).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use celerity_db::{Db, repo};
use lapin::ConnectionStatus;

use super::meters;
use super::pause::Pause;

/// How long `/healthz` waits for the database.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

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
}

impl Health {
    /// Health of a worker using `db`, with no broker session yet.
    pub fn new(db: Db, pause: Arc<Pause>) -> Arc<Health> {
        Arc::new(Health { db, pause, broker: Mutex::new(None), not_ready: Mutex::new(Vec::new()) })
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
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves, with `more` routes beside `/metrics` and
/// `/healthz` (the operator controls, when they are on). A port already
/// taken is the caller's to report: the worker runs on without the endpoint.
pub async fn serve(addr: SocketAddr, health: Arc<Health>, more: Option<Router>) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut app = Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(health);
    if let Some(more) = more {
        app = app.merge(more);
    }
    // The peer's address: the operator controls record it as who acted.
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!(error = %e, "the HTTP endpoint stopped");
        }
    });
    Ok(Server { addr: bound, task })
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
        return (StatusCode::SERVICE_UNAVAILABLE, format!("paused for {secs} s: {}\n", paused.reason));
    }
    match tokio::time::timeout(DB_CHECK_TIMEOUT, health.db.call(repo::ping)).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n".into()),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database: not answering\n".into()),
    }
}
