//! Node loss on a real RabbitMQ cluster: three nodes on this machine (their
//! own names, ports and data, one cookie, joined with `join_cluster`), the
//! framework's queues classic on node 2 as its producers declare them, and
//! Celerity's own queues quorum (`--celerity-queue-type quorum`). Two
//! workers with failover lists start on nodes 0 and 1 while (a) the node a
//! worker is connected to is stopped, (b) the node leading Celerity's quorum
//! queues is stopped, (c) a node is killed with `kill -9`, or (d) the node
//! holding the classic `plugin_schedule` is stopped for a while and started
//! again. In (e) a worker is connected to that very node when it stops, so
//! it reconnects (and declares its topology again) while the queue's node
//! is down, and a second worker starts while it is down: both must stay up,
//! keep polling through `celerity.schedule`, and consume `plugin_schedule`
//! again when the node returns. In (f) two nodes stop, so Celerity's quorum
//! queues have no quorum (a consume is never answered, a publish is nacked)
//! while the classic queues' node runs: both workers stay up, hold what they
//! cannot publish, and go on when the nodes return. Each must end with 0 lost, 0 stranded, each
//! schedule finalised once, and one attempt-log row per poll; each run
//! prints one line with the longest time no poll landed.

use std::net::SocketAddr;
use std::path::Path;

use std::time::Duration;

use broker_proto::topology;
use celerity_tests::ha::{Progress, wait_all_final, wait_for_landed};
use celerity_tests::ledger::{self, Expect};
use celerity_tests::rabbit_cluster::RabbitCluster;
use celerity_tests::workload::{insert_rows, publish_first_polls};
use celerity_tests::{
    ChildGuard, celerity_bin, connect, example_worker, free_local_addr, http_get, migrated_database, temp_dir,
    wait_health,
};
use lapin::options::ConfirmSelectOptions;

/// How big a run is: `CELERITY_RABBIT_FULL=1` for the full size (500 × 20;
/// (e) as its issue found it, 300 × 10), with a 20 s outage.
/// Schedules poll long enough to be mid-run when a stopped node is gone
/// (a graceful stop takes seconds), and in (f) while two stay down.
fn size(fault: Fault) -> (usize, i32, Duration) {
    match (std::env::var("CELERITY_RABBIT_FULL").as_deref(), fault) {
        (Ok("1"), Fault::ReconnectWhileClassicHomeDown) => (300, 10, Duration::from_secs(20)),
        (Ok("1"), Fault::NoQuorum) => (300, 60, Duration::from_secs(20)),
        (Ok("1"), _) => (500, 20, Duration::from_secs(20)),
        (_, Fault::NoQuorum) => (100, 40, Duration::from_secs(10)),
        _ => (100, 20, Duration::from_secs(10)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    StopWorkersNode,
    StopQuorumLeader,
    Kill9,
    StopClassicHome,
    ReconnectWhileClassicHomeDown,
    NoQuorum,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::StopWorkersNode => "a: stop the node a worker is connected to",
            Fault::StopQuorumLeader => "b: stop the leader of celerity.schedule",
            Fault::Kill9 => "c: kill -9 a node",
            Fault::StopClassicHome => "d: stop plugin_schedule's node, start it again",
            Fault::ReconnectWhileClassicHomeDown => {
                "e: stop plugin_schedule's node under a worker, start a second while it is down"
            }
            Fault::NoQuorum => "f: stop two nodes (no quorum for celerity.schedule), start them again",
        }
    }

    /// The nodes it stops, given where the queues are.
    fn nodes(self, cluster: &RabbitCluster) -> Vec<usize> {
        match self {
            Fault::StopWorkersNode => vec![0],
            Fault::StopQuorumLeader => {
                vec![cluster.queue_node(topology::NEXT_POLL_QUEUE).expect("celerity.schedule's leader")]
            }
            Fault::Kill9 => vec![1],
            Fault::StopClassicHome | Fault::ReconnectWhileClassicHomeDown => vec![2],
            // The classic queues' node stays.
            Fault::NoQuorum => vec![0, 1],
        }
    }

    /// The queue the workers cannot consume until the nodes return, if any.
    fn held_back(self) -> Option<&'static str> {
        match self {
            Fault::StopWorkersNode | Fault::StopQuorumLeader | Fault::Kill9 => None,
            Fault::StopClassicHome | Fault::ReconnectWhileClassicHomeDown => Some(topology::SCHEDULE_QUEUE.name),
            Fault::NoQuorum => Some(topology::NEXT_POLL_QUEUE),
        }
    }
}

