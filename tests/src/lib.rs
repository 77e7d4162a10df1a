//! Harness for the integration tests: the real RabbitMQ (a private vhost per
//! test), the Python venv with real Celery, and child processes that are
//! killed when a test ends, pass or fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::{Channel, Connection, ConnectionProperties};

pub mod galera;
pub mod ha;
pub mod ledger;
pub mod plugin_project;
pub mod private_rabbitmq;
pub mod procfs;
pub mod rabbit_cluster;
pub mod tls;
pub mod workload;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The Python interpreter of the test venv, with real `celery` and `kombu`.
///
/// A missing venv fails the test with instructions; it is never skipped.
pub fn python() -> PathBuf {
    let path = std::env::var_os("CELERITY_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "no Python venv at {} (set CELERITY_TEST_PYTHON, or run scripts/test, which creates .venv with celery)",
        path.display()
    );
    path
}

/// A Python helper script under `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    workspace_root().join("tests/python").join(name)
}

/// `amqp://user:pass@host:port` of the test broker, without a vhost.
pub fn amqp_base() -> String {
    std::env::var("CELERITY_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
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
        let _ = Command::new("timeout")
            .args([RABBITMQCTL_TIMEOUT, "rabbitmqctl", "delete_user", &self.name])
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        // Bounded: a test must not hang on its clean-up.
        let _ = Command::new("timeout")
            .args([RABBITMQCTL_TIMEOUT, "rabbitmqctl", "delete_vhost", &self.name])
            .stdout(Stdio::null())
            .status();
    }
}

/// Seconds any one `rabbitmqctl` call may take before the harness gives up on it.
const RABBITMQCTL_TIMEOUT: &str = "60";

