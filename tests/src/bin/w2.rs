//! Workload W2, polls at real intervals, for every contender in one run: S
//! schedules of the plugin project's stamping plugin (`3.0.0`), each
//! polling P times I seconds apart, created at an even rate over one
//! interval by the framework's own producer (`BKPluginExecutor.execute`,
//! several processes). Each step stamps the wall clock into the schedule's
//! storage; a poll's lateness is its gap to the previous step less I.
//! Prints figures; asserts nothing about speed.
//!
//! Contenders (`--contenders`, comma-separated, default all):
//! - `celerity`: `celerity worker --python` with `--concurrency 500` (the
//!   template's `-c 500`);
//! - `framework-threads`: the framework's worker as the plugin template runs
//!   it, `-P threads -c 500`;
//! - `framework-prefork`: the framework's worker, `-P prefork -c 2`.
//!
//! For each: schedules finished, lateness p50/p90/p99/max, polls/s, the CPU
//! per poll of the worker (with its plugin hosts or pool), `mariadbd` and
//! RabbitMQ, and per poll the messages RabbitMQ received from publishers,
//! routed to queues and dead-lettered through the delay levels (its global
//! counters, from its Prometheus endpoint: the broker must be the run's
//! alone for them to be the run's). The producer's work is in the CPU and
//! message figures too: it is part of the load a real stack carries.
//!
//! With `--capacity`, for each contender a search over S (doubling from
//! `--schedules`, then halving the step between the last pass and the first
//! failure) for the largest S this machine carries at interval I with p99
//! lateness at most 1 s and every schedule finished; each point is printed,
//! as the curve of lateness against offered load.
//!
//! Usage: w2 [--schedules S] [--polls P] [--interval I] [--contenders LIST] [--capacity] [--max-schedules N]

use std::process::Command;
use std::time::{Duration, Instant};

use celerity_tests::plugin_project::{self, Project};
use celerity_tests::procfs::{cpu_secs_named, tree_cpu_secs, tree_rss_kib};
use celerity_tests::workload::try_count;
use celerity_tests::{ChildGuard, python};

/// The contenders W2 knows.
pub const CONTENDERS: [&str; 3] = ["celerity", "framework-threads", "framework-prefork"];

/// Lateness a run may have at p99 and still count as carried (`--capacity`).
const CARRIED_P99: Duration = Duration::from_secs(1);

struct Args {
    schedules: usize,
    polls: u32,
    interval: u32,
    contenders: Vec<String>,
    capacity: bool,
    max_schedules: usize,
}