/// Both workers are up and each says, on `/healthz`, that `queue` is not
/// available and why (the reason containing `why`).
async fn both_wait_for(workers: &mut [(ChildGuard, SocketAddr)], queue: &str, why: &str, logs: impl Fn() -> String) {
    for (name, (w, http)) in ["a", "b"].into_iter().zip(workers) {
        assert!(w.running(), "worker {name} exited:\n{}", logs());
        let (status, body) = health(*http).await;
        assert_eq!(status, 503, "worker {name}: {body}");
        let line = body.lines().find(|l| l.starts_with(&format!("broker: {queue} not available for ")));
        assert!(line.is_some_and(|l| l.contains(why)), "worker {name} on {queue}: {body}");
    }
}

/// A worker and its `/healthz` address; killed when dropped, so a failing
/// scenario leaves no worker running.
fn worker(broker: &str, database: &str, name: &str, dir: &Path) -> (ChildGuard, SocketAddr) {
    let http = free_local_addr();
    let mut cmd = example_worker(celerity_bin(), broker, database);
    cmd.args(["--concurrency", "8", "--hostname", &format!("celerity@{name}")])
        .args(["--queue-type", "classic", "--celerity-queue-type", "quorum"])
        .args(["--http-addr", &http.to_string()]);
    (ChildGuard::spawn(cmd, dir.join(format!("{name}.log"))), http)
}

/// `/healthz` of a worker: status and body.
async fn health(http: SocketAddr) -> (u16, String) {
    tokio::task::spawn_blocking(move || http_get(http, "/healthz")).await.unwrap().unwrap_or((0, String::new()))
}

