//! What every task handler shares: the store, the publisher, the plugins,
//! the configuration, the operators' views, and the pause switch.

use std::sync::Arc;

use celerity_db::Db;

use super::messages::Sender;
use crate::broker::{Patient, Publisher};
use crate::config::WorkerConfig;
use crate::control::events::Events;
use crate::control::inflight::InFlight;
use crate::control::pause::Pause;
use crate::plugins::Plugins;

/// Shared, read-only state of a running worker. The store and the
/// publisher are the real database and broker in a worker, and in-process
/// fakes in the tasks' unit tests.
pub struct Ctx<S = Db, P = Patient<Publisher>> {
    /// The database.
    pub store: S,
    /// The confirm-mode publisher; in a worker, one that waits out a
    /// missing route while the delivery is held ([`Patient`]).
    pub publisher: P,
    /// The plugins, wherever each version runs.
    pub plugins: Plugins,
    /// The configuration.
    pub config: WorkerConfig,
    /// Who the messages this worker sends say sent them.
    pub sender: Sender,
    /// Celery events, when the broker took the exchange.
    pub events: Option<Arc<Events>>,
    /// The deliveries held now, for `celery inspect active|reserved|scheduled`.
    pub inflight: Arc<InFlight>,
    /// Whether the worker takes deliveries; an environment fault trips it.
    pub pause: Arc<Pause>,
}
