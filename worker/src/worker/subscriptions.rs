//! What one broker session declares and consumes, and what it still waits
//! for. Each part of the topology is declared on a channel of its own (a
//! refusal closes that channel only) and each queue consumed on its own
//! channel ([`Consumers`]). A part or a queue the broker cannot serve now (a
//! classic queue whose node is down, a quorum queue without a quorum, no
//! answer in time), at start-up, at a reconnect or when the broker cancels
//! a consumer, waits: it is logged once with the reason, counted, shown on
//! `/healthz`, and tried again every [`RETRY_EVERY`] while everything else
//! runs. A refusal that can never pass as configured (other arguments, no
//! access) stops a worker that is starting: that is bad configuration. In a
//! running worker (a reconnect, a cancelled consumer) the same refusal means
//! someone changed the broker under it (a grant revoked, a queue declared
//! anew): it waits like the rest, logged as an error, as a running worker
//! waits out a database grant revoked (SPEC §6). A lost connection ends the
//! session.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::Connection;

use super::bounded;
use super::consumers::{Consumers, Ended, Feed};
use crate::broker::topology::parts;
use crate::broker::{BrokerError, Part, QueueKinds, Refusal, declare_part};
use crate::config::WorkerConfig;
use crate::control::endpoint::{Health, NotReady};
use crate::control::pause::Pause;
use crate::meters;

/// How often what waits is tried again.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(2);

/// How long one part's declarations may take: the delay levels are about
/// 110 round trips, so this covers them at 100 ms each; a part that does not
/// answer within it is tried again later.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a session cannot go on.
pub(super) enum Stop {
    /// A refusal no retry can pass: the worker stops with it.
    Never(BrokerError),
    /// The connection is gone: reconnect.
    Lost(String),
}

/// How one try of a part or a consumer went, decided once from the refusal.
enum Tried {
    Done,
    /// Try again later; `changed` when the broker was changed under a
    /// running worker (logged as an error, not a warning).
    Waits {
        reason: String,
        changed: bool,
    },
    Stops(Stop),
}

impl Tried {
    fn of(result: Result<(), BrokerError>, conn: &Connection, running: bool) -> Tried {
        let Err(e) = result else { return Tried::Done };
        match (e.refusal(conn.status().connected()), running) {
            (Refusal::Unavailable, _) => Tried::Waits { reason: e.to_string(), changed: false },
            (Refusal::Never, false) => Tried::Stops(Stop::Never(e)),
            (Refusal::Never, true) => Tried::Waits { reason: e.to_string(), changed: true },
            (Refusal::Disconnected, _) => Tried::Stops(Stop::Lost(e.to_string())),
        }
    }
}

/// The session's parts and consumers.
pub(super) struct Subscriptions {
    kinds: QueueKinds,
    /// The queues to consume, in the configured order.
    queues: Vec<String>,
    /// Parts not declared yet in this session.
    undeclared: Vec<Part>,
    /// Queues and parts the broker could not serve, by name, with why.
    waiting: BTreeMap<String, NotReady>,
    consumers: Consumers,
    /// An environment fault stopped consumption; declarations go on.
    paused: bool,
    /// The worker has consumed before: a refusal that can never pass waits
    /// instead of stopping it.
    running: bool,
    health: Arc<Health>,
}

impl Subscriptions {
    /// Nothing declared or consumed yet; `paused` if the worker is paused,
    /// `running` if it has consumed before (this session is a reconnect).
    pub(super) fn new(
        config: &WorkerConfig,
        feed: Feed,
        health: Arc<Health>,
        paused: bool,
        running: bool,
    ) -> Subscriptions {
        let queues = config.consumed_queues();
        for queue in &queues {
            metrics::gauge!(meters::CONSUMING, "queue" => queue.clone()).set(0.0);
        }
        Subscriptions {
            kinds: config.queue_kinds(),
            undeclared: parts(&config.declared_queues()),
            waiting: BTreeMap::new(),
            consumers: Consumers::new(
                &config.hostname,
                queues.iter().map(|q| (q.clone(), config.prefetch_for(q))).collect(),
                feed,
            ),
            queues,
            paused,
            running,
            health,
        }
    }

    /// Whether anything is left to declare or consume.
    fn incomplete(&self) -> bool {
        !self.undeclared.is_empty() || (!self.paused && self.queues.iter().any(|q| !self.consumers.consuming(q)))
    }

    /// Declares every part not declared yet, each on a channel of its own,
    /// then consumes every queue whose part is declared (unless paused).
    pub(super) async fn try_all(&mut self, conn: &Connection) -> Result<(), Stop> {
        for part in std::mem::take(&mut self.undeclared) {
            match Tried::of(declare_alone(conn, &part, self.kinds).await, conn, self.running) {
                Tried::Done => {
                    // A queue is available once it is consumed, not merely declared.
                    let consumed = part.queue().is_some_and(|q| self.queues.iter().any(|c| c == q));
                    if !consumed || self.paused {
                        self.available(&part.name());
                    }
                }
                Tried::Waits { reason, changed } => {
                    self.unavailable(&part.name(), reason, changed);
                    self.undeclared.push(part);
                }
                Tried::Stops(stop) => return Err(stop),
            }
        }
        if !self.paused {
            for queue in self.queues.clone() {
                let declared = !self.undeclared.iter().any(|p| p.queue() == Some(queue.as_str()));
                if !declared || self.consumers.consuming(&queue) {
                    continue;
                }
                match Tried::of(self.consumers.consume(conn, &queue).await, conn, self.running) {
                    Tried::Done => {
                        metrics::gauge!(meters::CONSUMING, "queue" => queue.clone()).set(1.0);
                        self.available(&queue);
                    }
                    Tried::Waits { reason, changed } => {
                        // Declared again before the next consume: a 404 there would close its channel.
                        self.undeclared.push(Part::Destination(queue.clone()));
                        self.unavailable(&queue, reason, changed);
                    }
                    Tried::Stops(stop) => return Err(stop),
                }
            }
        }
        // What could be served is; from now on the worker runs.
        self.running = true;
        self.health.set_not_ready(self.waiting.values().cloned().collect());
        Ok(())
    }

