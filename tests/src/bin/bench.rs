//! Workload W1, measured for every contender in one run: N schedules of the
//! example plugin with P polls each at interval 0, created as the
//! framework's producer creates them (row, then a Celery message on
//! `plugin_schedule`), run until all are final. Prints figures; asserts
//! nothing about speed.
//!
//! Contenders (`--contenders`, comma-separated, default all):
//! - `celerity-1`, `celerity-2`: one or two `celerity worker` processes;
//! - `celerity-1-framework-queue`: one worker sending its next polls to
//!   `plugin_schedule` (`--next-poll-queue plugin_schedule`), as before its
//!   own queue existed: what that queue gains;
//! - `raw`: the bare loop of this binary's `raw` mode (lapin + diesel, C
//!   deliveries in flight): select by trace_id, update the row, publish the
//!   next message with confirms, ack;
//! - `python-threads`, `python-prefork`: a Python Celery 5 worker running the
//!   same task with pymysql (`tests/python/bench_worker.py`), `-P threads -c
//!   100` and `-P prefork -c 2`;
//! - `celerity-python`: one worker running the plugin project's Python
//!   plugin `1.0.0` (the example plugin's twin) in its plugin hosts;
//! - `framework-prefork`, `framework-threads`, `framework-template`: the
//!   framework's own Celery worker (bk-plugin-framework 2.3.15) with the
//!   same Python plugin, `-P prefork -c 2`, `-P threads -c 100`, and as the
//!   plugin template runs it, `-P threads -c 500`;
//! - `celerity-1-cluster`: one worker on a 3-node RabbitMQ cluster of its
//!   own (a failover list of the three), Celerity's own queues quorum, the
//!   framework's classic;
//! - `celerity-1-traced`, `celerity-1-traced-unsampled`: one worker with
//!   OpenTelemetry on (blueapps' settings), exporting over OTLP/gRPC to a
//!   receiver that only counts, every poll sampled (`always_on`), or none
//!   (`parentbased_always_off`, blueapps' default: W1's producer sends no
//!   trace context, so every run is a root and is not sampled).
//!
//! For each: polls/s (from the first landed poll to the last), wall time
//! (from start-up), worker CPU seconds per 1,000 polls, peak RSS of the
//! worker processes, and the CPU `mariadbd` and RabbitMQ (`beam.smp`) used
//! meanwhile; then the ratios of Celerity to raw and to the better Python.
//!
//! With `--scaling`, a second table follows on the same data size: Celerity
//! with 1, 2 and 4 worker processes (each at `--inflight`), and one worker at
//! concurrency 1, 8, 32 and 128.
//!
//! With `--finished-rows N`, the database first holds N schedules finished
//! a day earlier with their attempt logs, as earlier runs leave it (the
//! cost curve). With `--perf`, `perf stat` counts each worker's system calls.
//! Context switches per poll come from `/proc` in every run.
//!
//! Usage: bench [--schedules N] [--polls P] [--contenders LIST] [--inflight C] [--finished-rows N] [--perf] [--scaling]
//!        bench raw --broker URL --db URL --inflight C

use std::process::{Child, Command, Stdio};

use celerity_tests::otlp::{Answer, Receiver};
use std::time::{Duration, Instant};

use broker_proto::topology;
use celerity_tests::plugin_project;
use celerity_tests::procfs::{cpu_secs_named, tree_cpu_secs, tree_rss_kib, tree_switches};
use celerity_tests::rabbit_cluster::RabbitCluster;
use celerity_tests::workload::{W1_CONTENDERS, count, insert_finished, insert_rows, publish_first_polls};
use celerity_tests::{
    TestDatabase, Vhost, bench_celerity_bin, confirmed_channel, declare_framework_queue, migrated_database, python,
    python_script,
};

struct Args {
    schedules: usize,
    polls: i64,
    contenders: Vec<String>,
    inflight: u16,
    scaling: bool,
    finished_rows: usize,
    perf: bool,
}

