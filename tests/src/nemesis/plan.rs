//! The nemesis's timeline, drawn from a seed: which fault starts when, on
//! what, for how long. The same seed, length and worker count draw the same
//! timeline (ChaCha8 is value-stable across versions), so a failing run is
//! replayed with `scripts/nemesis --seed N --minutes M`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// `kill -9` a worker; it is started again when the fault ends.
    WorkerKill,
    /// `SIGSTOP` a worker for longer than the broker's heartbeat, then `SIGCONT`.
    WorkerPause,
    /// `kill -9` one of a worker's plugin hosts.
    HostKill,
    /// `rabbitmqctl stop` a RabbitMQ node; started again when the fault ends.
    RabbitStop,
    /// `kill -9` a RabbitMQ node; started again when the fault ends.
    RabbitKill,
    /// A RabbitMQ node cut off from the other nodes and from clients
    /// (iptables on its distribution and client ports).
    RabbitPartition,
    /// A worker's broker connection silently dropped (iptables on its
    /// socket) until the fault ends.
    ConnectionCut,
    /// `kill -9` a Galera node; it rejoins when the fault ends.
    GaleraKill,
    /// A Galera node cut off from the group (`gmcast.isolate`).
    GaleraIsolate,
    /// HAProxy killed and started again when the fault ends.
    HaproxyRestart,
    /// Latency on every Galera node's client port (`tc netem`).
    DbLatency,
    /// The node the producer publishes to stopped while it publishes.
    ProducerNodeLoss,
}

impl Kind {
    /// Every kind, in the order of the report.
    pub const ALL: [Kind; 12] = [
        Kind::WorkerKill,
        Kind::WorkerPause,
        Kind::HostKill,
        Kind::RabbitStop,
        Kind::RabbitKill,
        Kind::RabbitPartition,
        Kind::ConnectionCut,
        Kind::GaleraKill,
        Kind::GaleraIsolate,
        Kind::HaproxyRestart,
        Kind::DbLatency,
        Kind::ProducerNodeLoss,
    ];

    /// Its name in the timeline and the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::WorkerKill => "worker kill -9",
            Kind::WorkerPause => "worker SIGSTOP",
            Kind::HostKill => "plugin host kill -9",
            Kind::RabbitStop => "rabbitmq node stop",
            Kind::RabbitKill => "rabbitmq node kill -9",
            Kind::RabbitPartition => "rabbitmq node partition",
            Kind::ConnectionCut => "worker connection cut",
            Kind::GaleraKill => "galera node kill -9",
            Kind::GaleraIsolate => "galera node isolate",
            Kind::HaproxyRestart => "haproxy restart",
            Kind::DbLatency => "database latency",
            Kind::ProducerNodeLoss => "producer's node lost",
        }
    }

    /// What it acts on: one of the run's workers, RabbitMQ nodes, Galera
    /// nodes, or the one proxy / the database links / the producer's node.
    pub fn target(self) -> Target {
        match self {
            Kind::WorkerKill | Kind::WorkerPause | Kind::HostKill | Kind::ConnectionCut => Target::Worker,
            Kind::RabbitStop | Kind::RabbitKill | Kind::RabbitPartition => Target::RabbitNode,
            Kind::GaleraKill | Kind::GaleraIsolate => Target::GaleraNode,
            Kind::HaproxyRestart => Target::Proxy,
            Kind::DbLatency => Target::Links,
            Kind::ProducerNodeLoss => Target::ProducerNode,
        }
    }

    /// How long it lasts, in seconds, from `rng`.
    fn duration(self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Kind::HostKill => 0.0,
            Kind::WorkerKill => rng.random_range(1.0..10.0),
            // Past the broker's heartbeat (the worker asks for 10 s, so the
            // broker closes at 20 s at the latest): it drops the worker and
            // redelivers what the worker held.
            Kind::WorkerPause => rng.random_range(30.0..90.0),
            Kind::HaproxyRestart => rng.random_range(0.5..5.0),
            Kind::ConnectionCut => rng.random_range(10.0..60.0),
            Kind::DbLatency => rng.random_range(10.0..60.0),
            _ => rng.random_range(10.0..60.0),
        }
    }
}

/// What a kind of fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One of the workers.
    Worker,
    /// One of the RabbitMQ nodes.
    RabbitNode,
    /// One of the Galera nodes.
    GaleraNode,
    /// HAProxy.
    Proxy,
    /// The workers' database links.
    Links,
    /// RabbitMQ node 0, the producer's first.
    ProducerNode,
}

/// One fault of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds from the run's start.
    pub at_s: f64,
    /// What.
    pub kind: Kind,
    /// Which worker or node (0-based); 0 for the proxy and the links.
    pub target: usize,
    /// Seconds it lasts.
    pub for_s: f64,
    /// For database latency: milliseconds added each way.
    pub delay_ms: u32,
}

impl Event {
    /// When it ends, in seconds from the run's start.
    pub fn ends_s(&self) -> f64 {
        self.at_s + self.for_s
    }
}

/// The whole timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The seed it was drawn from.
    pub seed: u64,
    /// The run's length in seconds.
    pub run_s: f64,
    /// When the quiet tail starts: every fault has ended by then.
    pub quiet_from_s: f64,
    /// Its faults, by start time.
    pub events: Vec<Event>,
}

/// What the timeline is drawn over.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The run's length in seconds.
    pub run_s: f64,
    /// The workers.
    pub workers: usize,
    /// Until when (seconds from the start) the producer publishes.
    pub producing_until_s: f64,
    /// Mean seconds between fault starts.
    pub mean_gap_s: f64,
}