async fn scenario(fault: Fault) {
    let (schedules, polls, outage) = size(fault);
    let mut cluster = RabbitCluster::start();
    let db = migrated_database();
    let dir = temp_dir();
    // The framework's producer declares its queues first, from node 2.
    cluster.declare_framework_queues_from(2).await;
    let conn = connect(&cluster.url(2)).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    assert_eq!(cluster.queue_node(topology::SCHEDULE_QUEUE.name), Some(2));
    // In (e) worker a is on plugin_schedule's node, and b starts once that node is down.
    let reconnecting = fault == Fault::ReconnectWhileClassicHomeDown;
    let mut workers = vec![worker(&cluster.failover_url(if reconnecting { 2 } else { 0 }), &db.url(), "a", &dir)];
    if !reconnecting {
        workers.push(worker(&cluster.failover_url(1), &db.url(), "b", &dir));
    }
    let progress = Progress::start(db.url());
    insert_rows(&db, "r", schedules, polls.into(), 1);
    publish_first_polls(&ch, "r", schedules).await;
    let log = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let logs = || format!("a:\n{}\nb:\n{}", log("a"), log("b"));
    let total = schedules as i64 * i64::from(polls);
    wait_for_landed(&progress, total / 3, Duration::from_secs(120), logs).await;
    let targets = fault.nodes(&cluster);
    // The producer's connection goes with node 2; it has published everything.
    drop(ch);
    drop(conn);
    for &n in &targets {
        match fault {
            Fault::Kill9 => cluster.nodes[n].kill9(),
            _ => cluster.nodes[n].stop(),
        }
    }
    let lost_at = std::time::Instant::now();
    assert!(progress.landed() < total, "the fault came after the run's end; lengthen the run");
    let mut resubscribed = None;
    let mut during_outage = None;
    if let Some(queue) = fault.held_back() {
        if reconnecting {
            workers.push(worker(&cluster.failover_url(2), &db.url(), "b", &dir));
        }
        let landed_at_loss = progress.landed();
        tokio::time::sleep(outage).await;
        match fault {
            Fault::ReconnectWhileClassicHomeDown => {
                both_wait_for(&mut workers, queue, "is down or inaccessible", logs).await;
                // Both kept polling through the quorum celerity.schedule.
                for (_, http) in &workers {
                    let (_, body) = health(*http).await;
                    assert!(!body.contains(topology::NEXT_POLL_QUEUE), "celerity.schedule is consumed: {body}");
                }
                assert!(progress.landed() > landed_at_loss, "no poll landed while the node was down:\n{}", logs());
            }
            Fault::NoQuorum => {
                both_wait_for(&mut workers, queue, "no answer", logs).await;
                assert!(progress.landed() < total, "the outage came after the run's end; lengthen the run");
            }
            _ => {}
        }
        during_outage = Some(progress.landed() - landed_at_loss);
        for &n in &targets {
            cluster.nodes[n].launch();
        }
        // Both workers consume the queue again once its nodes are back.
        let back = std::time::Instant::now();
        while cluster.consumers(queue) != Some(2) {
            assert!(back.elapsed() < Duration::from_secs(30), "{queue} not consumed again:\n{}", logs());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        resubscribed = Some(back.elapsed());
    }
    let mut expected: std::collections::BTreeMap<String, Expect> =
        (0..schedules).map(|i| (format!("r{i:08}"), Expect::Success { polls })).collect();
    if reconnecting {
        // plugin_schedule works again: first polls published to it now are taken.
        let later = schedules / 10;
        let conn = connect(&cluster.url(2)).await;
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        insert_rows(&db, "s", later, polls.into(), 1);
        publish_first_polls(&ch, "s", later).await;
        expected.extend((0..later).map(|i| (format!("s{i:08}"), Expect::Success { polls })));
        for (_, http) in &workers {
            wait_health(*http, 200, Duration::from_secs(10)).await;
        }
    }
    wait_all_final(&db.url(), &progress, Duration::from_secs(30), Duration::from_secs(180)).await;
    let timeline = progress.finish();
    let report = ledger::check(&db, &expected);
    for (w, _) in &mut workers {
        assert!(w.running(), "a worker exited during the run:\n{}", logs());
    }
    println!(
        "rabbit scenario=\"{}\" nodes={targets:?} {report} stall={:.1}s next_poll_after_loss={} consumed_again_after_return={} polls_while_down={}",
        fault.label(),
        // The first batch's: the later one waits for the node by design.
        timeline.longest_stall_up_to(total).as_secs_f64(),
        timeline.resumed_after(lost_at).map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64())),
        resubscribed.map_or("n/a".into(), |d| format!("{:.1}s", d.as_secs_f64())),
        during_outage.map_or("n/a".into(), |n| n.to_string()),
    );
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.stranded, 0, "{report}");
    assert!(report.all_once(), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_the_node_a_worker_is_connected_to() {
    scenario(Fault::StopWorkersNode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn b_stop_the_leader_of_the_quorum_queues() {
    scenario(Fault::StopQuorumLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn c_kill_9_a_node() {
    scenario(Fault::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn d_stop_the_classic_queue_node_and_start_it_again() {
    scenario(Fault::StopClassicHome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e_reconnect_and_start_while_the_classic_queue_node_is_down() {
    scenario(Fault::ReconnectWhileClassicHomeDown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f_stop_two_nodes_so_the_quorum_queues_have_no_quorum() {
    scenario(Fault::NoQuorum).await;
}
