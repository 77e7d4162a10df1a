//! Each fault of the timeline, done to the stack and undone: one thread per
//! fault sleeps to its start, breaks its target, sleeps its length, and
//! mends it, recording when it really began and ended.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::checker::Window;
use super::plan::{Event, Kind, Target};
use super::stack::{Stack, WorkerShape};
use crate::firewall::Chain;

/// A fault as done: the window the checker reads, and what went wrong
/// doing it (the harness's trouble, reported beside the verdicts).
#[derive(Debug, Clone)]
pub struct Done {
    /// When it began and ended.
    pub window: Window,
    /// The event it did.
    pub event: Event,
    /// Why it could not be done or undone, if so.
    pub trouble: Option<String>,
}

/// Seconds since the epoch, now.
pub fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// Runs every event of `events` against `stack` from `start`, each in its
/// own thread, and returns what was done once all have ended.
pub fn run_all(stack: &Stack, events: &[Event], start: Instant, shape: WorkerShape) -> Vec<Done> {
    let done = Mutex::new(Vec::new());
    // One RabbitMQ fault and one Galera fault at a time, from its start to
    // the end of its mending, as the timeline draws them: a stop can take
    // longer than drawn, and a node restarted while another is cut off
    // waits for that node's tables (and would hold the heal behind it).
    let (rabbit_slot, galera_slot) = (Mutex::new(()), Mutex::new(()));
    std::thread::scope(|s| {
        for event in events {
            let (done, rabbit_slot, galera_slot) = (&done, &rabbit_slot, &galera_slot);
            s.spawn(move || {
                std::thread::sleep(
                    (start + Duration::from_secs_f64(event.at_s)).saturating_duration_since(Instant::now()),
                );
                let slot = match event.kind.target() {
                    Target::RabbitNode | Target::ProducerNode => Some(rabbit_slot),
                    Target::GaleraNode => Some(galera_slot),
                    Target::Worker | Target::Proxy | Target::Links => None,
                };
                let _held = slot.map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
                // The worker process a worker fault hits, read before it does.
                let worker = (event.kind.target() == Target::Worker).then(|| worker_pid(stack, event.target)).flatten();
                let node = match event.kind.target() {
                    Target::RabbitNode => Some(event.target),
                    Target::ProducerNode => Some(0),
                    _ => None,
                };
                let from = now_s();
                println!(
                    "{:>7.1} s  begin {:<26} target {} for {:.1} s (drawn at {:.1} s)",
                    start.elapsed().as_secs_f64(),
                    event.kind.name(),
                    event.target,
                    event.for_s,
                    event.at_s
                );
                let mut trouble = begin(stack, event).err();
                std::thread::sleep(Duration::from_secs_f64(event.for_s));
                if let Err(e) = end(stack, event, shape) {
                    trouble.get_or_insert(e);
                }
                let to = now_s();
                println!(
                    "{:>7.1} s  end   {:<26} target {}{}",
                    start.elapsed().as_secs_f64(),
                    event.kind.name(),
                    event.target,
                    trouble.as_deref().map(|t| format!("  (trouble: {t})")).unwrap_or_default()
                );
                let window = Window { kind: event.kind.name().into(), from, to, worker, node };
                done.lock().expect("done").push(Done { window, event: event.clone(), trouble });
            });
        }
    });
    let mut done = done.into_inner().expect("done");
    done.sort_by(|a, b| a.window.from.total_cmp(&b.window.from));
    done
}

/// Breaks the target.
fn begin(stack: &Stack, e: &Event) -> Result<(), String> {
    match e.kind {
        Kind::WorkerKill => signal_worker(stack, e.target, "-KILL"),
        Kind::WorkerPause => signal_worker(stack, e.target, "-STOP"),
        Kind::HostKill => {
            let pid = worker_pid(stack, e.target).ok_or("the worker is not running")?;
            let hosts = children(pid);
            let host = hosts.first().ok_or("the worker has no plugin host running")?;
            signal(*host, "-KILL")
        }
        Kind::RabbitStop => {
            stack.rabbit.lock().expect("rabbit").nodes[e.target].stop();
            Ok(())
        }
        Kind::ProducerNodeLoss => {
            stack.rabbit.lock().expect("rabbit").nodes[0].stop();
            Ok(())
        }
        Kind::RabbitKill => {
            stack.rabbit.lock().expect("rabbit").nodes[e.target].kill9();
            Ok(())
        }
        Kind::RabbitPartition => stack.rabbit.lock().expect("rabbit").partition(e.target, true),
        Kind::ConnectionCut => cut_connections(stack, e.target, true),
        Kind::GaleraKill => {
            stack.galera.lock().expect("galera").kill9(e.target);
            Ok(())
        }
        Kind::GaleraIsolate => stack.galera.lock().expect("galera").set_isolated(e.target, true),
        Kind::HaproxyRestart => {
            stack.galera.lock().expect("galera").kill_proxy();
            Ok(())
        }
        Kind::DbLatency => {
            stack.db_link.set_delay(Duration::from_millis(u64::from(e.delay_ms)));
            Ok(())
        }
    }
}

