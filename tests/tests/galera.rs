//! Database faults on a real HA database: a 3-node MariaDB Galera cluster
//! behind HAProxy, started by each test. Two workers run the workload while
//! (a) the node HAProxy routes to is killed, (b) a node a worker uses
//! directly is cut off from the group (1047), (c) two workers write through
//! different nodes with every first poll sent twice (certification conflicts,
//! 1213), or (d) the workers' UPDATE grant is revoked and restored. Celerity
//! must end every scenario with 0 FAIL, 0 stranded, each schedule finalised
//! once and one attempt-log row per poll; the framework's own worker runs
//! (a), (b) and (d) for the README's comparison. Each run prints one line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use broker_proto::topology;
use celerity_tests::galera::GaleraCluster;
use celerity_tests::ha::{Progress, Size, Timeline, row_report, wait_all_final, wait_for_landed};
use celerity_tests::ledger::{self, Expect};
use celerity_tests::plugin_project::Project;
use celerity_tests::workload::{insert_rows, publish_first_polls, publish_schedule};
use celerity_tests::{
    TestDatabase, TestUser, Vhost, celerity_bin, connect, declare_framework_queue, example_worker, free_local_addr,
    python, temp_dir, wait_health,
};
use lapin::options::ConfirmSelectOptions;

/// Retries that outlast the longest outage of the full-size run (30 s):
/// countdowns 1, 2, 4, then 8 s, ten of them, about 63 s in all.
const PATIENT: &[&str] = &[
    "--retry-base",
    "1",
    "--retry-max",
    "8",
    "--max-retries",
    "10",
    "--db-checkout-timeout",
    "1",
    "--db-call-timeout",
    "5",
];

/// The four faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillRouted,
    CutOff,
    Conflicts,
    Revoke,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::KillRouted => "a: kill -9 the routed node",
            Fault::CutOff => "b: node cut off (1047)",
            Fault::Conflicts => "c: writes through two nodes (1213)",
            Fault::Revoke => "d: UPDATE grant revoked",
        }
    }
}

/// Everything a scenario runs on, beside the database it judges.
struct Bed {
    cluster: GaleraCluster,
    db_name: String,
    user: TestUser,
    dir: PathBuf,
}

impl Bed {
    /// `db` is on `cluster`, migrated; the workers use a user of their own on it.
    fn new(cluster: GaleraCluster, db: &TestDatabase) -> Bed {
        let db_name = db.url().rsplit('/').next().expect("a database name").to_owned();
        Bed { cluster, db_name, user: TestUser::create(db), dir: temp_dir() }
    }

    /// The database as the workers' user: through HAProxy, or straight to node `i`.
    fn url(&self, node: Option<usize>) -> String {
        match node {
            None => self.user.url_via(&self.cluster.proxy_addr()),
            Some(i) => self.user.url_via(&self.cluster.node_addr(i)),
        }
    }

    /// Root on node 1, which no scenario takes down, for the progress sampler.
    fn observer_url(&self) -> String {
        format!("{}/{}", self.cluster.node_base(1), self.db_name)
    }

