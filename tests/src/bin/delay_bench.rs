//! Countdowns in the broker, measured (issue "Countdowns live in the
//! broker"): prints figures, asserts nothing.
//!
//! 1. Memory: N schedules (default 100,000) are polled once by a
//!    `celerity worker` process and then wait on a long countdown (default
//!    1 hour). The worker's RSS is sampled every second while they are
//!    polled and for a while after; the broker's delay queues must hold all
//!    of them.
//! 2. Lateness: schedules with countdowns of 1, 10 and 60 s; for each next
//!    poll, (the moment the worker started it) − (its eta), from the attempt
//!    log (`started_at` of the poll minus `next_poll_at` of the one before).
//!
//! Usage: delay_bench [--schedules N] [--countdown SECS] [--samples N] [--settle SECS]
//! Needs the services up and a built `celerity` (CELERITY_BIN, else
//! target/release/celerity, else target/debug/celerity).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use broker_proto::{FieldTable, delay, topology};
use celerity_tests::procfs::rss_kib;
use celerity_tests::workload::{count, insert_rows, publish_first_polls};
use celerity_tests::{
    TestDatabase, Vhost, bench_celerity_bin, confirmed_channel, declare_framework_queue, example_worker,
    migrated_database,
};
use diesel::prelude::*;
use diesel::sql_types::Double;
use lapin::options::QueueDeclareOptions;

struct Args {
    schedules: usize,
    countdown: u64,
    samples: usize,
    settle: u64,
}

