//! Three RabbitMQ nodes on this machine, each with its own node name, ports
//! and data directory, one Erlang cookie, joined with `rabbitmqctl
//! join_cluster`. Started by the test that needs it; stopped when dropped.

use std::path::PathBuf;

use crate::private_rabbitmq::PrivateRabbitmq;
use crate::temp_dir;

/// The cluster.
pub struct RabbitCluster {
    home: PathBuf,
    /// Its nodes, node 0 first (the one the others joined).
    pub nodes: Vec<PrivateRabbitmq>,
}

impl RabbitCluster {
    /// Starts node 0, then nodes 1 and 2, each joining node 0.
    pub fn start() -> RabbitCluster {
        let home = temp_dir();
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, crate::unique("cookie").replace('-', "").to_uppercase()).expect("cookie");
        let chmod = std::process::Command::new("chmod").arg("400").arg(&cookie).status().expect("chmod");
        assert!(chmod.success(), "chmod of the cookie failed");
        let first = PrivateRabbitmq::start_sharing_cookie(&home);
        let mut nodes = vec![first];
        for _ in 1..3 {
            let node = PrivateRabbitmq::start_sharing_cookie(&home);
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

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}
