//! The clustered stack a nemesis run breaks: a 3-node RabbitMQ cluster
//! (partitionable), a 3-node Galera cluster behind HAProxy with a delaying
//! proxy in front for the workers, the test plugin project's database on
//! it, and N `celerity worker --python` processes with failover broker URLs,
//! as the README recommends (the framework's queues classic, Celerity's own
//! quorum). Every process is started here and stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use broker_proto::topology;

use crate::galera::GaleraCluster;
use crate::plugin_project::{self, Project};
use crate::rabbit_cluster::RabbitCluster;
use crate::{ChildGuard, celerity_bin};

use super::delay_proxy::DelayProxy;

/// Which worker runs the plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    /// `celerity worker --python`.
    Celerity,
    /// The framework's own Celery worker (prefork), as a plugin app runs it.
    Framework,
}

impl WorkerKind {
    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            WorkerKind::Celerity => "celerity",
            WorkerKind::Framework => "framework",
        }
    }
}

/// How the workers run.
#[derive(Debug, Clone, Copy)]
pub struct WorkerShape {
    /// Which.
    pub kind: WorkerKind,
    /// How many.
    pub count: usize,
    /// `--concurrency` (`-c`) of each.
    pub concurrency: u32,
}

/// One worker's place: its process (none while killed) and how many times
/// it was started.
pub struct WorkerSlot {
    /// The running process.
    pub child: Option<ChildGuard>,
    /// Starts so far.
    pub starts: u32,
}

/// The stack.
pub struct Stack {
    /// The broker cluster (one RabbitMQ fault at a time holds it).
    pub rabbit: Mutex<RabbitCluster>,
    /// The nodes' AMQP ports, read once.
    pub rabbit_ports: Vec<u16>,
    /// Failover lists starting at each node, read once.
    failover: Vec<String>,
    /// The database cluster and its HAProxy.
    pub galera: Mutex<GaleraCluster>,
    /// The workers' way to HAProxy, with latency when a fault sets it.
    pub db_link: DelayProxy,
    /// The project: its database on the cluster, its Python.
    pub project: Project,
    /// The workers.
    pub workers: Vec<Mutex<WorkerSlot>>,
    /// Where logs, the ledger, the plan and the report go.
    pub dir: PathBuf,
    /// The node holding the classic `plugin_callback` queue.
    pub callback_node: Option<usize>,
    python: PathBuf,
}

impl Stack {
    /// Starts the clusters, migrates the project's database on Galera, and
    /// starts the workers. `dir` holds the run's files.
    pub async fn start(python: &Path, dir: &Path, shape: WorkerShape) -> Stack {
        let rabbit = RabbitCluster::start_partitionable();
        // The framework's queues are declared first from node 0, the
        // producer's first node, so a seed replays with them where they were.
        rabbit.declare_framework_queues_from(0).await;
        let callback_node = rabbit.queue_node(topology::CALLBACK_QUEUE.name);
        let galera = GaleraCluster::start();
        let db_link = DelayProxy::start(galera.proxy_addr()).await;
        let mut project = Project::on(python, &galera.base());
        // The project's producer and callback sender publish to node 0 first.
        project.extra_env.push(("BK_PLUGIN_RUNTIME_BROKER_URL".into(), rabbit.failover_url(0)));
        project.extra_env.push(("NEMESIS_LEDGER_DIR".into(), dir.join("ledger").display().to_string()));
        std::fs::create_dir_all(dir.join("ledger")).expect("ledger dir");
        std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
        let rabbit_ports = rabbit.nodes.iter().map(|n| n.port()).collect();
        let failover = (0..3).map(|k| rabbit.failover_url(k)).collect();
        let workers = (0..shape.count).map(|_| Mutex::new(WorkerSlot { child: None, starts: 0 })).collect();
        let stack = Stack {
            rabbit: Mutex::new(rabbit),
            rabbit_ports,
            failover,
            galera: Mutex::new(galera),
            db_link,
            project,
            workers,
            dir: dir.to_owned(),
            callback_node,
            python: python.to_owned(),
        };
        for i in 0..shape.count {
            stack.start_worker(i, shape);
        }
        stack
    }

