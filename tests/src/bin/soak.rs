//! Memory over a long run: N example-plugin schedules with P polls each at
//! interval 0 (default 50,000 x 20 = 1,000,000 polls) through one `celerity
//! worker` process at its default settings but concurrency, once with nobody
//! reading `/metrics` and once with a scraper every few seconds. The
//! worker's RSS is sampled every few seconds against the polls landed so
//! far; after a warm-up, the least-squares slope of RSS over polls is the
//! growth per poll. Prints figures; asserts nothing.
//!
//! Usage: soak [--schedules N] [--polls P] [--concurrency C] [--sample-secs S]
//!             [--scrape-secs S] [--warmup-share F] [--modes no-scraper,scraper]
//!             [--celerity LABEL=PATH]...
//! The worker logs at `warn` unless `RUST_LOG` says otherwise.
//! Several `--celerity` binaries (e.g. before and after a change) run one
//! after the other with the same workload; without any, the one
//! `CELERITY_BIN` or the build names.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use broker_proto::topology;
use celerity_tests::procfs::rss_kib;
use celerity_tests::workload::{count, insert_rows, publish_first_polls};
use celerity_tests::{
    Vhost, bench_celerity_bin, confirmed_channel, declare_framework_queue, free_local_addr, http_get, migrated_database,
};

struct Args {
    schedules: usize,
    polls: i64,
    concurrency: u32,
    sample: Duration,
    scrape: Duration,
    warmup_share: f64,
    modes: Vec<Mode>,
    binaries: Vec<(String, PathBuf)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    NoScraper,
    Scraper,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::NoScraper => "no scraper",
            Mode::Scraper => "scraper",
        }
    }
}

fn args() -> Args {
    let mut a = Args {
        schedules: 50_000,
        polls: 20,
        concurrency: 32,
        sample: Duration::from_secs(2),
        scrape: Duration::from_secs(5),
        warmup_share: 0.2,
        modes: vec![Mode::NoScraper, Mode::Scraper],
        binaries: Vec::new(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        let number = || value.parse::<f64>().unwrap_or_else(|_| panic!("{} needs a number, got {value}", pair[0]));
        match pair[0].as_str() {
            "--schedules" => a.schedules = number() as usize,
            "--polls" => a.polls = number() as i64,
            "--concurrency" => a.concurrency = number() as u32,
            "--sample-secs" => a.sample = Duration::from_secs_f64(number()),
            "--scrape-secs" => a.scrape = Duration::from_secs_f64(number()),
            "--warmup-share" => a.warmup_share = number(),
            "--modes" => {
                a.modes = value
                    .split(',')
                    .map(|m| match m {
                        "no-scraper" => Mode::NoScraper,
                        "scraper" => Mode::Scraper,
                        other => panic!("unknown mode {other}; known: no-scraper, scraper"),
                    })
                    .collect();
            }
            "--celerity" => {
                let (label, path) = value.split_once('=').unwrap_or_else(|| panic!("--celerity takes LABEL=PATH"));
                assert!(std::path::Path::new(path).exists(), "no binary at {path}");
                a.binaries.push((label.to_owned(), path.into()));
            }
            other => panic!("unknown argument {other}"),
        }
    }
    if a.binaries.is_empty() {
        a.binaries.push(("celerity".into(), bench_celerity_bin()));
    }
    a
}

/// One RSS reading.
#[derive(Clone, Copy)]
struct Sample {
    polls: i64,
    rss_kib: u64,
}

/// One run's figures.
struct Run {
    label: String,
    mode: Mode,
    polls: i64,
    secs: f64,
    scrapes: u64,
    samples: Vec<Sample>,
    warmup_polls: i64,
}

impl Run {
    fn after_warmup(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.polls >= self.warmup_polls)
    }

    /// Least-squares slope of RSS (bytes) over polls after the warm-up.
    fn bytes_per_poll(&self) -> f64 {
        let points: Vec<(f64, f64)> =
            self.after_warmup().map(|s| (s.polls as f64, s.rss_kib as f64 * 1024.0)).collect();
        let n = points.len() as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        sxy / sxx
    }

    fn mib(kib: u64) -> f64 {
        kib as f64 / 1024.0
    }
}

