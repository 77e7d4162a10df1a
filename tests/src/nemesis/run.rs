//! One nemesis run: draws the timeline and the workload from the seed,
//! starts the stack, lets the framework's producer invoke the workload
//! while the faults run, waits through the quiet tail for the system to
//! converge, then reads the history and checks it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel::{Connection, MysqlConnection};

use super::checker::{self, History, Verdict};
use super::history;
use super::inject::{self, Done};
use super::plan::{self, Kind, Shape, Timeline};
use super::stack::{Stack, WorkerKind, WorkerShape};
use super::supervise;
use super::workload::{self, Invoked, PREFIX};

/// What a run is.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed of the timeline and the workload.
    pub seed: u64,
    /// The run's length.
    pub minutes: f64,
    /// Workers and their concurrency.
    pub workers: WorkerShape,
    /// The workload's size.
    pub size: workload::Size,
    /// Mean seconds between fault starts.
    pub mean_gap_s: f64,
    /// The longest stall that passes.
    pub stall_limit_s: f64,
    /// Where the run's files go (a fresh folder if none).
    pub out: Option<PathBuf>,
}

/// What a run found.
pub struct Outcome {
    /// One verdict per check.
    pub verdicts: Vec<Verdict>,
    /// Whether every judged check passed and every fault was done.
    pub pass: bool,
    /// The run's folder: timeline, report, logs, ledger.
    pub dir: PathBuf,
}

