//! A 3-node MariaDB Galera cluster on this machine (Debian's `galera-4`
//! provider, rsync SST), each node with its own ports and data directory,
//! behind HAProxy (Debian's `haproxy`) as the one endpoint workers use.
//! HAProxy sends every connection to node 0 while it is up, and to a backup
//! node when it is not, as Galera deployments usually do to keep writes on
//! one node. Started by the test that needs it; killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use diesel::{Connection, MysqlConnection, RunQueryDsl};

use crate::{free_port, temp_dir};

/// How long a node may take to start and join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// One node: its ports and its process.
struct Node {
    port: u16,
    gcomm: u16,
    ist: u16,
    sst: u16,
    child: Option<Child>,
}

/// The cluster and its proxy.
pub struct GaleraCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    proxy_port: u16,
    proxy: Option<Child>,
}

#[derive(diesel::QueryableByName)]
struct Status {
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[diesel(column_name = Value)]
    value: String,
}

impl GaleraCluster {
    /// Bootstraps node 0, joins nodes 1 and 2 to it (rsync SST), starts
    /// HAProxy in front, and waits until all three are synced.
    pub fn start() -> GaleraCluster {
        for tool in ["/usr/lib/galera/libgalera_smm.so", "/usr/sbin/haproxy", "/usr/bin/rsync"] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: scripts/test installs galera-4, haproxy and rsync"
            );
        }
        let dir = temp_dir();
        let nodes = (0..3)
            .map(|_| Node { port: free_port(), gcomm: free_port(), ist: free_port(), sst: free_port(), child: None })
            .collect();
        let mut cluster = GaleraCluster { dir, nodes, proxy_port: free_port(), proxy: None };
        for i in 0..3 {
            std::fs::create_dir_all(cluster.node_dir(i).join("data")).expect("node data dir");
            std::fs::create_dir_all(cluster.node_dir(i).join("tmp")).expect("node tmp dir");
        }
        let chown = Command::new("chown").args(["-R", "mysql:mysql"]).arg(&cluster.dir).status().expect("chown");
        assert!(chown.success(), "chown of the cluster's directory failed");
        let install = Command::new("mariadb-install-db")
            .env("TMPDIR", cluster.node_dir(0).join("tmp"))
            .args(["--no-defaults", "--user=mysql", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", cluster.node_dir(0).join("data").display()))
            .output()
            .expect("run mariadb-install-db");
        assert!(install.status.success(), "mariadb-install-db failed: {}", String::from_utf8_lossy(&install.stderr));
        cluster.launch(0, true);
        cluster.wait_ready(0);
        for i in 1..3 {
            cluster.launch(i, false);
            cluster.wait_ready(i);
        }
        cluster.start_proxy();
        cluster.wait_size(3);
        cluster
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    fn launch(&mut self, i: usize, bootstrap: bool) {
        let members: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.gcomm)).collect();
        let node = &self.nodes[i];
        let dir = self.node_dir(i);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).expect("log");
        let mut cmd = Command::new("/usr/sbin/mariadbd");
        cmd.arg("--no-defaults")
            .args(["--user=mysql", "--bind-address=127.0.0.1", "--skip-name-resolve"])
            .args(["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--max-connections=200"])
            .args(["--binlog-format=ROW", "--innodb-autoinc-lock-mode=2", "--default-storage-engine=InnoDB"])
            .arg(format!("--port={}", node.port))
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .args(["--wsrep-on=ON", "--wsrep-provider=/usr/lib/galera/libgalera_smm.so"])
            .args(["--wsrep-cluster-name=celerity-test", "--wsrep-sst-method=rsync"])
            .arg(format!("--wsrep-cluster-address=gcomm://{}", members.join(",")))
            .arg(format!("--wsrep-node-name=node{i}"))
            .arg(format!("--wsrep-node-address=127.0.0.1:{}", node.gcomm))
            .arg(format!("--wsrep-sst-receive-address=127.0.0.1:{}", node.sst))
            // Short failure detection, so a lost node leaves the group in
            // seconds rather than the default's half a minute.
            .arg(format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};\
                 gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT5S;evs.install_timeout=PT5S",
                node.gcomm, node.ist
            ))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        if bootstrap {
            cmd.arg("--wsrep-new-cluster");
        }
        self.nodes[i].child = Some(cmd.spawn().expect("start mariadbd"));
    }

    fn start_proxy(&mut self) {
        let servers: String = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let backup = if i == 0 { "" } else { " backup" };
                format!("    server node{i} 127.0.0.1:{} check inter 500 fall 2 rise 2{backup}\n", n.port)
            })
            .collect();
        let config = format!(
            "global\n    maxconn 1000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n\
             listen galera\n    bind 127.0.0.1:{}\n    option tcp-check\n\
             \x20   default-server on-marked-down shutdown-sessions\n{servers}",
            self.proxy_port
        );
        std::fs::write(self.dir.join("haproxy.cfg"), config).expect("write haproxy.cfg");
        self.spawn_proxy();
        let start = Instant::now();
        while MysqlConnection::establish(&self.base()).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "haproxy does not pass connections to the cluster");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts HAProxy on its configuration, without waiting for it.
    pub fn spawn_proxy(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("haproxy.log"))
            .expect("haproxy log");
        let child = Command::new("/usr/sbin/haproxy")
            .arg("-db")
            .arg("-f")
            .arg(self.dir.join("haproxy.cfg"))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        self.proxy = Some(child);
    }

    /// `kill -9` HAProxy: every connection through it is cut.
    pub fn kill_proxy(&mut self) {
        if let Some(mut child) = self.proxy.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `mysql://root@127.0.0.1:PORT` of HAProxy, without a database.
    pub fn base(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.proxy_port)
    }

    /// `host:port` of HAProxy.
    pub fn proxy_addr(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port)
    }

    /// `host:port` of node `i`, for a worker that connects to it directly.
    pub fn node_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port)
    }

    /// `mysql://root@127.0.0.1:PORT` of node `i`.
    pub fn node_base(&self, i: usize) -> String {
        format!("mysql://root@{}", self.node_addr(i))
    }

    /// A status variable of node `i`, if it answers.
    pub fn status(&self, i: usize, name: &str) -> Option<String> {
        let mut conn = MysqlConnection::establish(&self.node_base(i)).ok()?;
        let rows = diesel::sql_query(format!("SHOW STATUS LIKE '{name}'")).load::<Status>(&mut conn).ok()?;
        rows.into_iter().next().map(|s| s.value)
    }

    fn wait_ready(&self, i: usize) {
        let start = Instant::now();
        while self.status(i, "wsrep_ready").as_deref() != Some("ON") {
            assert!(start.elapsed() < JOIN_TIMEOUT, "node {i} did not become ready:\n{}", self.log(i));
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until node 0's view (or any live node's) has `size` members, all synced.
    pub fn wait_size(&self, size: usize) {
        let start = Instant::now();
        loop {
            let live: Vec<usize> = (0..3).filter(|i| self.nodes[*i].child.is_some()).collect();
            let synced = live.iter().all(|i| self.status(*i, "wsrep_local_state_comment").as_deref() == Some("Synced"));
            let seen = live.first().and_then(|i| self.status(*i, "wsrep_cluster_size"));
            if synced && seen.as_deref() == Some(size.to_string().as_str()) {
                return;
            }
            assert!(start.elapsed() < JOIN_TIMEOUT, "the cluster did not reach {size} synced nodes (saw {seen:?})");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The node HAProxy sends new connections to now.
    pub fn routed(&self) -> usize {
        let mut conn = MysqlConnection::establish(&self.base()).expect("connect through haproxy");
        let name = diesel::sql_query("SHOW VARIABLES LIKE 'wsrep_node_name'")
            .load::<Status>(&mut conn)
            .expect("wsrep_node_name")
            .into_iter()
            .next()
            .expect("a row")
            .value;
        name.trim_start_matches("node").parse().expect("nodeN")
    }

    /// `kill -9` node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again, rejoining the others (IST or SST), and waits until it is synced.
    pub fn rejoin(&mut self, i: usize) {
        self.launch(i, false);
        self.wait_ready(i);
    }

    /// Starts node `i` again, rejoining the others, without waiting: see
    /// [`GaleraCluster::ready`].
    pub fn relaunch(&mut self, i: usize) {
        if self.nodes[i].child.is_none() {
            self.launch(i, false);
        }
    }

    /// Whether node `i` answers and is part of the primary component.
    pub fn ready(&self, i: usize) -> bool {
        self.status(i, "wsrep_ready").as_deref() == Some("ON")
    }

    /// Sets `gmcast.isolate` on node `i` without waiting for its effect.
    pub fn set_isolated(&self, i: usize, cut: bool) -> Result<(), String> {
        let mut conn = MysqlConnection::establish(&self.node_base(i)).map_err(|e| e.to_string())?;
        diesel::sql_query(format!("SET GLOBAL wsrep_provider_options = 'gmcast.isolate={}'", u8::from(cut)))
            .execute(&mut conn)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Cuts node `i` off from the group (`gmcast.isolate`), or lets it back:
    /// cut off, it leaves the primary component and answers 1047.
    pub fn isolate(&self, i: usize, cut: bool) {
        let mut conn = MysqlConnection::establish(&self.node_base(i)).expect("connect to the node");
        diesel::sql_query(format!("SET GLOBAL wsrep_provider_options = 'gmcast.isolate={}'", u8::from(cut)))
            .execute(&mut conn)
            .expect("set gmcast.isolate");
        let want = if cut { "OFF" } else { "ON" };
        let start = Instant::now();
        while self.status(i, "wsrep_ready").as_deref() != Some(want) {
            assert!(start.elapsed() < Duration::from_secs(60), "node {i} wsrep_ready did not turn {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// HAProxy's log.
    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// What node `i` has logged.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.node_dir(i).join("server.log")).unwrap_or_default()
    }
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().filter_map(|n| n.child.as_mut()).chain(self.proxy.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