async fn run(a: &Args, label: &str, binary: &PathBuf, mode: Mode) -> Run {
    let vhost = Vhost::create();
    let db = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    insert_rows(&db, "s", a.schedules, a.polls, 0);
    publish_first_polls(&ch, "s", a.schedules).await;
    let http = free_local_addr();
    let log = std::env::temp_dir().join(format!("celerity-soak-{label}-{}.log", mode.name().replace(' ', "-")));
    let mut worker: Child = Command::new(binary)
        .args(["worker", "--broker-url", &vhost.url(), "--database-url", &db.url()])
        .args(example_plugin_flag(binary))
        .args(["--concurrency", &a.concurrency.to_string(), "--http-addr", &http.to_string()])
        .args(["--hostname", &format!("celerity@soak-{label}")])
        // Warnings only unless the caller says otherwise (RUST_LOG=info
        // exercises the per-delivery spans and log lines as well).
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("soak log")))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));

    let stop = Arc::new(AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let scraper = (mode == Mode::Scraper).then(|| {
        let (stop, scrapes, every) = (stop.clone(), scrapes.clone(), a.scrape);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                if matches!(http_get(http, "/metrics"), Ok((200, _))) {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });

    let total = a.schedules as i64 * a.polls;
    let polled_sql = "SELECT CAST(COALESCE(SUM(invoke_count - 1), 0) AS SIGNED) AS n FROM schedule_schedule";
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next_report = total / 10;
    loop {
        tokio::time::sleep(a.sample).await;
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("the worker exited with {status}; see {}", log.display());
        }
        let polls = count(&db, polled_sql);
        samples.push(Sample { polls, rss_kib: rss_kib(worker.id()) });
        if polls >= next_report {
            eprintln!("  {label}, {}: {polls} polls, RSS {:.1} MiB", mode.name(), Run::mib(rss_kib(worker.id())));
            next_report += total / 10;
        }
        if polls >= total {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(4 * 3600), "{label} did not finish within 4 hours");
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(scraper) = scraper {
        let _ = scraper.join();
    }
    let _ = Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
    let _ = worker.wait();
    Run {
        label: label.to_owned(),
        mode,
        polls: total,
        secs,
        scrapes: scrapes.load(Ordering::Relaxed),
        samples,
        warmup_polls: (total as f64 * a.warmup_share) as i64,
    }
}

/// `--example-plugin` for binaries that register the example plugin only
/// when asked; older ones always had it and know no such flag.
fn example_plugin_flag(binary: &PathBuf) -> Vec<&'static str> {
    let help = Command::new(binary).args(["worker", "--help"]).output().map(|o| o.stdout).unwrap_or_default();
    if String::from_utf8_lossy(&help).contains("--example-plugin") { vec!["--example-plugin"] } else { Vec::new() }
}

fn report(a: &Args, runs: &[Run]) {
    println!(
        "\nSoak: {} schedules x {} polls at interval 0 = {} polls, concurrency {}, RSS every {:?}, slope after the first {:.0}% of polls",
        a.schedules,
        a.polls,
        a.schedules as i64 * a.polls,
        a.concurrency,
        a.sample,
        a.warmup_share * 100.0
    );
    println!(
        "\n| binary | /metrics | polls | polls/s | scrapes | RSS after warm-up MiB | RSS at end MiB | min-max after warm-up MiB | slope bytes/poll |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let after: Vec<&Sample> = r.after_warmup().collect();
        let first = after.first().map_or(0, |s| s.rss_kib);
        let last = after.last().map_or(0, |s| s.rss_kib);
        let min = after.iter().map(|s| s.rss_kib).min().unwrap_or(0);
        let max = after.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        println!(
            "| {} | {} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1}-{:.1} | {:.2} |",
            r.label,
            r.mode.name(),
            r.polls,
            r.polls as f64 / r.secs,
            r.scrapes,
            Run::mib(first),
            Run::mib(last),
            Run::mib(min),
            Run::mib(max),
            r.bytes_per_poll()
        );
    }
    println!("\nRSS MiB by polls landed (one column per run):\n");
    let header: Vec<String> = runs.iter().map(|r| format!("{} / {}", r.label, r.mode.name())).collect();
    println!("| polls | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(runs.len()));
    let total = a.schedules as i64 * a.polls;
    for tenth in 1..=10 {
        let at = total * tenth / 10;
        let cells: Vec<String> = runs
            .iter()
            .map(|r| {
                r.samples.iter().find(|s| s.polls >= at).map_or("-".into(), |s| format!("{:.1}", Run::mib(s.rss_kib)))
            })
            .collect();
        println!("| {at} | {} |", cells.join(" | "));
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let mut runs = Vec::new();
    for (label, binary) in &a.binaries {
        println!("{label}: {}", binary.display());
        for &mode in &a.modes {
            let r = run(&a, label, binary, mode).await;
            println!(
                "{label}, {}: {} polls in {:.0} s, slope {:.2} bytes/poll",
                mode.name(),
                r.polls,
                r.secs,
                r.bytes_per_poll()
            );
            runs.push(r);
        }
    }
    report(&a, &runs);
}
