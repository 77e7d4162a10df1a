//! A short nemesis run in the suite: a fixed seed, three minutes, a small
//! workload, every kind of fault the timeline draws over the clustered
//! stack; it fails on any checker violation. `scripts/nemesis` runs the
//! same at full size.

use celerity_tests::nemesis::run::{Options, run};
use celerity_tests::nemesis::stack::{WorkerKind, WorkerShape};
use celerity_tests::nemesis::workload::Size;

/// The suite's seed: in two minutes its timeline draws 11 of the 12 kinds
/// (all but a RabbitMQ node's clean stop; its kill -9 is drawn), worker,
/// broker and database faults overlapping (printed at the start of the run).
const SEED: u64 = 20262742;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_seeded_nemesis_run_passes_every_check() {
    let options = Options {
        seed: SEED,
        minutes: 3.0,
        workers: WorkerShape { kind: WorkerKind::Celerity, count: 2, concurrency: 8 },
        size: Size { schedules: 60, max_polls: 6, max_interval_s: 2 },
        mean_gap_s: 8.0,
        stall_limit_s: 150.0,
        out: None,
    };
    let outcome = run(&celerity_tests::python(), options).await;
    let lines: Vec<String> = outcome.verdicts.iter().map(ToString::to_string).collect();
    println!("{}\nrun folder: {}", lines.join("\n"), outcome.dir.display());
    assert!(outcome.pass, "the checker found violations:\n{}\nrun folder: {}", lines.join("\n"), outcome.dir.display());
}
