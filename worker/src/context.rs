//! What every task handler shares: the database, the publisher, the plugins
//! and the configuration.

use celerity_db::Db;

use crate::broker::Publisher;
use crate::config::WorkerConfig;
use crate::plugin::Registry;

/// Shared, read-only state of a running worker.
pub struct Ctx {
    /// The database.
    pub db: Db,
    /// The confirm-mode publisher.
    pub publisher: Publisher,
    /// Plugins by version.
    pub registry: Registry,
    /// The configuration.
    pub config: WorkerConfig,
    /// `origin` of the messages this worker publishes (`pid@hostname`, as Celery writes it).
    pub origin: String,
    /// `reply_to` of the messages this worker publishes (Celery always sets one).
    pub reply_to: String,
    /// Celery events, when the broker took the exchange.
    pub events: Option<std::sync::Arc<crate::events::Events>>,
    /// The deliveries held now, for `celery inspect active|reserved|scheduled`.
    pub inflight: std::sync::Arc<crate::inflight::InFlight>,
}