    /// Starts worker `i` (again): its broker list starts at node `i % 3`,
    /// its database is the delaying link to HAProxy.
    pub fn start_worker(&self, i: usize, shape: WorkerShape) {
        let mut slot = self.workers[i].lock().expect("worker slot");
        slot.starts += 1;
        let log = self.dir.join("logs").join(format!("worker-{i}.{}.log", slot.starts));
        let cmd = match shape.kind {
            WorkerKind::Celerity => self.celerity(i, shape.concurrency),
            WorkerKind::Framework => self.framework(i, shape.concurrency),
        };
        slot.child = Some(ChildGuard::spawn(cmd, log));
    }

    fn celerity(&self, i: usize, concurrency: u32) -> Command {
        let broker = &self.failover[i % 3];
        let db_url = self.project.db.url_via(&self.db_link.addr());
        let mut cmd = Command::new(celerity_bin());
        cmd.args(["worker", "--python"])
            .arg(&self.python)
            .args(["--broker-url", broker, "--database-url", &db_url])
            .args(["--db-time-zone", "Asia/Shanghai", "--hostname", &format!("celerity@nemesis-{i}")])
            .args(["--queue-type", "classic", "--celerity-queue-type", "quorum"])
            .args(["--concurrency", &concurrency.to_string(), "--http-addr", "127.0.0.1:0"])
            // The sweeper on, with a margin the run's length can show.
            .args(["--sweep-interval", "15", "--sweep-margin", "60"])
            .envs(self.project.env())
            .env("RUST_LOG", "info")
            .current_dir(plugin_project::dir());
        cmd
    }

    /// The framework's worker as the test project runs it, on the same
    /// broker list and database link.
    fn framework(&self, i: usize, concurrency: u32) -> Command {
        let db_url = self.project.db.url_via(&self.db_link.addr());
        let mut cmd = Command::new(&self.python);
        cmd.args(["-m", "celery", "-A", "plugin_project.celery_app", "worker", "-P", "prefork"])
            .args(["-c", &concurrency.to_string(), "-Q", "plugin_schedule,plugin_callback"])
            .args(["--without-gossip", "--without-mingle", "-l", "INFO", "-n", &format!("nemesis-{i}@%h")])
            .envs(self.project.env())
            .envs(plugin_project::env_for_url(&db_url, &self.failover[i % 3]))
            .current_dir(plugin_project::dir());
        cmd
    }

    /// Starts `project.py ARGS` of the project in the background, its stdout
    /// to `out` and its stderr to `out` + `.err`.
    pub fn project_process(&self, args: &[&str], out: &Path) -> std::process::Child {
        let stdout = std::fs::File::create(out).expect("stdout file");
        let stderr = std::fs::File::create(out.with_extension("err")).expect("stderr file");
        Command::new(&self.python)
            .arg(plugin_project::dir().join("project.py"))
            .args(args)
            .envs(self.project.env())
            .current_dir(plugin_project::dir())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start project.py")
    }

    /// Copies the nodes' and the proxy's logs into the run's `logs/`,
    /// before the clusters are dropped with their folders.
    pub fn keep_logs(&self) {
        let logs = self.dir.join("logs");
        for (i, node) in self.rabbit.lock().unwrap_or_else(|p| p.into_inner()).nodes.iter().enumerate() {
            for file in std::fs::read_dir(node.log_dir()).into_iter().flatten().flatten() {
                let name = format!("rabbitmq-{i}.{}", file.file_name().to_string_lossy());
                let _ = std::fs::copy(file.path(), logs.join(name));
            }
            let _ = std::fs::write(logs.join(format!("rabbitmq-{i}.start.log")), node.log());
        }
        let galera = self.galera.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..3 {
            let _ = std::fs::write(logs.join(format!("galera-{i}.log")), galera.log(i));
        }
        let _ = std::fs::write(logs.join("haproxy.log"), galera.proxy_log());
    }

    /// The ledger's folder.
    pub fn ledger_dir(&self) -> PathBuf {
        self.dir.join("ledger")
    }
}
