//! A short nemesis run in the suite: a fixed seed, two and a half minutes
//! (faults for the first 90 s, then a quiet minute), a small workload,
//! over the clustered stack; it fails on any checker violation.
//! `scripts/nemesis` runs the same at full size.

use celerity_tests::nemesis::run::{Options, run};
use celerity_tests::nemesis::stack::{WorkerKind, WorkerShape};
use celerity_tests::nemesis::workload::Size;

/// The suite's seed: in 90 s its timeline draws 10 of the 12 kinds, a 14 s
/// partition among them (not drawn: a RabbitMQ node's clean stop, whose
/// kill -9 is; a connection cut), worker, broker and database faults
/// overlapping. The timeline is printed at the start of the run.
const SEED: u64 = 20264647;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_seeded_nemesis_run_passes_every_check() {
    let options = Options {
        seed: SEED,
        minutes: 2.5,
        workers: WorkerShape { kind: WorkerKind::Celerity, count: 2, concurrency: 8 },
        size: Size { schedules: 60, max_polls: 6, max_interval_s: 2 },
        mean_gap_s: 7.0,
        stall_limit_s: 150.0,
        out: None,
    };
    let outcome = run(&celerity_tests::python(), options).await;
    let lines: Vec<String> = outcome.verdicts.iter().map(ToString::to_string).collect();
    println!("{}\nrun folder: {}", lines.join("\n"), outcome.dir.display());
    assert!(outcome.pass, "the checker found violations:\n{}\nrun folder: {}", lines.join("\n"), outcome.dir.display());
}