/// At most this many RabbitMQ nodes out at once: two of three keep the
/// quorum queues' quorum (losing two is its own scenario in the cluster tests).
const RABBIT_OUT: usize = 1;
/// At most this many Galera nodes out at once: two keep the primary component.
const GALERA_OUT: usize = 1;

/// When the quiet tail of a run of `run_s` seconds starts: the last
/// quarter, at least a minute.
pub fn quiet_from(run_s: f64) -> f64 {
    run_s - (run_s / 4.0).max(60.0)
}

/// Draws the timeline for `seed` over `shape`. Faults overlap freely across
/// targets; one target carries one fault at a time; every fault ends before
/// the quiet tail (the last quarter of the run, at least 60 s).
pub fn draw(seed: u64, shape: Shape) -> Timeline {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let quiet_from_s = quiet_from(shape.run_s);
    let mut events: Vec<Event> = Vec::new();
    let mut at = rng.random_range(5.0..15.0);
    while at < quiet_from_s {
        let kind = Kind::ALL[rng.random_range(0..Kind::ALL.len())];
        let for_s = kind.duration(&mut rng).min(quiet_from_s - at);
        let delay_ms = if kind == Kind::DbLatency { rng.random_range(50..400) } else { 0 };
        let target = match kind.target() {
            Target::Worker => rng.random_range(0..shape.workers),
            Target::RabbitNode | Target::GaleraNode => rng.random_range(0..3),
            Target::Proxy | Target::Links | Target::ProducerNode => 0,
        };
        let candidate = Event { at_s: at, kind, target, for_s, delay_ms };
        if fits(&events, &candidate, shape) {
            events.push(candidate);
        }
        // Exponential gaps: faults arrive at random, and so overlap.
        let u: f64 = rng.random_range(0.0..1.0);
        at += -shape.mean_gap_s * (1.0 - u).ln();
    }
    Timeline { seed, run_s: shape.run_s, quiet_from_s, events }
}

/// Whether `e` may run beside the faults already drawn.
fn fits(events: &[Event], e: &Event, shape: Shape) -> bool {
    if e.kind == Kind::ProducerNodeLoss && e.at_s >= shape.producing_until_s {
        return false;
    }
    let overlapping: Vec<&Event> = events.iter().filter(|o| o.at_s <= e.ends_s() && e.at_s <= o.ends_s()).collect();
    let same_target = |o: &&Event| o.kind.target() == e.kind.target() && o.target == e.target;
    // The producer's node is RabbitMQ node 0.
    let rabbit = |o: &Event| matches!(o.kind.target(), Target::RabbitNode | Target::ProducerNode);
    let rabbit_node = |o: &Event| if o.kind.target() == Target::ProducerNode { 0 } else { o.target };
    match e.kind.target() {
        Target::RabbitNode | Target::ProducerNode => {
            overlapping.iter().filter(|o| rabbit(o)).count() < RABBIT_OUT
                && !overlapping.iter().any(|o| rabbit(o) && rabbit_node(o) == rabbit_node(e))
        }
        Target::GaleraNode => overlapping.iter().filter(|o| o.kind.target() == Target::GaleraNode).count() < GALERA_OUT,
        Target::Worker => {
            // One worker always runs, so the run never waits on restarts alone.
            let down = overlapping.iter().filter(|o| o.kind.target() == Target::Worker).count();
            !overlapping.iter().any(same_target) && down + 1 < shape.workers.max(2)
        }
        Target::Proxy | Target::Links => !overlapping.iter().any(same_target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape { run_s: 1800.0, workers: 3, producing_until_s: 900.0, mean_gap_s: 20.0 }
    }

    #[test]
    fn a_seed_draws_the_same_timeline_every_time() {
        assert_eq!(draw(7, shape()), draw(7, shape()));
        assert_ne!(draw(7, shape()).events, draw(8, shape()).events);
    }

    #[test]
    fn every_fault_ends_before_the_quiet_tail_and_kinds_overlap() {
        let t = draw(42, shape());
        assert!(t.events.iter().all(|e| e.ends_s() <= t.quiet_from_s + 1e-9));
        assert!(t.quiet_from_s <= 1800.0 - 450.0);
        // Over half an hour every kind is drawn, and some faults overlap.
        for kind in Kind::ALL {
            assert!(t.events.iter().any(|e| e.kind == kind), "{kind:?} never drawn");
        }
        let overlaps = t.events.windows(2).filter(|w| w[1].at_s < w[0].ends_s()).count();
        assert!(overlaps > 10, "{overlaps} overlaps");
    }

    #[test]
    fn at_most_one_rabbitmq_node_and_one_galera_node_are_out_at_once() {
        for seed in 0..50 {
            let t = draw(seed, shape());
            for e in &t.events {
                let with = |pred: fn(Kind) -> bool| {
                    t.events.iter().filter(|o| pred(o.kind) && o.at_s <= e.at_s && e.at_s < o.ends_s()).count()
                };
                let rabbit = |k: Kind| matches!(k.target(), Target::RabbitNode | Target::ProducerNode);
                assert!(with(rabbit) <= 1, "seed {seed}: two RabbitMQ nodes out at {}", e.at_s);
                assert!(with(|k| k.target() == Target::GaleraNode) <= 1, "seed {seed}");
                assert!(
                    e.kind != Kind::ProducerNodeLoss || e.at_s < 900.0,
                    "seed {seed}: the producer's node lost after it stopped"
                );
            }
        }
    }
}
