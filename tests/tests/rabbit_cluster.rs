//! Node loss on a real RabbitMQ cluster: three nodes on this machine (their
//! own names, ports and data, one cookie, joined with `join_cluster`), the
//! framework's queues classic on node 2 as its producers declare them, and
//! Celerity's own queues quorum (`--celerity-queue-type quorum`). Two
//! workers with failover lists start on nodes 0 and 1 while (a) the node a
//! worker is connected to is stopped, (b) the node leading Celerity's quorum
//! queues is stopped, (c) a node is killed with `kill -9`, or (d) the node
//! holding the classic `plugin_schedule` is stopped for a while and started
//! again. Each must end with 0 lost, 0 stranded, each schedule finalised
//! once, and one attempt-log row per poll; each run prints one line with the
//! longest time no poll landed.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use broker_proto::topology;
use celerity_tests::ha::{Progress, wait_all_final, wait_for_landed};
use celerity_tests::ledger::{self, Expect};
use celerity_tests::rabbit_cluster::RabbitCluster;
use celerity_tests::workload::{insert_rows, publish_first_polls};
use celerity_tests::{
    celerity_bin, connect, declare_framework_queue, example_worker, free_local_addr, migrated_database, temp_dir,
};
use lapin::options::ConfirmSelectOptions;

/// How big a run is: `CELERITY_RABBIT_FULL=1` for the issue's 500 × 10.
fn size() -> (usize, i32, Duration) {
    match std::env::var("CELERITY_RABBIT_FULL").as_deref() {
        Ok("1") => (500, 10, Duration::from_secs(20)),
        _ => (100, 6, Duration::from_secs(10)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    StopWorkersNode,
    StopQuorumLeader,
    Kill9,
    StopClassicHome,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::StopWorkersNode => "a: stop the node a worker is connected to",
            Fault::StopQuorumLeader => "b: stop the leader of celerity.schedule",
            Fault::Kill9 => "c: kill -9 a node",
            Fault::StopClassicHome => "d: stop plugin_schedule's node, start it again",
        }
    }
}

fn worker(broker: &str, database: &str, name: &str, dir: &Path) -> Child {
    example_worker(celerity_bin(), broker, database)
        .args(["--concurrency", "8", "--hostname", &format!("celerity@{name}")])
        .args(["--queue-type", "classic", "--celerity-queue-type", "quorum"])
        .args(["--http-addr", &free_local_addr().to_string()])
        .stderr(Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).expect("worker log")))
        .spawn()
        .expect("start celerity worker")
}

async fn scenario(fault: Fault) {
    let (schedules, polls, outage) = size();
    let mut cluster = RabbitCluster::start();
    let db = migrated_database();
    let dir = temp_dir();
    // The framework's producer declares its queues first, from node 2.
    let conn = connect(&cluster.url(2)).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    for q in [topology::SCHEDULE_QUEUE.name, topology::CALLBACK_QUEUE.name, topology::DELETE_QUEUE.name] {
        declare_framework_queue(&ch, q).await;
    }
    assert_eq!(cluster.queue_node(topology::SCHEDULE_QUEUE.name), Some(2));
    let mut workers = vec![
        worker(&cluster.failover_url(0), &db.url(), "a", &dir),
        worker(&cluster.failover_url(1), &db.url(), "b", &dir),
    ];
    let progress = Progress::start(db.url());
    insert_rows(&db, "r", schedules, polls.into(), 1);
    publish_first_polls(&ch, "r", schedules).await;
    let log = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let logs = || format!("a:\n{}\nb:\n{}", log("a"), log("b"));
    let total = schedules as i64 * i64::from(polls);
    wait_for_landed(&progress, total / 3, Duration::from_secs(120), logs).await;
    let target = match fault {
        Fault::StopWorkersNode => 0,
        Fault::StopQuorumLeader => cluster.queue_node(topology::NEXT_POLL_QUEUE).expect("celerity.schedule's leader"),
        Fault::Kill9 => 1,
        Fault::StopClassicHome => 2,
    };
    // The producer's connection goes with node 2; it has published everything.
    drop(ch);
    drop(conn);
    match fault {
        Fault::Kill9 => cluster.nodes[target].kill9(),
        _ => cluster.nodes[target].stop(),
    }
    let lost_at = std::time::Instant::now();
    let mut resubscribed = None;
    if fault == Fault::StopClassicHome {
        tokio::time::sleep(outage).await;
        cluster.nodes[target].launch();
        // Both workers subscribe to the classic queue again when its node is back.
        let back = std::time::Instant::now();
        while cluster.consumers(topology::SCHEDULE_QUEUE.name) != Some(2) {
            assert!(back.elapsed() < Duration::from_secs(30), "plugin_schedule not consumed again:\n{}", logs());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        resubscribed = Some(back.elapsed());
    }
    wait_all_final(&db.url(), &progress, Duration::from_secs(30), Duration::from_secs(180)).await;
    let timeline = progress.finish();
    let expected = (0..schedules).map(|i| (format!("r{i:08}"), Expect::Success { polls })).collect();
    let report = ledger::check(&db, &expected);
    for w in &mut workers {
        assert!(w.try_wait().expect("worker status").is_none(), "a worker exited during the run:\n{}", logs());
        let _ = w.kill();
        let _ = w.wait();
    }
    println!(
        "rabbit scenario=\"{}\" node={target} {report} stall={:.1}s next_poll_after_loss={} resubscribed_after_return={}",
        fault.label(),
        timeline.longest_stall().as_secs_f64(),
        timeline.resumed_after(lost_at).map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64())),
        resubscribed.map_or("n/a".into(), |d| format!("{:.1}s", d.as_secs_f64())),
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
