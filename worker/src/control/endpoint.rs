//! The worker's HTTP endpoint on `--http-addr`: `/metrics` (Prometheus text
//! format), the operator controls when `--admin-token` is set (see
//! [`crate::operator::http`]), and `/healthz` (200 only when the broker channel is open, the
//! worker is not paused by an environment fault, and a database connection
//! answers; 503 otherwise, with the reason).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use celerity_db::{Db, repo};
use lapin::Channel;

use super::meters;
use super::pause::Pause;

/// How long `/healthz` waits for the database.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/healthz` and `/metrics` look at.
pub struct Health {
    db: Db,
    pause: Arc<Pause>,
    /// The consuming channel of the current broker session, if any.
    channel: Mutex<Option<Channel>>,
}

impl Health {
    /// Health of a worker using `db`, with no broker session yet.
    pub fn new(db: Db, pause: Arc<Pause>) -> Arc<Health> {
        Arc::new(Health { db, pause, channel: Mutex::new(None) })
    }

    /// The worker's pause switch.
    pub fn pause(&self) -> &Arc<Pause> {
        &self.pause
    }

    /// Records the session's consuming channel, or `None` when it ended.
    pub fn set_channel(&self, channel: Option<Channel>) {
        *self.channel.lock().unwrap_or_else(|p| p.into_inner()) = channel;
    }

    fn broker_up(&self) -> bool {
        self.channel.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|c| c.status().connected())
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
        return (StatusCode::SERVICE_UNAVAILABLE, "broker: no open channel\n".into());
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
