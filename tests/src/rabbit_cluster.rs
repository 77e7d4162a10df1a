//! Three RabbitMQ nodes on this machine, each with its own node name, ports
//! and data directory, one Erlang cookie, joined with `rabbitmqctl
//! join_cluster`. Started by the test that needs it; stopped when dropped.
//!
//! A cluster started with [`RabbitCluster::start_partitionable`] can be cut
//! in two with iptables: each node opens its distribution connections from
//! an address of its own (127.0.0.11, .12, .13), so the rules can tell one
//! node's links from the others' on one loopback.

use std::path::PathBuf;

use broker_proto::topology;

use crate::firewall::Chain;
use crate::private_rabbitmq::PrivateRabbitmq;
use crate::temp_dir;

/// The cluster.
pub struct RabbitCluster {
    home: PathBuf,
    /// Its nodes, node 0 first (the one the others joined).
    pub nodes: Vec<PrivateRabbitmq>,
}

/// The partition handling mode of a partitionable cluster: a node that
/// finds itself in the minority pauses (closes its clients, serves nothing)
/// until the partition heals. RabbitMQ's advice for three nodes or more: the
/// majority side goes on, and no side accepts writes it would throw away at
/// the heal, as `autoheal` does to the losing side's classic queues.
pub const PARTITION_HANDLING: &str = "pause_minority";

/// How fast nodes notice a lost peer: `net_ticktime` 10 s (Erlang's default
/// is 60 s, so a partition of under a minute would go unseen).
const NET_TICKTIME_S: u32 = 10;

impl RabbitCluster {
    /// Starts node 0, then nodes 1 and 2, each joining node 0.
    pub fn start() -> RabbitCluster {
        RabbitCluster::start_nodes(|home, _| PrivateRabbitmq::start_sharing_cookie(home))
    }

    /// [`RabbitCluster::start`], each node with its own source address for
    /// its cluster links, `pause_minority` and a 10 s `net_ticktime`.
    pub fn start_partitionable() -> RabbitCluster {
        RabbitCluster::start_nodes(|home, i| {
            let conf = format!("cluster_partition_handling = {PARTITION_HANDLING}\n");
            let erl = format!(
                "-kernel inet_dist_connect_options [{{ip,{{127,0,0,{}}}}}] -kernel net_ticktime {NET_TICKTIME_S}",
                11 + i
            );
            PrivateRabbitmq::start_configured(home, &conf, &erl)
        })
    }

    fn start_nodes(start: impl Fn(&std::path::Path, usize) -> PrivateRabbitmq) -> RabbitCluster {
        let home = temp_dir();
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, crate::unique("cookie").replace('-', "").to_uppercase()).expect("cookie");
        let chmod = std::process::Command::new("chmod").arg("400").arg(&cookie).status().expect("chmod");
        assert!(chmod.success(), "chmod of the cookie failed");
        let first = start(&home, 0);
        let mut nodes = vec![first];
        for i in 1..3 {
            let node = start(&home, i);
            node.ctl(&["stop_app"]);
            node.ctl(&["join_cluster", nodes[0].node()]);
            node.ctl(&["start_app"]);
            node.ctl(&["await_startup", "--timeout", "90"]);
            nodes.push(node);
        }
        let cluster = RabbitCluster { home, nodes };
        let status = cluster.nodes[0].ctl(&["cluster_status", "--formatter", "json"]);
        let running = cluster.nodes.iter().filter(|n| status.contains(n.node())).count();
        assert_eq!(running, 3, "three nodes in the cluster: {status}");
        cluster
    }

    /// Node `i`'s URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Every node's URL as a failover list, starting at node `first`.
    pub fn failover_url(&self, first: usize) -> String {
        (0..self.nodes.len()).map(|k| self.url((first + k) % self.nodes.len())).collect::<Vec<_>>().join(";")
    }

    /// Declares the framework's queues (classic, as its producers declare
    /// them) from node `from`, so each lives there: a classic queue's home
    /// is the node that declared it.
    pub async fn declare_framework_queues_from(&self, from: usize) {
        let conn = crate::connect(&self.url(from)).await;
        let ch = conn.create_channel().await.expect("channel");
        for q in [topology::SCHEDULE_QUEUE.name, topology::CALLBACK_QUEUE.name, topology::DELETE_QUEUE.name] {
            crate::declare_framework_queue(&ch, q).await;
        }
        let _ = conn.close(0, "declared".into()).await;
    }

    /// A node that runs, to ask.
    fn running(&self) -> &PrivateRabbitmq {
        self.nodes.iter().find(|n| n.running()).expect("a running node")
    }

    /// Which node queue `name` lives on: a quorum queue's leader, a classic queue's home.
    pub fn queue_node(&self, name: &str) -> Option<usize> {
        // A quorum queue names its leader; a classic queue's process id names its node.
        let listed = self.running().ctl(&["list_queues", "-q", "--no-table-headers", "name", "type", "leader", "pid"]);
        let line = listed.lines().find(|l| l.split('\t').next().map(str::trim) == Some(name))?;
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        let owner = if cols.get(1) == Some(&"quorum") { cols.get(2) } else { cols.get(3) }?;
        self.nodes.iter().position(|n| owner.contains(n.node()))
    }
}

impl RabbitCluster {
    /// Consumers on queue `name` now, as a running node reports them.
    pub fn consumers(&self, name: &str) -> Option<u32> {
        let listed = self.running().ctl(&["list_queues", "-q", "--no-table-headers", "name", "consumers"]);
        let line = listed.lines().find(|l| l.split('\t').next().map(str::trim) == Some(name))?;
        line.split('\t').nth(1).and_then(|n| n.trim().parse().ok())
    }
}

impl RabbitCluster {
    /// The iptables chain of this cluster's partition rules.
    fn chain(&self) -> Chain {
        Chain::named(format!("celerity-part-{}", self.nodes[0].port()))
    }

    /// Cuts node `i` of a partitionable cluster off from the other nodes and
    /// from every client (its AMQP port), dropping packets silently, as a
    /// lost link does; or, with `cut` false, lets it back.
    pub fn partition(&self, i: usize, cut: bool) -> Result<(), String> {
        let chain = self.chain();
        if !cut {
            return chain.flush();
        }
        let ip = |k: usize| format!("127.0.0.{}", 11 + k);
        let port = |k: usize| self.nodes[k].port().to_string();
        let dist = |k: usize| self.nodes[k].dist_port().to_string();
        for k in (0..self.nodes.len()).filter(|k| *k != i) {
            // Node i's links to k, both ways, and k's links to i, both ways.
            chain.drop_tcp(&["-s", &ip(i), "--dport", &dist(k)], true)?;
            chain.drop_tcp(&["-d", &ip(i), "--sport", &dist(k)], true)?;
            chain.drop_tcp(&["-s", &ip(k), "--dport", &dist(i)], true)?;
            chain.drop_tcp(&["-d", &ip(k), "--sport", &dist(i)], true)?;
        }
        chain.drop_tcp(&["--dport", &port(i)], true)?;
        chain.drop_tcp(&["--sport", &port(i)], true)
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        self.chain().remove();
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