fn rabbitmqctl(args: &[&str]) {
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

/// `data` of an example-plugin schedule as the framework's producer leaves it
/// (its own execute was invoke 1).
pub fn example_data(polls: i64, interval: i64) -> String {
    format!(
        r#"{{"inputs": {{"polls": {polls}, "interval": {interval}}}, "context": {{"storage": {{"executions": 1}}, "outputs": {{}}, "data": {{}}}}, "outputs": {{}}}}"#
    )
}

/// Inserts a schedule row as the producer does: invoke_count 1, not locked, no err.
pub fn insert_schedule(url: &str, trace_id: &str, version: &str, state: celerity_db::State, data: &str) {
    let db = celerity_db::Db::new(celerity_db::DbConfig::new(url)).expect("db handle");
    let row = celerity_db::NewSchedule {
        trace_id: trace_id.into(),
        plugin_version: version.into(),
        state: state.code(),
        invoke_count: 1,
        data: data.into(),
        created_at: db.now(),
        finish_at: None,
        scheduling: false,
        err: String::new(),
    };
    db.blocking(move |c| celerity_db::repo::insert(c, &row)).expect("insert schedule");
}

/// A trigger that makes every UPDATE of `schedule_schedule` answer MySQL
/// error 1047 (a Galera node not ready: transient), until `DROP TRIGGER not_ready`.
pub const NOT_READY_TRIGGER: &str = "CREATE TRIGGER not_ready BEFORE UPDATE ON schedule_schedule FOR EACH ROW \
     SIGNAL SQLSTATE '08S01' SET MYSQL_ERRNO = 1047, MESSAGE_TEXT = 'node not ready (a trigger of the test)'";

/// A child process killed when dropped, with its output in a log file.
pub struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> ChildGuard {
        let file = std::fs::File::create(&log).expect("create log file");
        let child = cmd
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard { child, log }
    }

    /// What the child has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("child status").is_none()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory for one test's files.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("celerity-test"));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Waits until `file` holds at least `n` JSON lines, or panics after `timeout`
/// with `context` (e.g. the other process's log).
pub async fn wait_for_json_lines(
    file: &Path,
    n: usize,
    timeout: Duration,
    context: impl Fn() -> String,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < timeout,
            "only {} of {n} lines in {} after {timeout:?}; log:\n{}",
            lines.len(),
            file.display(),
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `mysql://root@127.0.0.1:3306` of the shared test server, without a database.
pub fn mysql_base() -> String {
    std::env::var("CELERITY_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A database of this test's own on the shared MariaDB, dropped when dropped.
pub struct TestDatabase {
    name: String,
    base: String,
}

impl TestDatabase {
    /// Creates an empty database with a unique name on the shared server.
    pub fn create() -> TestDatabase {
        TestDatabase::create_on(&mysql_base())
    }

    /// Creates an empty database with a unique name on the server at `base`.
    pub fn create_on(base: &str) -> TestDatabase {
        let name = unique("celerity_test").replace('-', "_");
        admin_execute(base, &format!("CREATE DATABASE `{name}`"));
        TestDatabase { name, base: base.to_owned() }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.base, self.name)
    }

    /// A pooled handle on it, for the repository's functions.
    pub fn handle(&self) -> celerity_db::Db {
        celerity_db::Db::new(celerity_db::DbConfig::new(self.url())).expect("db handle")
    }

    /// A direct connection to it (not pooled).
    pub fn connect(&self) -> diesel::MysqlConnection {
        use diesel::Connection;
        diesel::MysqlConnection::establish(&self.url()).unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        admin_cleanup(&self.base, &format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

/// A user of its own on the shared server, with the privileges a worker
/// needs on each table of one migrated test database, whose grants a test can
/// take away; dropped when dropped. Table grants, not database grants: taking
/// one away reaches connections already open at their next statement.
pub struct TestUser {
    name: String,
    password: String,
    base: String,
    database: String,
}

impl TestUser {
    /// Creates the user with SELECT, INSERT, UPDATE and DELETE on every table of `db`.
    pub fn create(db: &TestDatabase) -> TestUser {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Table {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        let name = unique("cel").replace('-', "_");
        let user = TestUser { name, password: "pw-of-a-test".into(), base: db.base.clone(), database: db.name.clone() };
        user.admin(&format!("CREATE USER '{}'@'%' IDENTIFIED BY '{}'", user.name, user.password));
        let tables = diesel::sql_query(format!(
            "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = '{}'",
            db.name
        ))
        .load::<Table>(&mut db.connect())
        .expect("list the tables");
        assert!(!tables.is_empty(), "migrate {} before making its user", db.name);
        for table in tables {
            user.admin(&format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {{db}}.`{}` TO {{user}}", table.name));
        }
        user
    }

    /// The database's URL as this user, through 127.0.0.1:3306 or where `host_port` says.
    pub fn url_via(&self, host_port: &str) -> String {
        format!("mysql://{}:{}@{host_port}/{}", self.name, self.password, self.database)
    }

    /// The database's URL as this user on the shared server.
    pub fn url(&self) -> String {
        let host_port = self.base.rsplit_once('@').map_or("127.0.0.1:3306", |(_, hp)| hp);
        self.url_via(host_port)
    }

    /// Runs an administrative statement as root; `{user}` and `{db}` name this user and its database.
    pub fn admin(&self, statement: &str) {
        let statement = statement
            .replace("{user}", &format!("'{}'@'%'", self.name))
            .replace("{db}", &format!("`{}`", self.database));
        admin_execute(&self.base, &statement);
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        admin_cleanup(&self.base, &format!("DROP USER IF EXISTS '{}'@'%'", self.name));
    }
}

/// Runs a clean-up statement as root, if the server is there to take it.
fn admin_cleanup(base: &str, statement: &str) {
    use diesel::Connection;
    if let Ok(mut conn) = diesel::MysqlConnection::establish(base) {
        let _ = diesel::RunQueryDsl::execute(diesel::sql_query(statement), &mut conn);
    }
}

fn admin_execute(base: &str, statement: &str) {
    use diesel::Connection;
    let mut conn = diesel::MysqlConnection::establish(base).unwrap_or_else(|e| panic!("connect to {base}: {e}"));
    diesel::RunQueryDsl::execute(diesel::sql_query(statement), &mut conn)
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// A `mariadbd` of the test's own, on its own port and data directory, so a
/// test may stop, kill or freeze it without touching the shared server.
pub struct PrivateMariadb {
    dir: PathBuf,
    port: u16,
    extra: Vec<String>,
    server: Option<Child>,
}

impl PrivateMariadb {
    /// Initialises a data directory and starts the server; waits until it answers.
    pub fn start() -> PrivateMariadb {
        PrivateMariadb::start_in(temp_dir(), Vec::new())
    }

    /// The same in `dir`, with extra server options.
    pub fn start_in(dir: PathBuf, extra: Vec<String>) -> PrivateMariadb {
        let data = dir.join("data");
        // A temp directory of its own: concurrent bootstraps in /tmp collide.
        std::fs::create_dir_all(dir.join("tmp")).expect("tmp dir");
        let chown = Command::new("chown").args(["-R", "mysql:mysql"]).arg(&dir).status().expect("chown");
        assert!(chown.success(), "chown of the private directory failed");
        let install = Command::new("mariadb-install-db")
            .env("TMPDIR", dir.join("tmp"))
            .args(["--no-defaults", "--user=mysql", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("run mariadb-install-db (is mariadb-server installed?)");
        assert!(install.status.success(), "mariadb-install-db failed: {}", String::from_utf8_lossy(&install.stderr));
        let chown = Command::new("chown").args(["-R", "mysql:mysql"]).arg(&dir).status().expect("chown");
        assert!(chown.success(), "chown of the private data directory failed");
        let mut server = PrivateMariadb { dir, port: free_port(), extra, server: None };
        server.launch();
        server
    }

    /// Starts the server on its port and data; waits until it answers.
    pub fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("server log");
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .args(["--user=mysql", "--bind-address=127.0.0.1", "--skip-grant-tables"])
            .args(["--innodb-buffer-pool-size=32M", "--skip-log-bin", "--max-connections=50"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", self.dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("mysqld.pid").display()))
            .args(&self.extra)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        self.server = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() || !diesel_ping(&self.base()) {
            assert!(start.elapsed() < Duration::from_secs(60), "private mariadbd did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `mysql://root@127.0.0.1:PORT`, without a database.
    pub fn base(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.server.as_ref().expect("server running").id()
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`, `TERM`) to the server.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(ok.success(), "kill -{signal} failed");
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn diesel_ping(url: &str) -> bool {
    use diesel::Connection;
    diesel::MysqlConnection::establish(url).is_ok()
}

/// A worker configuration for tests: small pool, short timeouts, retries in
/// tenths of a second, so failure paths finish quickly.
pub fn worker_config(broker_url: &str, database_url: &str) -> celerity::config::WorkerConfig {
    use celerity::config::{Backoff, WorkerConfig};
    let defaults = WorkerConfig::new(broker_url, database_url);
    WorkerConfig {
        db: celerity_db::DbConfig {
            pool_size: 8,
            checkout_timeout: Duration::from_millis(500),
            call_timeout: Duration::from_secs(5),
            lock_wait_timeout: Duration::from_secs(2),
            ..defaults.db.clone()
        },
        concurrency: 4,
        // Below the 1 s retry countdowns of the tests, so those go through the delay queues.
        eta_window: Duration::from_millis(500),
        max_deliveries: 5,
        hostname: unique("celerity-test"),
        http_addr: "127.0.0.1:0".parse().expect("socket address"),
        backoff: Backoff { base: Duration::from_millis(200), max: Duration::from_millis(800), max_retries: 3 },
        shutdown_grace: Duration::from_secs(5),
        broker_wait: Duration::from_secs(10),
        delete_batch: 100,
        sweep_interval: None,
        ..defaults
    }
}

/// A worker running in this process until dropped.
pub struct InProcessWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), celerity::worker::WorkerError>>>,
}

impl InProcessWorker {
    /// Starts `celerity::worker::run_with` on the current runtime.
    pub fn start(config: celerity::config::WorkerConfig, registry: celerity::plugins::Registry) -> InProcessWorker {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(celerity::worker::run_with(config, registry, async move {
            let _ = stopped.await;
        }));
        InProcessWorker { stop: Some(stop), handle: Some(handle) }
    }

    /// Signals shutdown and waits for the worker to return; a worker that
    /// does not stop within a minute fails the test.
    pub async fn stop(mut self) -> Result<(), celerity::worker::WorkerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the worker did not stop within 60 s of being asked")
            .expect("worker task")
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One `schedule_schedule` row as text columns, for comparisons.
#[derive(Debug, Clone, PartialEq, diesel::QueryableByName)]
pub struct RowView {
    /// trace_id
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub trace_id: String,
    /// plugin_version
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub plugin_version: String,
    /// state
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub state: i32,
    /// invoke_count
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub invoke_count: i32,
    /// data
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub data: String,
    /// finish_at IS NOT NULL
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub finished: bool,
    /// scheduling
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub scheduling: bool,
    /// err
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub err: String,
}

/// Every schedule row of `db`, by trace id.
pub fn rows(db: &TestDatabase) -> std::collections::BTreeMap<String, RowView> {
    use diesel::RunQueryDsl;
    let mut conn = db.connect();
    diesel::sql_query(
        "SELECT trace_id, plugin_version, state, invoke_count, data, finish_at IS NOT NULL AS finished, scheduling, err \
         FROM schedule_schedule",
    )
    .load::<RowView>(&mut conn)
    .expect("read schedule_schedule")
    .into_iter()
    .map(|r| (r.trace_id.clone(), r))
    .collect()
}

/// Waits until `done` holds for the rows of `db`, or panics after `timeout`.
pub async fn wait_for_rows(
    db: &TestDatabase,
    timeout: Duration,
    done: impl Fn(&std::collections::BTreeMap<String, RowView>) -> bool,
) -> std::collections::BTreeMap<String, RowView> {
    let start = Instant::now();
    loop {
        let now = rows(db);
        if done(&now) {
            return now;
        }
        assert!(start.elapsed() < timeout, "rows not as expected after {timeout:?}: {now:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A database migrated by Celerity, on the shared server.
pub fn migrated_database() -> TestDatabase {
    let db = TestDatabase::create();
    let handle = celerity_db::Db::new(celerity_db::DbConfig::new(db.url())).expect("db handle");
    handle.blocking(celerity_db::migrate::run).expect("migrations");
    db
}

/// The `celerity` binary built by this workspace (`CELERITY_BIN` overrides).
pub fn celerity_bin() -> PathBuf {
    let path = std::env::var_os("CELERITY_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug/celerity")
    });
    assert!(path.exists(), "no celerity binary at {} (build the workspace, or set CELERITY_BIN)", path.display());
    path
}

/// `BIN worker --example-plugin --broker-url BROKER --database-url DATABASE`,
/// for more flags to follow.
pub fn example_worker(bin: PathBuf, broker: &str, database: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["worker", "--example-plugin", "--broker-url", broker, "--database-url", database]);
    cmd
}

/// The `celerity` binary a benchmark measures: `CELERITY_BIN`, else the
/// release build, else the debug build.
pub fn bench_celerity_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CELERITY_BIN") {
        return p.into();
    }
    let release = workspace_root().join("target/release/celerity");
    if release.exists() { release } else { workspace_root().join("target/debug/celerity") }
}

/// A local address with a port free right now, for a server a test starts.
pub fn free_local_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free local port")
}

/// GET `path` over plain HTTP/1.1: the status code and the body, or why
/// there is no answer (a server still starting refuses the connection).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[], b"")
}

/// One HTTP/1.1 request with these headers and body: the status code and
/// the body.
pub fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    // A server may answer (413) before reading a large body, and close.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    // A connection reset after the answer (the body left unread) keeps the answer.
    if let Err(e) = s.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(e);
    }
    let out = String::from_utf8_lossy(&raw).into_owned();
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let status = status.ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {out}")))?;
    Ok((status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// The value of one series (name and labels, as printed) in a `/metrics` text.
pub fn metric_sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

/// Waits until `/healthz` at `addr` answers `status`; returns its body.
pub async fn wait_health(addr: std::net::SocketAddr, status: u16, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let answer = tokio::task::spawn_blocking(move || http_get(addr, "/healthz")).await.expect("join");
        if let Ok((code, body)) = &answer
            && *code == status
        {
            return body.clone();
        }
        assert!(start.elapsed() < timeout, "/healthz at {addr} did not answer {status} within {timeout:?}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `celery -b <broker> inspect <command> -d <node> -j`: its exit status and stdout.
pub fn celery_inspect_once(broker: &str, command: &str, node: &str) -> (bool, String) {
    let out = Command::new(python())
        .args(["-m", "celery", "-b", broker, "inspect", command, "-d", node, "-t", "3", "-j"])
        .output()
        .expect("run celery inspect");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The node's reply to `celery inspect COMMAND`, once the worker's mailbox is up.
pub async fn celery_inspect(broker: &str, command: &'static str, node: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (b, n) = (broker.to_owned(), node.to_owned());
        let (ok, stdout) = tokio::task::spawn_blocking(move || celery_inspect_once(&b, command, &n)).await.unwrap();
        if ok {
            let all: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
            return all.get(node).cloned().unwrap_or_else(|| panic!("no reply from {node}: {stdout}"));
        }
        assert!(start.elapsed() < Duration::from_secs(30), "celery inspect {command} got no reply: {stdout}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