/// Mends the target, and waits until it is back where that has a clear sign.
fn end(stack: &Stack, e: &Event, shape: WorkerShape) -> Result<(), String> {
    match e.kind {
        Kind::WorkerKill => {
            stack.start_worker(e.target, shape);
            Ok(())
        }
        Kind::WorkerPause => signal_worker(stack, e.target, "-CONT"),
        Kind::HostKill => Ok(()),
        Kind::RabbitStop | Kind::RabbitKill | Kind::ProducerNodeLoss => {
            let node = if e.kind == Kind::ProducerNodeLoss { 0 } else { e.target };
            // A restarted node waits for its peers' tables, as long as
            // RabbitMQ's own ten tries of 30 s; one that does not come back
            // by then is reported, and fails the run.
            let mut rabbit = stack.rabbit.lock().unwrap_or_else(|p| p.into_inner());
            let patience = Duration::from_secs(300);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rabbit.nodes[node].launch_within(patience)))
                .map_err(|_| format!("RabbitMQ node {node} did not come back"))
        }
        Kind::RabbitPartition => stack.rabbit.lock().expect("rabbit").partition(e.target, false),
        Kind::ConnectionCut => cut_connections(stack, e.target, false),
        Kind::GaleraKill => {
            stack.galera.lock().expect("galera").relaunch(e.target);
            wait_galera_ready(stack, e.target)
        }
        Kind::GaleraIsolate => {
            stack.galera.lock().expect("galera").set_isolated(e.target, false)?;
            wait_galera_ready(stack, e.target)
        }
        Kind::HaproxyRestart => {
            stack.galera.lock().expect("galera").spawn_proxy();
            Ok(())
        }
        Kind::DbLatency => {
            stack.db_link.set_delay(Duration::ZERO);
            Ok(())
        }
    }
}

fn wait_galera_ready(stack: &Stack, i: usize) -> Result<(), String> {
    let start = Instant::now();
    while !stack.galera.lock().expect("galera").ready(i) {
        if start.elapsed() > Duration::from_secs(180) {
            return Err(format!("Galera node {i} not ready 180 s after it was mended"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

fn worker_pid(stack: &Stack, i: usize) -> Option<u32> {
    let mut slot = stack.workers[i].lock().expect("worker slot");
    let child = slot.child.as_mut()?;
    child.running().then(|| child.pid())
}

fn signal_worker(stack: &Stack, i: usize, sig: &str) -> Result<(), String> {
    // The slot is held from the signal to the reaping, so the supervisor
    // never sees the killed process as one that exited on its own.
    let mut slot = stack.workers[i].lock().expect("worker slot");
    let Some(child) = slot.child.as_mut() else { return Err("the worker is not running".into()) };
    if !child.running() {
        return Err("the worker is not running".into());
    }
    let pid = child.pid();
    signal(pid, sig)?;
    if sig == "-KILL" {
        // Reaped now, so the restart starts a new process in the slot.
        slot.child = None;
    }
    Ok(())
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let out = Command::new("kill").arg(sig).arg(pid.to_string()).output().map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}

/// A process's children (a worker's plugin hosts), from `/proc`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut kids: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect();
    kids.sort_unstable();
    kids
}

/// Drops (or lets back) the packets of worker `i`'s connections to the
/// broker: found with `ss` by process id and the nodes' ports, cut by
/// their local ports in an iptables chain of the run's.
fn cut_connections(stack: &Stack, i: usize, cut: bool) -> Result<(), String> {
    let chain = cuts(stack);
    let rules_file = stack.dir.join(format!("cut-{i}.rules"));
    if !cut {
        let rules = std::fs::read_to_string(&rules_file).unwrap_or_default();
        for port in rules.lines() {
            chain.drop_tcp(&["--sport", port], false)?;
            chain.drop_tcp(&["--dport", port], false)?;
        }
        let _ = std::fs::remove_file(&rules_file);
        return Ok(());
    }
    let pid = worker_pid(stack, i).ok_or("the worker is not running")?;
    let out = Command::new("ss").args(["-tnpH", "state", "established"]).output().map_err(|e| e.to_string())?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let needle = format!("pid={pid},");
    let ports: Vec<String> = listing
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local = cols.get(2)?.rsplit_once(':')?.1;
            let peer: u16 = cols.get(3)?.rsplit_once(':')?.1.parse().ok()?;
            stack.rabbit_ports.contains(&peer).then(|| local.to_owned())
        })
        .collect();
    if ports.is_empty() {
        return Err("the worker has no broker connection".into());
    }
    for port in &ports {
        chain.drop_tcp(&["--sport", port], true)?;
        chain.drop_tcp(&["--dport", port], true)?;
    }
    std::fs::write(&rules_file, ports.join("\n")).map_err(|e| e.to_string())
}

/// The run's chain of connection cuts.
fn cuts(stack: &Stack) -> Chain {
    Chain::named(format!("celerity-cut-{}", stack.rabbit_ports[0]))
}

/// Removes the run's connection-cut chain.
pub fn clear_cuts(stack: &Stack) {
    cuts(stack).remove();
}