    /// Keeps the session's queues consumed, beside the session's own loop:
    /// tries again what waits every [`RETRY_EVERY`], declares and consumes
    /// again a queue whose consumer the broker cancelled, and follows the
    /// pause. Returns only when the session cannot go on.
    pub(super) async fn keep(&mut self, conn: &Connection, pause: &Pause) -> Stop {
        let mut pausing = pause.watch();
        let mut retry_at = tokio::time::Instant::now() + RETRY_EVERY;
        loop {
            let stepped = match (pause.is_paused(), self.paused) {
                (true, false) => {
                    self.pause().await;
                    tracing::warn!("consumers cancelled while paused");
                    Ok(())
                }
                (false, true) => {
                    tracing::info!(queues = ?self.queues, "consuming again");
                    self.paused = false;
                    self.try_all(conn).await
                }
                (true, true) | (false, false) => tokio::select! {
                    ended = self.consumers.ended() => {
                        if !conn.status().connected() {
                            return Stop::Lost("the connection closed".into());
                        }
                        self.lost_consumer(ended);
                        retry_at = tokio::time::Instant::now();
                        Ok(())
                    }
                    () = tokio::time::sleep_until(retry_at), if self.incomplete() => {
                        retry_at = tokio::time::Instant::now() + RETRY_EVERY;
                        self.try_all(conn).await
                    }
                    // The pause outlives the session: this never ends.
                    _ = pausing.changed() => Ok(()),
                },
            };
            if let Err(stop) = stepped {
                return stop;
            }
        }
    }

    /// A consumer the broker cancelled (or whose channel closed with the
    /// connection up): its queue is declared again, then consumed.
    fn lost_consumer(&mut self, ended: Ended) {
        let queue = ended.queue;
        metrics::gauge!(meters::CONSUMING, "queue" => queue.clone()).set(0.0);
        metrics::counter!(meters::CANCELLATIONS, "queue" => queue.clone()).increment(1);
        let reason = match ended.error {
            Some(e) => format!("its consumer's channel failed: {e}"),
            None => "the broker cancelled its consumer (the queue deleted, or its node down)".to_owned(),
        };
        self.unavailable(&queue, reason, false);
        self.undeclared.push(Part::Destination(queue));
        self.health.set_not_ready(self.waiting.values().cloned().collect());
    }

    /// Stops consuming (an environment fault); what is held keeps its channel.
    async fn pause(&mut self) {
        self.paused = true;
        self.consumers.cancel().await;
        for queue in &self.queues {
            metrics::gauge!(meters::CONSUMING, "queue" => queue.clone()).set(0.0);
        }
    }

    /// Cancels the consumers for a shutdown: nothing new comes.
    pub(super) async fn cancel(&mut self) {
        self.consumers.cancel().await;
    }

    /// Closes the consumers' channels; what is unacked on them goes back.
    pub(super) async fn close(self) {
        self.consumers.close().await;
        self.health.set_not_ready(Vec::new());
    }

    /// Records that `name` cannot be served now; logs and counts only the
    /// first time of an outage.
    fn unavailable(&mut self, name: &str, reason: String, changed: bool) {
        match self.waiting.get_mut(name) {
            Some(known) => {
                tracing::debug!(queue = name, %reason, "still not available");
                known.reason = reason;
            }
            None => {
                match changed {
                    true => tracing::error!(
                        queue = name,
                        %reason,
                        "refused by the broker as configured, in a running worker (a grant revoked, a queue declared anew?); everything else goes on, and it is tried again every {RETRY_EVERY:?}"
                    ),
                    false => tracing::warn!(
                        queue = name,
                        %reason,
                        "not available from the broker; everything else goes on, and it is tried again every {RETRY_EVERY:?}"
                    ),
                }
                metrics::counter!(meters::QUEUE_UNAVAILABLE, "queue" => name.to_owned()).increment(1);
                let since = Instant::now();
                self.waiting.insert(name.to_owned(), NotReady { name: name.to_owned(), reason, since });
            }
        }
    }

    /// Records that `name` is served again, if it was waiting.
    fn available(&mut self, name: &str) {
        if let Some(was) = self.waiting.remove(name) {
            tracing::warn!(queue = name, after = ?was.since.elapsed(), "available from the broker again");
        }
    }
}

/// Declares `part` on a channel opened for it and closed after, within
/// [`DECLARE_TIMEOUT`].
async fn declare_alone(conn: &Connection, part: &Part, kinds: QueueKinds) -> Result<(), BrokerError> {
    let channel = conn.create_channel().await?;
    let declared = tokio::time::timeout(DECLARE_TIMEOUT, declare_part(&channel, part, kinds)).await;
    // A refusal closed the channel already; after a success or no answer, close it.
    if channel.status().connected() {
        bounded("channel close", channel.close(200, "declared".into())).await;
    }
    declared.unwrap_or_else(|_| Err(BrokerError::NoAnswer { what: part.name(), within: DECLARE_TIMEOUT }))
}