    /// Where each of the two workers connects.
    fn worker_urls(&self, fault: Fault) -> [String; 2] {
        match fault {
            Fault::KillRouted | Fault::Revoke => [self.url(None), self.url(None)],
            Fault::CutOff => [self.url(Some(2)), self.url(None)],
            Fault::Conflicts => [self.url(Some(0)), self.url(Some(1))],
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// Injects `fault` mid-run; returns the moment the fault ended (the node's
/// return, the grant's return), if it does.
async fn inject(bed: &mut Bed, fault: Fault, size: Size, healthz: &[SocketAddr]) -> Option<Instant> {
    match fault {
        // The node stays down: its longest stall is the recovery.
        Fault::KillRouted => {
            let routed = bed.cluster.routed();
            bed.cluster.kill9(routed);
            None
        }
        Fault::CutOff => {
            bed.cluster.isolate(2, true);
            tokio::time::sleep(size.outage).await;
            bed.cluster.isolate(2, false);
            Some(Instant::now())
        }
        Fault::Conflicts => None,
        Fault::Revoke => {
            let started = Instant::now();
            bed.user.admin("REVOKE UPDATE ON {db}.schedule_schedule FROM {user}");
            for addr in healthz {
                wait_health(*addr, 503, Duration::from_secs(30)).await;
            }
            tokio::time::sleep(size.outage.saturating_sub(started.elapsed())).await;
            bed.user.admin("GRANT UPDATE ON {db}.schedule_schedule TO {user}");
            Some(Instant::now())
        }
    }
}

fn celerity_worker(broker: &str, database: &str, name: &str, dir: &Path, http: SocketAddr) -> Child {
    example_worker(celerity_bin(), broker, database)
        .args(["--concurrency", "8", "--hostname", &format!("celerity@{name}")])
        .args(["--http-addr", &http.to_string()])
        .args(PATIENT)
        .stderr(Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).expect("worker log")))
        .spawn()
        .expect("start celerity worker")
}

async fn celerity_scenario(fault: Fault) {
    let size = Size::from_env();
    let cluster = GaleraCluster::start();
    let db = TestDatabase::create_on(&cluster.base());
    db.handle().blocking(celerity_db::migrate::run).expect("migrations");
    let mut bed = Bed::new(cluster, &db);
    let vhost = Vhost::create();
    let conn = connect(&vhost.url()).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    insert_rows(&db, "g", size.schedules, size.polls.into(), 1);
    let http = [free_local_addr(), free_local_addr()];
    let urls = bed.worker_urls(fault);
    let mut workers: Vec<Child> = ["a", "b"]
        .iter()
        .zip(&urls)
        .zip(http)
        .map(|((name, url), addr)| celerity_worker(&vhost.url(), url, name, &bed.dir, addr))
        .collect();
    for addr in http {
        wait_health(addr, 200, Duration::from_secs(60)).await;
    }
    let progress = Progress::start(bed.observer_url());
    if fault == Fault::Conflicts {
        // Every first poll twice in a row: the two copies go to the two
        // workers at once, run through two nodes, and Galera's certification
        // lets one commit.
        for i in 0..size.schedules {
            for _ in 0..2 {
                let confirm = publish_schedule(&ch, &format!("g{i:08}")).await;
                assert!(confirm.await.expect("confirm").is_ack());
            }
        }
    } else {
        publish_first_polls(&ch, "g", size.schedules).await;
    }
    let logs = || format!("a:\n{}\nb:\n{}", tail(&bed.log("a")), tail(&bed.log("b")));
    wait_for_landed(&progress, size.total_polls() / 3, Duration::from_secs(120), logs).await;
    let recovered_from = inject(&mut bed, fault, size, &http).await;
    if fault == Fault::Revoke {
        for addr in http {
            wait_health(addr, 200, Duration::from_secs(30)).await;
        }
    }
    wait_all_final(&bed.observer_url(), &progress, size.idle, size.idle * 6).await;
    let timeline = progress.finish();
    let expected = (0..size.schedules).map(|i| (format!("g{i:08}"), Expect::Success { polls: size.polls })).collect();
    let report = ledger::check(&db, &expected);
    for w in &mut workers {
        assert!(w.try_wait().expect("worker status").is_none(), "a worker exited during the run");
        let _ = w.kill();
        let _ = w.wait();
    }
    let logs = [bed.log("a"), bed.log("b")];
    let seen = |code: &str| logs.iter().map(|l| l.matches(&format!("mysql error {code}")).count()).sum::<usize>();
    println!(
        "galera scenario=\"{}\" worker=celerity {report} stall={:.1}s resumed_after={} errors: 1047={} 1213={} 2013={} 1142={}",
        fault.label(),
        timeline.longest_stall().as_secs_f64(),
        resumed(&timeline, recovered_from),
        seen("1047"),
        seen("1213"),
        seen("2013"),
        seen("1142"),
    );
    assert_eq!(report.fail, 0, "{report}");
    assert_eq!(report.stranded, 0, "{report}");
    assert!(report.all_once(), "{report}");
    match fault {
        Fault::KillRouted => assert!(bed.cluster.routed() != 0, "HAProxy moved to a backup node"),
        Fault::CutOff => assert!(seen("1047") > 0, "the cut-off node answered 1047 and it was retried"),
        Fault::Conflicts => assert!(seen("1213") > 0, "certification conflicts happened and were retried"),
        Fault::Revoke => {
            for log in &logs {
                assert!(log.contains("consumers cancelled while paused"), "each worker paused:\n{}", tail(log));
                assert!(log.contains("consuming again"), "each worker resumed by itself:\n{}", tail(log));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&bed.dir);
}

async fn framework_scenario(fault: Fault) {
    let size = Size::from_env();
    let cluster = GaleraCluster::start();
    let project = Project::on(&python(), &cluster.base());
    let db = &project.db;
    let mut bed = Bed::new(cluster, db);
    let urls = bed.worker_urls(fault);
    let workers: Vec<_> = ["a", "b"]
        .iter()
        .zip(&urls)
        .map(|(name, url)| project.framework_worker_on(url, bed.dir.join(format!("{name}.log"))))
        .collect();
    let progress = Progress::start(bed.observer_url());
    let specs: Vec<serde_json::Value> = (0..size.schedules)
        .map(|i| {
            serde_json::json!({"trace_id": format!("p{i:08}"), "version": "1.0.0",
                "inputs": {"polls": size.polls, "interval": 1}, "context": {}})
        })
        .collect();
    let file = bed.dir.join("specs.json");
    std::fs::write(&file, serde_json::Value::Array(specs).to_string()).expect("specs");
    project.run(&["produce", &format!("@{}", file.display())]);
    let logs = || format!("a:\n{}\nb:\n{}", tail(&workers[0].log()), tail(&workers[1].log()));
    wait_for_landed(&progress, size.total_polls() / 3, Duration::from_secs(180), logs).await;
    let recovered_from = inject(&mut bed, fault, size, &[]).await;
    wait_all_final(&bed.observer_url(), &progress, size.idle, size.idle * 6).await;
    let timeline = progress.finish();
    let report = row_report(db, size.polls);
    println!(
        "galera scenario=\"{}\" worker=framework {report} stall={:.1}s resumed_after={}",
        fault.label(),
        timeline.longest_stall().as_secs_f64(),
        resumed(&timeline, recovered_from),
    );
    // The reference's results are reported, not required: they are what
    // Celerity is compared with. The run itself must have happened.
    assert_eq!(report.schedules, size.schedules, "every schedule was produced");
    assert!(timeline.longest_stall() > Duration::ZERO, "polls landed");
    drop(workers);
    let _ = std::fs::remove_dir_all(&bed.dir);
}

/// From the fault's end to the next poll: `n/a` for a fault that does not
/// end, `never` if no poll landed after it.
fn resumed(timeline: &Timeline, ended: Option<Instant>) -> String {
    match ended {
        None => "n/a".into(),
        Some(at) => timeline.resumed_after(at).map_or("never".into(), |d| format!("{:.1}s", d.as_secs_f64())),
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn celerity_a_kill_9_the_routed_node() {
    celerity_scenario(Fault::KillRouted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn celerity_b_node_cut_off_from_the_group() {
    celerity_scenario(Fault::CutOff).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn celerity_c_certification_conflicts() {
    celerity_scenario(Fault::Conflicts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn celerity_d_grant_revoked_and_restored() {
    celerity_scenario(Fault::Revoke).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn framework_a_kill_9_the_routed_node() {
    framework_scenario(Fault::KillRouted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn framework_b_node_cut_off_from_the_group() {
    framework_scenario(Fault::CutOff).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn framework_d_grant_revoked_and_restored() {
    framework_scenario(Fault::Revoke).await;
}
