//! The nemesis: a seeded run of overlapping faults over a clustered stack
//! (3 RabbitMQ nodes, 3 Galera nodes behind HAProxy, N workers running the
//! test project's Python plugins), with a checker that reads the whole
//! history at the end. `scripts/nemesis` runs it at full size; the suite
//! runs it small (`tests/tests/nemesis.rs`).
//!
//! - `plan`: the fault timeline from a seed;
//! - `workload`: the schedules from the same seed, and how each should end;
//! - `stack`: the clusters and the workers;
//! - `delay_proxy`: latency on the workers' database links;
//! - `inject`: each fault done and undone;
//! - `history`: what the run left, read back;
//! - `supervise`: workers that exit on their own, restarted and counted;
//! - `checker`: the verdicts, pure;
//! - `run`: one run, start to verdict.

pub mod checker;
pub mod delay_proxy;
pub mod history;
pub mod inject;
pub mod plan;
pub mod run;
pub mod stack;
pub mod supervise;
pub mod workload;
