//! The shared RabbitMQ: a private vhost (and user) per test, connections,
//! the framework's queue declaration, and publishing Celery messages.

use std::process::{Command, Stdio};

use lapin::{Channel, Connection, ConnectionProperties};

use crate::unique;

/// `amqp://user:pass@host:port` of the test broker, without a vhost.
pub fn amqp_base() -> String {
    std::env::var("CELERITY_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

/// A RabbitMQ vhost of this test's own, deleted when dropped.
pub struct Vhost {
    name: String,
}

impl Vhost {
    /// Creates a fresh vhost with full permissions for `guest`.
    pub fn create() -> Vhost {
        let name = unique("celerity-test");
        rabbitmqctl(&["add_vhost", &name]);
        let vhost = Vhost { name };
        rabbitmqctl(&["set_permissions", "-p", &vhost.name, "guest", ".*", ".*", ".*"]);
        vhost
    }

    /// The AMQP URL of this vhost.
    pub fn url(&self) -> String {
        format!("{}/{}", amqp_base(), self.name)
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Each queue of this vhost and its type (`classic`, `quorum`), as the broker reports them.
    pub fn queue_types(&self) -> std::collections::BTreeMap<String, String> {
        let out = Command::new("timeout")
            .arg(RABBITMQCTL_TIMEOUT)
            .args(["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "-p", &self.name, "name", "type"])
            .output()
            .expect("rabbitmqctl runs");
        assert!(out.status.success(), "rabbitmqctl list_queues: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(name, kind)| (name.trim().to_owned(), kind.trim().to_owned()))
            .collect()
    }
}

/// A RabbitMQ user of this test's own on a vhost, deleted when dropped.
pub struct VhostUser {
    name: String,
    vhost: String,
    url: String,
}

impl VhostUser {
    /// A user who may read and write everything on `vhost` but configure
    /// (declare) only what matches `configure`.
    pub fn create(vhost: &Vhost, configure: &str) -> VhostUser {
        let name = unique("celerity-user");
        rabbitmqctl(&["add_user", &name, "secret-password"]);
        rabbitmqctl(&["set_permissions", "-p", &vhost.name, &name, configure, ".*", ".*"]);
        let host = amqp_base().rsplit_once('@').map_or_else(|| "127.0.0.1:5672".to_owned(), |(_, h)| h.to_owned());
        let url = format!("amqp://{name}:secret-password@{host}/{}", vhost.name);
        VhostUser { name, vhost: vhost.name.clone(), url }
    }

    /// Lets it configure only what matches `configure` from now on.
    pub fn permit(&self, configure: &str) {
        rabbitmqctl(&["set_permissions", "-p", &self.vhost, &self.name, configure, ".*", ".*"]);
    }

    /// Its AMQP URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for VhostUser {
    fn drop(&mut self) {
        clean_up(&["delete_user", &self.name]);
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        clean_up(&["delete_vhost", &self.name]);
    }
}

/// `rabbitmqctl ARGS` as a clean-up: bounded, so a test never hangs on it,
/// and its outcome ignored.
fn clean_up(args: &[&str]) {
    let _ =
        Command::new("timeout").arg(RABBITMQCTL_TIMEOUT).arg("rabbitmqctl").args(args).stdout(Stdio::null()).status();
}

/// Seconds any one `rabbitmqctl` call may take before the harness gives up on it.
pub(crate) const RABBITMQCTL_TIMEOUT: &str = "60";

pub(crate) fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("timeout")
        .arg(RABBITMQCTL_TIMEOUT)
        .arg("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (is rabbitmq-server installed?)");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Connects to `url`.
pub async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// Declares a queue, whatever its name, as the framework declares its own
/// (durable, `x-max-priority = 255`, bound to the direct exchange `default`),
/// with the worker's own code.
pub async fn declare_framework_queue(channel: &Channel, queue: &str) {
    celerity::broker::declare_framework_queue(channel, queue, celerity::broker::QueueType::Classic)
        .await
        .expect("declare a framework queue");
}

/// A connection and a channel in confirm mode on `vhost`.
pub async fn confirmed_channel(vhost: &Vhost) -> (Connection, Channel) {
    let conn = connect(&vhost.url()).await;
    let channel = conn.create_channel().await.expect("open a channel");
    channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await.expect("confirm mode");
    (conn, channel)
}

/// A Celery task message with string kwargs, as a producer sends it.
pub fn task_message(task: &str, kwargs: &[(&str, &str)]) -> broker_proto::TaskMessage {
    let mut m = broker_proto::TaskMessage::new(task, uuid::Uuid::new_v4().to_string());
    for (k, v) in kwargs {
        m.kwargs.insert((*k).to_owned(), broker_proto::Value::String((*v).to_owned()));
    }
    m
}

/// Publishes raw bytes and waits for the broker's confirm.
pub async fn publish_raw(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: lapin::BasicProperties,
) {
    let confirm = channel
        .basic_publish(exchange.into(), routing_key.into(), lapin::options::BasicPublishOptions::default(), body, props)
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "the broker did not confirm the publish");
}

/// Encodes `m` as Celery would and publishes it, confirmed.
pub async fn publish_task(channel: &Channel, exchange: &str, routing_key: &str, m: &broker_proto::TaskMessage) {
    let out = broker_proto::encode(m, chrono::Utc::now()).expect("encode");
    let props = celerity::broker::properties::basic_properties(&out.properties).expect("properties");
    publish_raw(channel, exchange, routing_key, &out.body, props).await;
}