fn args() -> Args {
    let mut a = Args { schedules: 100_000, countdown: 3600, samples: 200, settle: 30 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = || pair.get(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--schedules" => a.schedules = value() as usize,
            "--countdown" => a.countdown = value(),
            "--samples" => a.samples = value() as usize,
            "--settle" => a.settle = value(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

async fn depth(ch: &lapin::Channel, queue: &str) -> u64 {
    ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .map(|q| u64::from(q.message_count()))
        .unwrap_or(0)
}

async fn delay_depth(ch: &lapin::Channel) -> u64 {
    let mut total = 0;
    for n in 0..delay::LEVELS {
        total += depth(ch, &delay::level_name(n)).await;
    }
    total
}

fn start_worker(vhost: &Vhost, db: &TestDatabase, log: &str) -> Child {
    example_worker(bench_celerity_bin(), &vhost.url(), &db.url())
        .args(["--concurrency", "32"])
        .args(["--queues", "plugin_schedule", "--log-format", "json"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("start celerity worker")
}

#[tokio::main]
async fn main() {
    let a = args();
    println!("celerity binary: {}", bench_celerity_bin().display());
    memory(&a).await;
    lateness(&a).await;
}

async fn memory(a: &Args) {
    println!("\n== {} schedules waiting on {} s countdowns ==", a.schedules, a.countdown);
    let vhost = Vhost::create();
    let db = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let started = Instant::now();
    insert_rows(&db, "m", a.schedules, 2, a.countdown);
    println!("rows inserted in {:.1} s", started.elapsed().as_secs_f64());
    let log = std::env::temp_dir().join("celerity-delay-bench-worker.log");
    let mut worker = start_worker(&vhost, &db, log.to_str().unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(worker.id());
    let t0 = Instant::now();
    // Sample RSS all along, publishing included.
    let pid = worker.id();
    let sampler_peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_idle));
    let sampler = {
        let peak = sampler_peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    publish_first_polls(&ch, "m", a.schedules).await;
    println!("first polls published in {:.1} s", t0.elapsed().as_secs_f64());
    let mut peak = rss_idle;
    let mut samples = Vec::new();
    let polled_at = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(worker.id());
        peak = peak.max(rss);
        let polled = count(&db, "SELECT COUNT(*) AS n FROM schedule_schedule WHERE invoke_count = 2");
        samples.push((t0.elapsed().as_secs(), rss, polled));
        if polled as usize >= a.schedules {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            panic!("not all polled within an hour");
        }
    };
    let settle_start = Instant::now();
    let mut settle_rss = Vec::new();
    while settle_start.elapsed() < Duration::from_secs(a.settle) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle_rss.push(rss_kib(worker.id()));
    }
    sampler.abort();
    peak = peak.max(sampler_peak.load(std::sync::atomic::Ordering::Relaxed));
    let waiting = delay_depth(&ch).await;
    let in_queue = depth(&ch, topology::SCHEDULE_QUEUE.name).await;
    let polled = count(&db, "SELECT COUNT(*) AS n FROM schedule_schedule WHERE invoke_count = 2 AND state = 2");
    let _ = worker.kill();
    let _ = worker.wait();
    for (t, rss, polled) in samples.iter().step_by((samples.len() / 10).max(1)) {
        println!("  t={t:>4} s  rss={:>6.1} MiB  polled={polled}", *rss as f64 / 1024.0);
    }
    let (settle_min, settle_max) =
        (settle_rss.iter().min().copied().unwrap_or(0), settle_rss.iter().max().copied().unwrap_or(0));
    println!(
        "polled once: {polled} of {} in {:.1} s ({:.0} polls/s)",
        a.schedules,
        polled_at.as_secs_f64(),
        a.schedules as f64 / polled_at.as_secs_f64()
    );
    println!(
        "waiting in the broker's delay queues: {waiting}; in plugin_schedule: {in_queue}; lost: {}",
        a.schedules as i64 - waiting as i64 - in_queue as i64
    );
    println!(
        "worker RSS: idle {:.1} MiB, peak {:.1} MiB, over the {} s after: {:.1}..{:.1} MiB",
        rss_idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        a.settle,
        settle_min as f64 / 1024.0,
        settle_max as f64 / 1024.0
    );
}

async fn lateness(a: &Args) {
    println!("\n== countdown lateness: (worker started the poll) - (eta), {} schedules per countdown ==", a.samples);
    let vhost = Vhost::create();
    let db = migrated_database();
    let (_conn, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    for countdown in [1u64, 10, 60] {
        insert_rows(&db, &format!("c{countdown:02}-"), a.samples, 2, countdown);
    }
    let log = std::env::temp_dir().join("celerity-lateness-bench-worker.log");
    let mut worker = start_worker(&vhost, &db, log.to_str().unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    for countdown in [1u64, 10, 60] {
        publish_first_polls(&ch, &format!("c{countdown:02}-"), a.samples).await;
    }
    let total = 3 * a.samples as i64;
    let start = Instant::now();
    while count(&db, "SELECT COUNT(*) AS n FROM schedule_schedule WHERE state = 4") < total {
        assert!(start.elapsed() < Duration::from_secs(300), "lateness run did not finish");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    #[derive(QueryableByName)]
    struct Late {
        #[diesel(sql_type = Double)]
        late_ms: f64,
    }
    for countdown in [1u64, 10, 60] {
        let rows: Vec<Late> = diesel::sql_query(format!(
            "SELECT TIMESTAMPDIFF(MICROSECOND, p.next_poll_at, n.started_at) / 1000.0 AS late_ms \
             FROM celerity_attempt p JOIN celerity_attempt n ON n.trace_id = p.trace_id AND n.attempt = p.attempt + 1 \
             WHERE p.trace_id LIKE 'c{countdown:02}-%' AND p.next_poll_at IS NOT NULL ORDER BY late_ms"
        ))
        .load(&mut db.connect())
        .unwrap();
        let pct = |p: f64| rows.get(((rows.len() as f64 - 1.0) * p).round() as usize).map_or(f64::NAN, |r| r.late_ms);
        println!(
            "  countdown {countdown:>2} s: n={} p50={:.0} ms p99={:.0} ms min={:.0} ms max={:.0} ms",
            rows.len(),
            pct(0.5),
            pct(0.99),
            pct(0.0),
            pct(1.0)
        );
    }
}