/// Runs the nemesis with `python` as the project's interpreter.
pub async fn run(python: &Path, opts: Options) -> Outcome {
    let dir = opts.out.clone().unwrap_or_else(crate::temp_dir);
    std::fs::create_dir_all(&dir).expect("the run's folder");
    let run_s = opts.minutes * 60.0;
    // The producer invokes until the last schedules' polls just reach the
    // quiet tail, so the workload runs under faults the whole time.
    let longest_s = f64::from(opts.size.max_polls * opts.size.max_interval_s);
    let quiet = plan::quiet_from(run_s);
    let producing_until_s = (quiet - longest_s).max(quiet / 2.0);
    let shape = Shape { run_s, workers: opts.workers.count, producing_until_s, mean_gap_s: opts.mean_gap_s };
    let timeline = plan::draw(opts.seed, shape);
    std::fs::write(dir.join("timeline.json"), serde_json::to_string_pretty(&timeline).expect("json")).expect("write");
    print_timeline(&timeline);
    let specs = workload::draw(opts.seed, opts.size);
    std::fs::write(dir.join("specs.json"), serde_json::to_string(&specs).expect("json")).expect("write");

    println!(
        "starting the stack (3 RabbitMQ nodes, 3 Galera nodes, HAProxy, {} {} workers)",
        opts.workers.count,
        opts.workers.kind.name()
    );
    let stack = Arc::new(Stack::start(python, &dir, opts.workers).await);
    let start = Instant::now();
    let specs_arg = format!("@{}", dir.join("specs.json").display());
    let spread = format!("{}", shape.producing_until_s);
    let mut producer =
        stack.project_process(&["produce-plan", &specs_arg, &spread, "2", "60"], &dir.join("producer.jsonl"));
    let until = format!("{}", inject::now_s() + run_s + 60.0);
    let mut callbacks = stack.project_process(&["callbacks-waiting", PREFIX, &until], &dir.join("callbacks.jsonl"));

    let stop_watching = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let (stack, stop, shape) = (stack.clone(), stop_watching.clone(), opts.workers);
        std::thread::spawn(move || supervise::watch(&stack, shape, &stop))
    };
    let faults = {
        let (stack, events, shape) = (stack.clone(), timeline.events.clone(), opts.workers);
        std::thread::spawn(move || inject::run_all(&stack, &events, start, shape))
    };
    let done: Vec<Done> =
        tokio::task::spawn_blocking(move || faults.join().expect("the fault threads")).await.expect("join");
    println!("{:>7.1} s  every fault has ended; the quiet tail", start.elapsed().as_secs_f64());

    // Converge: every invoked schedule final, and the run's whole length
    // gone; or the run's end with schedules still open.
    let base = stack.galera.lock().expect("galera").base();
    let db_url = stack.project.db.url_via(base.trim_start_matches("mysql://root@"));
    // The quiet tail is whole even when mending ran late (a node that took
    // long to start): the system gets all of it to converge.
    let tail = Duration::from_secs_f64(run_s - timeline.quiet_from_s);
    let deadline = (start + Duration::from_secs_f64(run_s)).max(Instant::now() + tail);
    loop {
        let producer_done = producer.try_wait().ok().flatten().is_some();
        let open =
            MysqlConnection::establish(&db_url).ok().and_then(|mut c| history::rows(&mut c, PREFIX).ok()).map(|rows| {
                rows.values()
                    .filter(|r| {
                        r.state == celerity_db::State::Poll.code() || r.state == celerity_db::State::Callback.code()
                    })
                    .count()
            });
        let whole = start.elapsed().as_secs_f64() >= run_s;
        if producer_done && open == Some(0) && whole {
            println!("{:>7.1} s  the run's end: every schedule is final", start.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() >= deadline {
            println!("{:>7.1} s  the run's end: {open:?} schedules still open", start.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let ended_at = inject::now_s();
    // What a worker holds in flight when the last row turns final is acked a
    // moment later: give the queues until then to drain.
    let queues = drain_queues(&stack, Duration::from_secs(30)).await;
    stop_watching.store(true, Ordering::Relaxed);
    let exits = supervisor.join().expect("the supervisor");
    let _ = producer.kill();
    let _ = callbacks.kill();
    let _ = producer.wait();
    let _ = callbacks.wait();
    inject::clear_cuts(&stack);
    stack.keep_logs();

    let invoked = read_invoked(&dir.join("producer.jsonl"));
    let mut conn = MysqlConnection::establish(&db_url).expect("the database at the end");
    let (ledger, torn) = history::ledger(&stack.ledger_dir());
    let mut planned = BTreeMap::new();
    let mut producer_errors: BTreeMap<String, u64> = BTreeMap::new();
    let by_id: BTreeMap<&str, &workload::Spec> = specs.iter().map(|s| (s.trace_id.as_str(), s)).collect();
    for said in &invoked {
        let Some(spec) = by_id.get(said.spec.as_str()) else { continue };
        if let Some(err) = &said.err {
            let kind = err.split(':').next().unwrap_or(err).to_owned();
            *producer_errors.entry(kind).or_default() += 1;
        }
        if let Some(p) = workload::planned_after(spec, said) {
            planned.insert(said.trace_id.clone(), p);
        }
    }
    let invoked_specs: std::collections::BTreeSet<&str> = invoked.iter().map(|i| i.spec.as_str()).collect();
    let never = specs.len() - invoked_specs.len();
    if never > 0 {
        producer_errors.insert("never invoked".into(), never as u64);
    }
    let succeeded = invoked.iter().filter(|i| i.err.is_none()).count();
    let h = History {
        planned,
        rows: history::rows(&mut conn, PREFIX).expect("rows"),
        // The framework's worker keeps no attempt log.
        attempts: (opts.workers.kind == WorkerKind::Celerity)
            .then(|| history::attempts(&mut conn, PREFIX).expect("attempt log")),
        ledger,
        queues,
        faults: done.iter().map(|d| d.window.clone()).collect(),
        swept: history::swept(&mut conn).expect("sweeps"),
        ended_at,
        callbacks_sent: read_callbacks(&dir.join("callbacks.jsonl")),
        callback_node: stack.callback_node,
    };
    let mut verdicts = checker::check(&h, opts.stall_limit_s);
    let troubles: Vec<String> = done
        .iter()
        .filter_map(|d| d.trouble.as_ref().map(|t| format!("{} at {:.1} s: {t}", d.event.kind.name(), d.event.at_s)))
        .collect();
    verdicts.push(Verdict {
        check: "producer",
        pass: None,
        detail: format!(
            "{succeeded} of {} schedules invoked; {} invokes answered an error {producer_errors:?}",
            specs.len(),
            producer_errors.values().sum::<u64>()
        ),
        examples: Vec::new(),
        figures: serde_json::json!({"errors": producer_errors, "torn_ledger_lines": torn}),
    });
    verdicts.push(supervise::verdict(&exits));
    verdicts.push(faults_verdict(&done, &troubles));
    let pass = checker::passed(&verdicts);
    let report = serde_json::json!({
        "seed": opts.seed,
        "minutes": opts.minutes,
        "worker": opts.workers.kind.name(),
        "workers": opts.workers.count,
        "schedules": specs.len(),
        "verdicts": verdicts,
        "pass": pass,
        "elapsed_s": start.elapsed().as_secs_f64(),
    });
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report).expect("json")).expect("write");
    Outcome { verdicts, pass, dir }
}

/// Faults done by kind; a fault the harness could not do or undo fails the run.
fn faults_verdict(done: &[Done], troubles: &[String]) -> Verdict {
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for d in done.iter().filter(|d| d.trouble.is_none()) {
        *by_kind.entry(d.event.kind.name()).or_default() += 1;
    }
    let list: Vec<String> =
        Kind::ALL.iter().filter_map(|k| by_kind.get(k.name()).map(|n| format!("{} {n}", k.name()))).collect();
    // A fault with no target to act on (a host kill while the worker has
    // none running) is not the system's failure; one not undone would be.
    let unmended: Vec<String> =
        troubles.iter().filter(|t| t.contains("did not come back") || t.contains("not ready")).cloned().collect();
    Verdict {
        check: "faults",
        pass: Some(unmended.is_empty()),
        detail: format!("{} done: {}; {} not done", by_kind.values().sum::<u64>(), list.join(", "), troubles.len()),
        examples: troubles.to_vec(),
        figures: serde_json::json!({"by_kind": by_kind, "troubles": troubles}),
    }
}

fn print_timeline(t: &Timeline) {
    println!("seed {} · {:.0} s · faults until {:.0} s, then quiet", t.seed, t.run_s, t.quiet_from_s);
    for e in &t.events {
        let extra = if e.kind == Kind::DbLatency { format!(" (+{} ms each way)", e.delay_ms) } else { String::new() };
        println!("  {:>7.1} s  {:<26} target {} for {:>5.1} s{extra}", e.at_s, e.kind.name(), e.target, e.for_s);
    }
}

/// The producer's answers, one per invoke.
fn read_invoked(path: &Path) -> Vec<Invoked> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// When the callback API answered that it sent each schedule's callback.
fn read_callbacks(path: &Path) -> BTreeMap<String, f64> {
    #[derive(serde::Deserialize)]
    struct Sent {
        trace_id: String,
        at: f64,
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Sent>(l).ok()).map(|s| (s.trace_id, s.at)).collect()
}

/// Waits up to `patience` for every queue to be empty; the depths at the end.
async fn drain_queues(stack: &Stack, patience: Duration) -> BTreeMap<String, u64> {
    let start = Instant::now();
    loop {
        let listing = {
            let rabbit = stack.rabbit.lock().expect("rabbit");
            let node = rabbit.nodes.iter().find(|n| n.running()).expect("a running node");
            node.ctl(&["list_queues", "-q", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"])
        };
        let depths = history::queue_depths(&listing);
        if depths.values().all(|n| *n == 0) || start.elapsed() >= patience {
            return depths;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
