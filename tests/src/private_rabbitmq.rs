//! A RabbitMQ node of the test's own: its own name, ports, data and Erlang
//! cookie, so a test may stop and restart it without touching the shared
//! broker. It keeps its data across a restart, as a real broker does.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::TestCerts;
use crate::{free_port, temp_dir, unique};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

/// A private `rabbitmq-server` node.
pub struct PrivateRabbitmq {
    dir: PathBuf,
    /// Where its Erlang cookie is (`HOME`): its own directory, or one that
    /// every node of a cluster shares.
    home: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    tls_port: Option<u16>,
    certs: Option<TestCerts>,
    /// More arguments for its Erlang VM (`RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS`).
    erl_args: String,
    server: Option<Child>,
}

impl PrivateRabbitmq {
    /// Starts a fresh node and waits until it takes connections.
    pub fn start() -> PrivateRabbitmq {
        PrivateRabbitmq::start_with(false)
    }

    /// Starts a fresh node that also listens for `amqps://`, with a
    /// certificate from a test CA.
    pub fn start_with_tls() -> PrivateRabbitmq {
        PrivateRabbitmq::start_with(true)
    }

    fn start_with(tls: bool) -> PrivateRabbitmq {
        PrivateRabbitmq::start_in(tls, None, "", "")
    }

    /// Starts a fresh node whose Erlang cookie lives in `home`, so that it
    /// can join the other nodes started there.
    pub fn start_sharing_cookie(home: &std::path::Path) -> PrivateRabbitmq {
        PrivateRabbitmq::start_in(false, Some(home.to_owned()), "", "")
    }

    /// [`PrivateRabbitmq::start_sharing_cookie`] with more `rabbitmq.conf`
    /// lines and more arguments for the node's Erlang VM.
    pub fn start_configured(home: &std::path::Path, conf: &str, erl_args: &str) -> PrivateRabbitmq {
        PrivateRabbitmq::start_in(false, Some(home.to_owned()), conf, erl_args)
    }

    fn start_in(tls: bool, home: Option<PathBuf>, extra_conf: &str, erl_args: &str) -> PrivateRabbitmq {
        let dir = temp_dir();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins file");
        let port = free_port();
        let mut conf = format!("listeners.tcp.default = 127.0.0.1:{port}\n{extra_conf}");
        let (tls_port, certs) = if tls {
            let certs = TestCerts::create(&dir);
            let tls_port = free_port();
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                certs.ca.display(),
                certs.cert.display(),
                certs.key.display()
            ));
            (Some(tls_port), Some(certs))
        } else {
            (None, None)
        };
        std::fs::write(dir.join("rabbitmq.conf"), conf).expect("config file");
        let node = format!("{}@localhost", unique("celerity-rmq"));
        let home = home.unwrap_or_else(|| dir.clone());
        let mut server = PrivateRabbitmq {
            dir,
            home,
            node,
            port,
            dist_port: free_port(),
            tls_port,
            certs,
            erl_args: erl_args.to_owned(),
            server: None,
        };
        server.launch();
        server
    }

    /// `amqps://guest:guest@localhost:TLS_PORT/%2f` (guest may log in over
    /// TCP only from loopback, which this is).
    pub fn amqps_url(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.tls_port.expect("started with TLS"))
    }

    /// The test CA's certificate, for `--broker-ca-file`.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.certs.as_ref().expect("started with TLS").ca.clone()
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        // HOME holds the node's own Erlang cookie, shared by server and ctl.
        cmd.current_dir(&self.dir)
            .env("HOME", &self.home)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_PID_FILE", self.dir.join("rabbitmq.pid"));
        if !self.erl_args.is_empty() {
            cmd.env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", &self.erl_args);
        }
        cmd
    }

    /// Starts the node on its port and data; waits until it answers.
    pub fn launch(&mut self) {
        self.launch_within(Duration::from_secs(90));
    }

    /// [`PrivateRabbitmq::launch`], waiting up to `patience`: a clustered
    /// node that restarts waits for its peers' tables (ten tries of 30 s).
    pub fn launch_within(&mut self, patience: Duration) {
        assert!(self.server.is_none(), "the node is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("server log");
        let child = self
            .command(SERVER)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start rabbitmq-server (is rabbitmq-server installed?)");
        self.server = Some(child);
        let started = Instant::now();
        // await_startup fails at once until the node has registered with epmd.
        loop {
            let waited = self
                .command(CTL)
                .args(["-n", &self.node, "await_startup", "--timeout", "90"])
                .stdout(Stdio::null())
                .output()
                .expect("run rabbitmqctl await_startup");
            if waited.status.success() {
                break;
            }
            assert!(
                started.elapsed() < patience,
                "private RabbitMQ did not start in {:?}: {}\n{}",
                started.elapsed(),
                String::from_utf8_lossy(&waited.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < patience, "private RabbitMQ port not open:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its Erlang distribution port (other nodes and the CLI connect to it).
    pub fn dist_port(&self) -> u16 {
        self.dist_port
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the node (connections are closed, durable data kept) and waits
    /// for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = self.command(CTL).args(["-n", &self.node, "stop"]).output();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9` the node: the Erlang VM, which `rabbitmq-server` runs as
    /// its child (killing the script alone would leave the node running),
    /// then the script.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("pkill").args(["-KILL", "-P", &child.id().to_string()]).status();
            let _ = child.kill();
            let _ = child.wait();
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                assert!(started.elapsed() < Duration::from_secs(10), "the killed node still takes connections");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Whether the node's process is running.
    pub fn running(&self) -> bool {
        self.server.is_some()
    }

    /// The node's Erlang name (`name@localhost`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs `rabbitmqctl` on this node.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.command(CTL).args(["-n", &self.node]).args(args).output().expect("run rabbitmqctl");
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Its log folder (the node's own log, not its start-up output).
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The node's start-up output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivateRabbitmq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