fn args(argv: &[String]) -> Args {
    let mut a = Args {
        schedules: 500,
        polls: 8,
        interval: 10,
        contenders: CONTENDERS.iter().map(|s| s.to_string()).collect(),
        capacity: false,
        max_schedules: 40_000,
    };
    let mut argv = argv.to_vec();
    if let Some(at) = argv.iter().position(|x| x == "--capacity") {
        argv.remove(at);
        a.capacity = true;
    }
    for pair in argv.chunks(2) {
        let value = pair.get(1).unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        let number = || value.parse::<u64>().unwrap_or_else(|_| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--schedules" => a.schedules = number() as usize,
            "--polls" => a.polls = number() as u32,
            "--interval" => a.interval = number() as u32,
            "--max-schedules" => a.max_schedules = number() as usize,
            "--contenders" => {
                a.contenders = value.split(',').map(str::to_owned).collect();
                for c in &a.contenders {
                    assert!(CONTENDERS.contains(&c.as_str()), "unknown contender {c}; known: {CONTENDERS:?}");
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.schedules > 0 && a.polls > 0 && a.interval > 0, "schedules, polls and interval must be positive");
    a
}

/// One run's figures.
struct Figures {
    contender: String,
    schedules: usize,
    finished: usize,
    /// Every poll's lateness, sorted.
    lateness: Vec<f64>,
    /// Polls landed, from the first poll's stamp to the last.
    polls: usize,
    busy: f64,
    worker_cpu: f64,
    db_cpu: f64,
    broker_cpu: f64,
    peak_rss_kib: u64,
    /// RabbitMQ's message counts over the run.
    broker: BrokerCounts,
    wall: f64,
}

impl Figures {
    fn quantile(&self, q: f64) -> f64 {
        if self.lateness.is_empty() {
            return f64::NAN;
        }
        let at = ((self.lateness.len() as f64 * q).ceil() as usize).clamp(1, self.lateness.len()) - 1;
        self.lateness[at]
    }
    fn per_poll_ms(&self, cpu: f64) -> f64 {
        cpu * 1000.0 / self.polls.max(1) as f64
    }
    fn carried(&self) -> bool {
        self.finished == self.schedules && self.quantile(0.99) <= CARRIED_P99.as_secs_f64()
    }
}

/// The contender's worker on `project`, its log in the temp dir.
fn start(contender: &str, project: &Project) -> ChildGuard {
    let log = std::env::temp_dir().join(format!("celerity-w2-{contender}.log"));
    match contender {
        "celerity" => project.celerity(&["--concurrency", "500", "--without-events", "-l", "WARNING"], log),
        framework => {
            let (pool, n) = if framework == "framework-threads" { ("threads", "500") } else { ("prefork", "2") };
            let mut cmd = Command::new(python());
            cmd.args(["-m", "celery", "-A", "plugin_project.celery_app", "worker", "-P", pool, "-c", n])
                .args(["-Q", "plugin_schedule", "--without-gossip", "--without-mingle", "-l", "WARNING"])
                .envs(project.env())
                .current_dir(plugin_project::dir());
            ChildGuard::spawn(cmd, log)
        }
    }
}

/// RabbitMQ's global message counters (its Prometheus endpoint): messages
/// received from publishers, routed to queues, and dead-lettered on expiry
/// (each a hop through a delay level). Global: a run must have the broker
/// to itself for these to be its own.
#[derive(Clone, Copy, Default)]
struct BrokerCounts {
    received: f64,
    routed: f64,
    dead_lettered: f64,
}

impl BrokerCounts {
    fn read() -> BrokerCounts {
        let url = "http://127.0.0.1:15692/metrics";
        let text = ureq::get(url)
            .call()
            .unwrap_or_else(|e| panic!("RabbitMQ's Prometheus endpoint at {url}: {e}"))
            .body_mut()
            .read_to_string()
            .expect("text from the Prometheus endpoint");
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        BrokerCounts {
            received: sum("rabbitmq_global_messages_received_total"),
            routed: sum("rabbitmq_global_messages_routed_total"),
            dead_lettered: sum("rabbitmq_global_messages_dead_lettered_expired_total"),
        }
    }

    fn since(self, before: BrokerCounts) -> BrokerCounts {
        BrokerCounts {
            received: self.received - before.received,
            routed: self.routed - before.routed,
            dead_lettered: self.dead_lettered - before.dead_lettered,
        }
    }
}

fn run(contender: &str, a: &Args, schedules: usize) -> Figures {
    let project = Project::new(&python());
    let mut worker = start(contender, &project);
    // The worker (and its plugin hosts) start while the first steps are
    // made: every first poll is an interval away.
    std::thread::sleep(Duration::from_secs(3));
    assert!(worker.running(), "{contender} exited at start-up:\n{}", worker.log());
    let (db0, broker0) = (cpu_secs_named("mariadbd"), cpu_secs_named("beam.smp"));
    let cpu0 = tree_cpu_secs(worker.pid());
    let counts0 = BrokerCounts::read();
    let started = Instant::now();
    let inputs = serde_json::json!({"polls": a.polls, "interval": a.interval}).to_string();
    // Enough producer processes for ~150 schedules a second each.
    let rate = schedules as f64 / f64::from(a.interval);
    let procs = ((rate / 150.0).ceil() as usize).clamp(1, 8).to_string();
    let producer = Command::new(python())
        .arg(plugin_project::dir().join("project.py"))
        .args(["produce-paced", "3.0.0", "w", &schedules.to_string(), &a.interval.to_string(), &procs, &inputs])
        .envs(project.env())
        .current_dir(plugin_project::dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(std::env::temp_dir().join("celerity-w2-producer.log")).expect("producer log"))
        .spawn()
        .expect("start the producer");
    let done_sql = "SELECT COUNT(*) AS n FROM schedule_schedule WHERE state IN (4, 5)";
    // Created over one interval, then P intervals of polls; a contender
    // that falls further behind than this is not carrying the load.
    let deadline = Duration::from_secs(u64::from(a.interval) * (u64::from(a.polls) + 1) * 2 + 30);
    let mut producer = producer;
    let mut peak_rss = 0;
    let mut produced = false;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        peak_rss = peak_rss.max(tree_rss_kib(worker.pid()));
        if !produced && let Ok(Some(status)) = producer.try_wait() {
            assert!(status.success(), "the producer failed");
            produced = true;
        }
        if produced && try_count(&project.db, done_sql).unwrap_or(0) >= schedules as i64 {
            break;
        }
        assert!(worker.running(), "{contender} exited:\n{}", worker.log());
        if started.elapsed() > deadline {
            eprintln!("{contender}: {schedules} schedules not all final after {deadline:?}");
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let worker_cpu = tree_cpu_secs(worker.pid()) - cpu0;
    let (db1, broker1) = (cpu_secs_named("mariadbd"), cpu_secs_named("beam.smp"));
    let broker = BrokerCounts::read().since(counts0);
    drop(worker);
    let _ = producer.kill();
    let (lateness, polls, busy, finished) = stamps(&project, a);
    Figures {
        contender: contender.to_owned(),
        schedules,
        finished,
        lateness,
        polls,
        busy,
        worker_cpu,
        db_cpu: db1 - db0,
        broker_cpu: broker1 - broker0,
        peak_rss_kib: peak_rss,
        broker,
        wall,
    }
}

/// Every poll's lateness (sorted), the polls landed, the seconds from the
/// first poll to the last, and the schedules finished with every step.
fn stamps(project: &Project, a: &Args) -> (Vec<f64>, usize, f64, usize) {
    use diesel::prelude::*;
    use diesel::sql_types::{Integer, Longtext};
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        state: i32,
        #[diesel(sql_type = Longtext)]
        data: String,
    }
    let rows: Vec<Row> = diesel::sql_query("SELECT state, data FROM schedule_schedule")
        .load(&mut project.db.connect())
        .expect("read the schedules");
    let interval = f64::from(a.interval);
    let (mut lateness, mut first, mut last, mut finished) = (Vec::new(), f64::MAX, f64::MIN, 0);
    for row in rows {
        let data: serde_json::Value = serde_json::from_str(&row.data).expect("data is JSON");
        let steps: Vec<f64> = data["context"]["storage"]["stamps"]
            .as_array()
            .map(|s| s.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default();
        for pair in steps.windows(2) {
            lateness.push(pair[1] - pair[0] - interval);
            first = first.min(pair[1]);
            last = last.max(pair[1]);
        }
        if row.state == 4 && steps.len() == a.polls as usize + 1 {
            finished += 1;
        }
    }
    lateness.sort_by(f64::total_cmp);
    let polls = lateness.len();
    (lateness, polls, (last - first).max(1e-9), finished)
}

fn header() {
    println!(
        "\n| contender | schedules | offered polls/s | finished | polls stamped | lateness p50 / p90 / p99 / max ms | polls/s | worker CPU ms/poll | mariadbd ms/poll | RabbitMQ ms/poll | whole stack ms/poll | published / poll | routed / poll | delay-level hops / poll | peak RSS MiB | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn row(f: &Figures, a: &Args) {
    let ms = |q: f64| f.quantile(q) * 1000.0;
    let polls = f.polls.max(1) as f64;
    println!(
        "| {} | {} | {:.0} | {}/{} | {}/{} | {:.0} / {:.0} / {:.0} / {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
        f.contender,
        f.schedules,
        f.schedules as f64 / f64::from(a.interval),
        f.finished,
        f.schedules,
        f.polls,
        f.schedules * a.polls as usize,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        f.lateness.last().copied().unwrap_or(f64::NAN) * 1000.0,
        f.polls as f64 / f.busy,
        f.per_poll_ms(f.worker_cpu),
        f.per_poll_ms(f.db_cpu),
        f.per_poll_ms(f.broker_cpu),
        f.per_poll_ms(f.worker_cpu + f.db_cpu + f.broker_cpu),
        f.broker.received / polls,
        f.broker.routed / polls,
        f.broker.dead_lettered / polls,
        f.peak_rss_kib as f64 / 1024.0,
        f.wall
    );
}

/// The largest S carried, doubling then bisecting; every point printed.
fn capacity(contender: &str, a: &Args) -> (Option<usize>, Vec<Figures>) {
    let mut points = Vec::new();
    let (mut pass, mut fail): (Option<usize>, Option<usize>) = (None, None);
    let mut s = a.schedules;
    loop {
        let f = run(contender, a, s);
        let carried = f.carried();
        row(&f, a);
        points.push(f);
        if carried {
            pass = Some(s)
        } else {
            fail = Some(s)
        }
        s = match (pass, fail) {
            (Some(p), None) if p * 2 <= a.max_schedules => p * 2,
            (Some(_), None) => break,
            (None, Some(f)) if f > 50 => f / 2,
            (None, Some(_)) => break,
            (Some(p), Some(f)) if f - p > p / 4 => p + (f - p) / 2,
            (Some(_), Some(_)) => break,
            (None, None) => unreachable!("one run decided"),
        };
    }
    (pass, points)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = args(&argv);
    println!("celerity binary: {}", celerity_tests::celerity_bin().display());
    println!(
        "W2: stamping plugin 3.0.0, {} polls {} s apart per schedule, schedules created evenly over {} s by the framework's producer",
        a.polls, a.interval, a.interval
    );
    if a.capacity {
        let mut carried = Vec::new();
        for c in &a.contenders {
            println!("\ncapacity of {c} (p99 lateness <= {CARRIED_P99:?}, every schedule finished):");
            header();
            let (pass, _) = capacity(c, &a);
            carried.push((c.clone(), pass));
        }
        println!("\n| contender | largest S carried at I = {} s | polls/s |", a.interval);
        println!("|---|---|---|");
        for (c, pass) in carried {
            match pass {
                Some(s) => println!("| {c} | {s} | {:.0} |", s as f64 / f64::from(a.interval)),
                None => println!("| {c} | none tried | - |"),
            }
        }
        return;
    }
    let mut all = Vec::new();
    for c in &a.contenders {
        let f = run(c, &a, a.schedules);
        println!("{c}: {}/{} finished, p99 lateness {:.0} ms", f.finished, f.schedules, f.quantile(0.99) * 1000.0);
        all.push(f);
    }
    header();
    for f in &all {
        row(f, &a);
    }
}