fn args(argv: &[String]) -> Args {
    let mut a = Args {
        schedules: 10_000,
        polls: 3,
        contenders: W1_CONTENDERS.iter().map(|s| s.to_string()).collect(),
        inflight: 32,
        scaling: false,
        finished_rows: 0,
        perf: false,
    };
    let mut argv: Vec<String> = argv.to_vec();
    if let Some(at) = argv.iter().position(|x| x == "--scaling") {
        argv.remove(at);
        a.scaling = true;
    }
    if let Some(at) = argv.iter().position(|x| x == "--perf") {
        argv.remove(at);
        a.perf = true;
    }
    for pair in argv.chunks(2) {
        let value = pair.get(1).unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        let number = || value.parse::<u64>().unwrap_or_else(|_| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--schedules" => a.schedules = number() as usize,
            "--polls" => a.polls = number() as i64,
            "--inflight" => a.inflight = number() as u16,
            "--finished-rows" => a.finished_rows = number() as usize,
            "--contenders" => {
                a.contenders = value.split(',').map(str::to_owned).collect();
                for c in &a.contenders {
                    assert!(W1_CONTENDERS.contains(&c.as_str()), "unknown contender {c}; known: {W1_CONTENDERS:?}");
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// One contender's figures.
struct Figures {
    name: String,
    polls: i64,
    wall: Duration,
    busy: Duration,
    worker_cpu: f64,
    peak_rss_kib: u64,
    db_cpu: f64,
    broker_cpu: f64,
    correct: usize,
    /// Stopped making progress with schedules still open.
    stalled: bool,
    /// Context switches of the workers' threads.
    switches: u64,
    /// System calls of the workers, when counted with `--perf`.
    syscalls: Option<Syscalls>,
}

impl Figures {
    fn polls_per_sec(&self) -> f64 {
        self.polls as f64 / self.busy.as_secs_f64().max(1e-9)
    }
    fn cpu_per_1000(&self) -> f64 {
        self.worker_cpu * 1000.0 / self.polls.max(1) as f64
    }
    fn per_poll(&self, n: u64) -> f64 {
        n as f64 / self.polls.max(1) as f64
    }
}

fn spawn(contender: &str, k: usize, broker: &str, db: &TestDatabase, inflight: u16, env: &[(String, String)]) -> Child {
    let log = std::env::temp_dir().join(format!("celerity-bench-{contender}-{k}.log"));
    let stderr = Stdio::from(std::fs::File::create(&log).expect("bench log"));
    let mut cmd = match contender {
        "raw" => {
            let mut c = Command::new(std::env::current_exe().expect("own path"));
            c.args(["raw", "--broker", broker, "--db", &db.url(), "--inflight", &inflight.to_string()]);
            c
        }
        "celerity-python" => {
            // The plugin project's Python plugin 1.0.0 in Celerity's hosts
            // (one per CPU), the plugin runtime's settings in the environment.
            let mut c = Command::new(bench_celerity_bin());
            c.args(["worker", "--python"])
                .arg(python())
                .args(["--broker-url", broker, "--database-url", &db.url()])
                .args(["--queues", "plugin_schedule", "--concurrency", &inflight.to_string()])
                .args(["--hostname", &format!("celerity@bench{k}"), "--sweep-interval", "0"])
                .args(["--http-addr", "127.0.0.1:0", "--without-events"])
                .envs(plugin_project::env(db, broker))
                .current_dir(plugin_project::dir())
                .env("RUST_LOG", "warn");
            c
        }
        framework if framework.starts_with("framework-") => {
            // The framework's own Celery worker with the same Python plugin.
            let (pool, n) = match framework {
                "framework-threads" => ("threads", "100"),
                // As the plugin template's Procfile runs it.
                "framework-template" => ("threads", "500"),
                _ => ("prefork", "2"),
            };
            let mut c = Command::new(python());
            c.args(["-m", "celery", "-A", "plugin_project.celery_app", "worker", "-P", pool, "-c", n])
                .args(["-Q", "plugin_schedule", "--without-gossip", "--without-mingle", "-l", "WARNING"])
                .envs(plugin_project::env(db, broker))
                .current_dir(plugin_project::dir());
            c
        }
        c if c.starts_with("celerity") => {
            let mut c = Command::new(bench_celerity_bin());
            c.args(["worker", "--example-plugin", "--broker-url", broker, "--database-url", &db.url()])
                .args(["--queues", "plugin_schedule", "--concurrency", &inflight.to_string()])
                .args(["--hostname", &format!("celerity@bench{k}"), "--sweep-interval", "0"])
                .args(["--http-addr", "127.0.0.1:0"])
                // The Python contenders run without -E: no events on either side.
                .arg("--without-events")
                .env("RUST_LOG", "warn");
            if contender.ends_with("framework-queue") {
                c.args(["--next-poll-queue", topology::SCHEDULE_QUEUE.name]);
            }
            if contender.ends_with("-cluster") {
                // The recommended cluster setting: Celerity's own queues replicated.
                c.args(["--celerity-queue-type", "quorum"]);
            }
            c
        }
        c => {
            let (pool, n) = if c == "python-threads" { ("threads", "100") } else { ("prefork", "2") };
            let mut c = Command::new(python());
            c.arg(python_script("bench_worker.py")).args([
                "--broker",
                broker,
                "--db",
                &db.url(),
                "--pool",
                pool,
                "--concurrency",
                n,
            ]);
            c
        }
    };
    cmd.envs(env.iter().cloned());
    cmd.stdout(Stdio::null()).stderr(stderr).spawn().unwrap_or_else(|e| panic!("start {contender}: {e}"))
}

/// Tracing on, as blueapps' settings turn it on, into `receiver`: every
/// poll sampled, or (`-unsampled`) blueapps' default, which samples no run
/// that starts a trace.
fn tracing_env(contender: &str, receiver: &Receiver) -> Vec<(String, String)> {
    let sampler = if contender.ends_with("-unsampled") { "parentbased_always_off" } else { "always_on" };
    [
        ("ENABLE_OTEL_TRACE", "true".to_owned()),
        ("BKAPP_OTEL_GRPC_HOST", format!("http://127.0.0.1:{}", receiver.grpc)),
        ("BKAPP_OTEL_SERVICE_NAME", "celerity-bench".to_owned()),
        ("BKAPP_OTEL_SAMPLER", sampler.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Worker processes for a contender: `celerity-N` runs N, the rest one
/// (whose children, plugin hosts or pool processes, count with it).
fn processes(contender: &str) -> usize {
    contender.strip_prefix("celerity-").and_then(|n| n.parse().ok()).unwrap_or(1)
}

async fn run(contender: &str, a: &Args) -> Figures {
    let vhost = Vhost::create();
    let db = migrated_database();
    // `-cluster` contenders run on a 3-node cluster of their own, through a
    // failover list that starts at node 0, the producer on node 0 too.
    let cluster = contender.ends_with("-cluster").then(RabbitCluster::start);
    let broker = cluster.as_ref().map_or_else(|| vhost.url(), |c| c.failover_url(0));
    let (_conn, ch) = match &cluster {
        Some(c) => {
            let conn = celerity_tests::connect(&c.url(0)).await;
            let ch = conn.create_channel().await.expect("channel");
            ch.confirm_select(lapin::options::ConfirmSelectOptions::default()).await.expect("confirms");
            (conn, ch)
        }
        None => confirmed_channel(&vhost).await,
    };
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    insert_finished(&db, a.finished_rows, a.polls);
    insert_rows(&db, "w", a.schedules, a.polls, 0);
    publish_first_polls(&ch, "w", a.schedules).await;
    let processes = processes(contender);
    let (db0, broker0) = (cpu_secs_named("mariadbd"), cpu_secs_named("beam.smp"));
    let updated_before = global_status(&db, "Handler_update");
    let started = Instant::now();
    let receiver = contender.contains("-traced").then(|| Receiver::start(Answer::Count));
    let env = receiver.as_ref().map(|r| tracing_env(contender, r)).unwrap_or_default();
    let mut workers: Vec<Child> = (0..processes).map(|k| spawn(contender, k, &broker, &db, a.inflight, &env)).collect();
    // Attached once polls land, when the workers' threads are all up.
    let mut perfs: Vec<(Child, std::path::PathBuf)> = Vec::new();
    let total = a.schedules as i64 * a.polls;
    // The run's own rows only (a range of the primary key): the finished
    // history is not scanned ten times a second.
    let done_sql = "SELECT COUNT(*) AS n FROM schedule_schedule WHERE trace_id LIKE 'w%' AND state IN (4, 5)";
    let polled_sql = "SELECT CAST(COALESCE(SUM(invoke_count - 1), 0) AS SIGNED) AS n FROM schedule_schedule WHERE trace_id LIKE 'w%'";
    let mut first_poll = None;
    let mut peak_rss = 0;
    let mut cpu = 0.0;
    let deadline = Duration::from_secs(1800);
    // A contender that makes no progress for this long has stranded schedules.
    let stall = Duration::from_secs(30);
    let (mut last_polled, mut last_progress) = (0, started.elapsed());
    let mut stalled = false;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_rss = peak_rss.max(workers.iter().map(|w| tree_rss_kib(w.id())).sum());
        cpu = workers.iter().map(|w| tree_cpu_secs(w.id())).sum::<f64>().max(cpu);
        // Progress from the server's row-update counter, which costs nothing
        // to read: scanning the run's rows ten times a second would cost the
        // server more as the run grows, and bend the cost curve.
        let polled = global_status(&db, "Handler_update") - updated_before;
        if first_poll.is_none() && polled > 0 {
            first_poll = Some(started.elapsed());
            if a.perf {
                perfs = workers.iter().map(perf_stat).collect();
            }
        }
        if polled != last_polled {
            (last_polled, last_progress) = (polled, started.elapsed());
        }
        if polled >= total && count(&db, done_sql) >= a.schedules as i64 {
            break;
        }
        if first_poll.is_some() && started.elapsed() - last_progress > stall {
            stalled = true;
            break;
        }
        for w in &mut workers {
            if let Ok(Some(status)) = w.try_wait() {
                panic!("{contender} exited early with {status}; see its log in {}", std::env::temp_dir().display());
            }
        }
        assert!(started.elapsed() < deadline, "{contender} did not finish within {deadline:?}");
    }
    // A stalled run is measured up to its last progress.
    let wall = if stalled { last_progress } else { started.elapsed() };
    cpu = workers.iter().map(|w| tree_cpu_secs(w.id())).sum::<f64>().max(cpu);
    let (db1, broker1) = (cpu_secs_named("mariadbd"), cpu_secs_named("beam.smp"));
    let switches = workers.iter().map(|w| tree_switches(w.id())).sum();
    let syscalls = (!perfs.is_empty()).then(|| {
        let counted: Vec<Syscalls> = perfs.iter_mut().map(|(p, out)| perf_syscalls(p, out)).collect();
        Syscalls::sum(&counted)
    });
    for w in &mut workers {
        let _ = Command::new("kill").arg("-TERM").arg(w.id().to_string()).status();
    }
    for w in &mut workers {
        let waited = Instant::now();
        while w.try_wait().ok().flatten().is_none() && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = w.kill();
        let _ = w.wait();
    }
    if let Some(receiver) = &receiver {
        // Sent by the workers' shutdown, which flushes what is queued.
        println!("{contender}: the collector received {} spans for {total} polls", receiver.count());
    }
    let correct = count(
        &db,
        &format!(
            "SELECT COUNT(*) AS n FROM schedule_schedule WHERE trace_id LIKE 'w%' AND state = 4 AND invoke_count = {}",
            a.polls + 1
        ),
    ) as usize;
    let polls = if stalled { count(&db, polled_sql) } else { total };
    Figures {
        name: contender.to_owned(),
        polls,
        stalled,
        wall,
        busy: wall - first_poll.unwrap_or_default(),
        worker_cpu: cpu,
        peak_rss_kib: peak_rss,
        db_cpu: db1 - db0,
        broker_cpu: broker1 - broker0,
        correct,
        switches,
        syscalls,
    }
}

/// A global status counter of the server (`SHOW GLOBAL STATUS`).
fn global_status(db: &TestDatabase, name: &str) -> i64 {
    count(
        db,
        &format!(
            "SELECT CAST(VARIABLE_VALUE AS SIGNED) AS n FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = '{name}'"
        ),
    )
}

/// The system calls `--perf` names apart; the rest are counted in the total.
const NAMED_SYSCALLS: [&str; 10] =
    ["futex", "recvfrom", "sendto", "poll", "epoll_wait", "write", "read", "writev", "getrandom", "sched_yield"];

/// System calls of the workers once polls landed: all, and each named one.
#[derive(Debug, Clone, Default)]
struct Syscalls {
    total: u64,
    by_call: Vec<(&'static str, u64)>,
}

impl Syscalls {
    fn sum(all: &[Syscalls]) -> Syscalls {
        let by_call = NAMED_SYSCALLS
            .iter()
            .map(|name| (*name, all.iter().flat_map(|s| &s.by_call).filter(|(n, _)| n == name).map(|(_, c)| c).sum()))
            .collect();
        Syscalls { total: all.iter().map(|s| s.total).sum(), by_call }
    }
}

/// `perf stat` counting the system calls of `worker` (every thread, those
/// started later included), all and each named one, into a file.
fn perf_stat(worker: &Child) -> (Child, std::path::PathBuf) {
    let out = std::env::temp_dir().join(format!("celerity-bench-perf-{}.csv", worker.id()));
    let mut events = vec!["raw_syscalls:sys_enter".to_owned()];
    events.extend(NAMED_SYSCALLS.iter().map(|n| format!("syscalls:sys_enter_{n}")));
    let perf = Command::new("perf")
        .args(["stat", "-e", &events.join(","), "-x", ",", "-o"])
        .arg(&out)
        .args(["-p", &worker.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("--perf needs perf: {e}"));
    (perf, out)
}

/// Stops `perf` and reads its counts.
fn perf_syscalls(perf: &mut Child, out: &std::path::Path) -> Syscalls {
    let _ = Command::new("kill").arg("-INT").arg(perf.id().to_string()).status();
    let _ = perf.wait();
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let count = |event: &str| {
        text.lines()
            .find(|l| l.split(',').nth(2) == Some(event))
            .and_then(|l| l.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {event} count from perf in {}: {text}", out.display()))
    };
    Syscalls {
        total: count("raw_syscalls:sys_enter"),
        by_call: NAMED_SYSCALLS.iter().map(|n| (*n, count(&format!("syscalls:sys_enter_{n}")))).collect(),
    }
}

fn report(a: &Args, all: &[Figures]) {
    println!(
        "\nW1: {} schedules x {} polls at interval 0 = {} polls; deliveries in flight {}",
        a.schedules,
        a.polls,
        a.schedules as i64 * a.polls,
        a.inflight
    );
    if a.finished_rows > 0 {
        println!("the tables also hold {} schedules finished earlier, with their attempt logs", a.finished_rows);
    }
    println!(
        "\n| contender | polls/s | wall s | worker CPU s / 1,000 polls | peak RSS MiB | mariadbd CPU s | RabbitMQ CPU s | worker switches / poll | worker syscalls / poll | final as expected |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in all {
        println!(
            "| {}{} | {:.0} | {:.1} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {}/{} |",
            f.name,
            if f.stalled { " (stalled: schedules left open, no progress for 30 s)" } else { "" },
            f.polls_per_sec(),
            f.wall.as_secs_f64(),
            f.cpu_per_1000(),
            f.peak_rss_kib as f64 / 1024.0,
            f.db_cpu,
            f.broker_cpu,
            f.per_poll(f.switches),
            f.syscalls.as_ref().map_or_else(|| "-".to_owned(), |s| format!("{:.1}", f.per_poll(s.total))),
            f.correct,
            a.schedules
        );
    }
    if all.iter().any(|f| f.syscalls.is_some()) {
        println!("\nSystem calls per poll, by call (`perf stat`, from the first poll):\n");
        println!("| contender | {} | other |", NAMED_SYSCALLS.join(" | "));
        println!("|---|{}---|", "---|".repeat(NAMED_SYSCALLS.len()));
        for f in all {
            let Some(s) = &f.syscalls else { continue };
            let named: u64 = s.by_call.iter().map(|(_, c)| c).sum();
            let cells: Vec<String> = s.by_call.iter().map(|(_, c)| format!("{:.1}", f.per_poll(*c))).collect();
            println!("| {} | {} | {:.1} |", f.name, cells.join(" | "), f.per_poll(s.total.saturating_sub(named)));
        }
    }
    let get = |name: &str| all.iter().find(|f| f.name == name);
    let python = all
        .iter()
        .filter(|f| f.name.starts_with("python"))
        .max_by(|x, y| x.polls_per_sec().partial_cmp(&y.polls_per_sec()).unwrap_or(std::cmp::Ordering::Equal));
    let framework = all
        .iter()
        .filter(|f| f.name.starts_with("framework-") && !f.stalled)
        .max_by(|x, y| x.polls_per_sec().partial_cmp(&y.polls_per_sec()).unwrap_or(std::cmp::Ordering::Equal));
    if let (Some(ours), Some(theirs)) = (get("celerity-python"), framework) {
        println!(
            "celerity-python / {}: {:.2}x the polls/s, {:.3} of the CPU per 1,000 polls (worker and plugin hosts)",
            theirs.name,
            ours.polls_per_sec() / theirs.polls_per_sec(),
            ours.cpu_per_1000() / theirs.cpu_per_1000().max(1e-9)
        );
    }
    if let Some(one) = get("celerity-1") {
        println!();
        if let Some(raw) = get("raw") {
            println!("celerity-1 / raw: {:.2} of the raw limit's polls/s", one.polls_per_sec() / raw.polls_per_sec());
        }
        if let Some(py) = python {
            println!(
                "celerity-1 / {}: {:.2}x the polls/s, {:.3} of the CPU per 1,000 polls",
                py.name,
                one.polls_per_sec() / py.polls_per_sec(),
                one.cpu_per_1000() / py.cpu_per_1000().max(1e-9)
            );
        }
    }
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("raw") {
        return raw::run(&argv[1..]).await;
    }
    let a = args(&argv);
    println!("celerity binary: {}", bench_celerity_bin().display());
    let mut all = Vec::new();
    for c in &a.contenders {
        let f = run(c, &a).await;
        let stalled = if f.stalled { "; STALLED with schedules left open" } else { "" };
        println!(
            "{}: {:.0} polls/s, {}/{} final as expected{stalled}",
            f.name,
            f.polls_per_sec(),
            f.correct,
            a.schedules
        );
        all.push(f);
    }
    report(&a, &all);
    if a.scaling {
        scaling(&a).await;
    }
}

/// The scaling curve: worker processes, then concurrency within one worker.
async fn scaling(a: &Args) {
    let mut points = Vec::new();
    for (workers, inflight) in [(1, a.inflight), (2, a.inflight), (4, a.inflight), (1, 1), (1, 8), (1, 128)] {
        let at = Args { inflight, contenders: Vec::new(), scaling: false, ..*a };
        let f = run(&format!("celerity-{workers}"), &at).await;
        println!("celerity x{workers} at concurrency {inflight}: {:.0} polls/s", f.polls_per_sec());
        points.push((workers, inflight, f));
    }
    points.sort_by_key(|(w, c, _)| (*w != 1, *w, *c));
    println!("\nScaling, W1 {} x {}:", a.schedules, a.polls);
    println!(
        "\n| worker processes | concurrency each | polls/s | worker CPU s / 1,000 polls | peak RSS MiB (all) | mariadbd CPU s | RabbitMQ CPU s | final as expected |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (workers, inflight, f) in &points {
        println!(
            "| {workers} | {inflight} | {:.0}{} | {:.3} | {:.1} | {:.1} | {:.1} | {}/{} |",
            f.polls_per_sec(),
            if f.stalled { " (stalled)" } else { "" },
            f.cpu_per_1000(),
            f.peak_rss_kib as f64 / 1024.0,
            f.db_cpu,
            f.broker_cpu,
            f.correct,
            a.schedules
        );
    }
}

/// The raw limit: the four operations per poll and nothing else.
mod raw {
    use std::sync::Arc;

    use broker_proto::{DecodeOptions, topology};
    use celerity_db::{Db, DbConfig};
    use diesel::prelude::*;
    use diesel::sql_types::{Integer, Longtext, Nullable, Timestamp, Varchar};
    use futures_lite::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    use lapin::types::FieldTable;

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Integer)]
        invoke_count: i32,
        #[diesel(sql_type = Longtext)]
        data: String,
    }

    pub(super) async fn run(argv: &[String]) {
        let get = |flag: &str| {
            argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).cloned().unwrap_or_else(|| {
                panic!("raw needs {flag}");
            })
        };
        let (broker, db_url) = (get("--broker"), get("--db"));
        let inflight: u16 = get("--inflight").parse().expect("--inflight is a number");
        let db = Db::new(DbConfig { pool_size: u32::from(inflight) + 2, ..DbConfig::new(db_url) }).expect("pool");
        let conn = lapin::Connection::connect(&broker, lapin::ConnectionProperties::default()).await.expect("broker");
        let consume = conn.create_channel().await.expect("channel");
        consume.basic_qos(inflight, BasicQosOptions::default()).await.expect("qos");
        let publish = Arc::new(conn.create_channel().await.expect("channel"));
        publish.confirm_select(Default::default()).await.expect("confirms");
        let mut deliveries = consume
            .basic_consume(
                topology::SCHEDULE_QUEUE.name.into(),
                "raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        while let Some(Ok(delivery)) = deliveries.next().await {
            let (db, publish) = (db.clone(), publish.clone());
            tokio::spawn(async move { poll(db, publish, delivery).await });
        }
    }

    async fn poll(db: Db, publish: Arc<lapin::Channel>, delivery: lapin::message::Delivery) {
        let props = celerity::broker::properties::properties_of(&delivery.properties);
        let msg = broker_proto::decode(&props, &delivery.data, &DecodeOptions::default()).expect("a task message");
        let trace_id = msg.kwarg_str("trace_id").expect("trace_id").to_owned();
        // 1. select by trace_id; 2. update the row (the example plugin's step).
        let id = trace_id.clone();
        let next = db
            .call(move |c| {
                let row: Row = diesel::sql_query("SELECT invoke_count, data FROM schedule_schedule WHERE trace_id = ?")
                    .bind::<Varchar, _>(&id)
                    .get_result(c)?;
                let mut data: serde_json::Value = serde_json::from_str(&row.data).expect("data is JSON");
                let polls = data["inputs"]["polls"].as_i64().expect("polls");
                let executions = data["context"]["storage"]["executions"].as_i64().unwrap_or(0) + 1;
                data["context"]["storage"]["executions"] = executions.into();
                let invoke_count = row.invoke_count + 1;
                let done = i64::from(invoke_count) > polls;
                if done {
                    data["context"]["outputs"]["polls_done"] = (executions - 1).into();
                    data["outputs"]["polls_done"] = (executions - 1).into();
                }
                let finish = done.then(|| chrono::Utc::now().naive_utc());
                diesel::sql_query(
                    "UPDATE schedule_schedule SET state = ?, invoke_count = ?, data = ?, finish_at = ? \
                     WHERE trace_id = ? AND invoke_count = ?",
                )
                .bind::<Integer, _>(if done { 4 } else { 2 })
                .bind::<Integer, _>(invoke_count)
                .bind::<Longtext, _>(data.to_string())
                .bind::<Nullable<Timestamp>, _>(finish)
                .bind::<Varchar, _>(&id)
                .bind::<Integer, _>(row.invoke_count)
                .execute(c)?;
                Ok(!done)
            })
            .await
            .expect("database");
        // 3. publish the next message with confirms.
        if next {
            let confirm = celerity_tests::workload::publish_schedule(&publish, &trace_id).await.await.expect("confirm");
            assert!(confirm.is_ack(), "broker refused the next message");
        }
        // 4. ack.
        delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
    }
}
