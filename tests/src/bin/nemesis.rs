//! A nemesis run (`scripts/nemesis`): overlapping faults drawn from a seed
//! over the clustered stack, then the checker's verdicts. Prints the
//! timeline, each fault as it begins and ends, one verdict line per check,
//! and a last line `VERDICT pass` or `VERDICT fail`; exits 0 only on pass.
//! The run's folder (timeline.json, report.json, logs, the plugin's ledger)
//! is printed and kept.
//!
//! Usage: nemesis [--seed N] [--minutes M] [--workers W] [--concurrency C]
//!                [--schedules S] [--max-polls P] [--max-interval I]
//!                [--mean-gap SECONDS] [--stall-limit SECONDS] [--out DIR]
//!                [--worker celerity|framework]
//! Defaults: a random seed (printed), 30 minutes, 3 workers of 16, 3,000
//! schedules of up to 30 polls 0-5 s apart, a fault every 20 s on average,
//! a stall limit of 300 s, Celerity's workers. `--worker framework` runs the
//! framework's own Celery worker (prefork, `-c` the concurrency) under the
//! same seed instead: its figures are for comparison, its verdict is not
//! required to pass.

use std::path::PathBuf;

use celerity_tests::nemesis::run::{Options, run};
use celerity_tests::nemesis::stack::{WorkerKind, WorkerShape};
use celerity_tests::nemesis::workload::Size;

fn options() -> Options {
    let mut o = Options {
        seed: rand_seed(),
        minutes: 30.0,
        workers: WorkerShape { kind: WorkerKind::Celerity, count: 3, concurrency: 16 },
        size: Size { schedules: 3000, max_polls: 30, max_interval_s: 5 },
        mean_gap_s: 20.0,
        stall_limit_s: 300.0,
        out: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        let number = || value.parse::<f64>().unwrap_or_else(|_| panic!("{} needs a number, got {value}", pair[0]));
        match pair[0].as_str() {
            "--seed" => o.seed = value.parse().unwrap_or_else(|_| panic!("--seed needs a whole number, got {value}")),
            "--minutes" => o.minutes = number(),
            "--workers" => o.workers.count = number() as usize,
            "--concurrency" => o.workers.concurrency = number() as u32,
            "--schedules" => o.size.schedules = number() as usize,
            "--max-polls" => o.size.max_polls = number() as i32,
            "--max-interval" => o.size.max_interval_s = number() as i32,
            "--mean-gap" => o.mean_gap_s = number(),
            "--stall-limit" => o.stall_limit_s = number(),
            "--out" => o.out = Some(PathBuf::from(value)),
            "--worker" => {
                o.workers.kind = match value.as_str() {
                    "celerity" => WorkerKind::Celerity,
                    "framework" => WorkerKind::Framework,
                    other => panic!("--worker celerity|framework, got {other}"),
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(o.workers.count >= 2, "--workers: at least 2 (one always runs while another is faulted)");
    assert!(o.minutes >= 2.0, "--minutes: at least 2 (the quiet tail alone is a minute)");
    o
}

fn rand_seed() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_fields().0)
}

#[tokio::main]
async fn main() {
    let o = options();
    println!(
        "nemesis: seed {} ({} minutes); replay with scripts/nemesis --seed {} --minutes {}",
        o.seed, o.minutes, o.seed, o.minutes
    );
    let outcome = run(&celerity_tests::python(), o).await;
    for v in &outcome.verdicts {
        println!("{v}");
    }
    println!("run folder: {}", outcome.dir.display());
    println!("VERDICT {}", if outcome.pass { "pass" } else { "fail" });
    std::process::exit(if outcome.pass { 0 } else { 1 });
}
