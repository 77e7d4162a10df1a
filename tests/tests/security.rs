//! Security basics on the real services: `amqps://` with a CA of the
//! operator's, MySQL over TLS through the URL's options, and credentials that
//! never show in logs, errors or `celerity status`.
//!
//! The worker's input surfaces, what attacks each, and which test proves it
//! holds (a reviewer's map; each test fails on the build before its fix):
//! - the remote-control mailbox (`celery.pidbox`, anyone on the vhost): a
//!   200,000-`*` pattern, an exponentially backtracking one and a 1 MiB
//!   request leave the worker up and answering a ping
//!   (`remote_control.rs`, `hostile_patterns_on_the_control_exchange_…`);
//! - configuration: a password holding `/`, `?`, `#`, `@` or `;` unencoded
//!   never shows in any output (`passwords_with_unencoded_delimiters_never_show`
//!   here); the admin token from a file, never both ways
//!   (`worker/src/config/validate.rs`);
//! - the plugin hosts: no inherited socket or descriptor beyond their pipes,
//!   no `CELERITY_*` setting in their environment
//!   (`python_plugins.rs`, `a_host_gets_no_database_socket_and_no_worker_secret`);
//! - the worker's own output: a plugin's log message holding `\n` and its
//!   output holding `\r` stay inside one line of the text log
//!   (`python_plugins.rs`, `plugin_output_cannot_forge_a_line_of_the_workers_log`);
//!   an `err` with a line break and a terminal escape is shown escaped by
//!   `celerity status` (`status.rs`, `status_escapes_control_characters_from_the_row`);
//! - plugin callbacks: an `https://` URL is verified, against an operator's
//!   CA when given (`worker_tasks.rs`, `an_https_callback_is_posted_when_its_ca_is_trusted`);
//!   a poll interval past the delay topology FAILs with a reason
//!   (`worker/src/tasks/decide.rs` unit tests);
//! - the plugin hosts' pipes: GBK bytes and a 100 MiB line on the output,
//!   `wait_poll(inf)`, a line written into the protocol during a step and
//!   one written after it by a forked child: each ends its own step only,
//!   none waits for good (`python_plugins.rs`,
//!   `hostile_plugin_output_ends_its_own_step_and_no_step_waits_for_good`);
//! - AMQP messages: malformed, binary and deeply nested bodies are
//!   dead-lettered with their reason (`faults.rs`, `broker-proto/tests/malformed.rs`);
//!   bodies of millions of small values are refused before they are parsed
//!   and the worker's peak memory stays bounded
//!   (`bodies_of_millions_of_values_are_refused_without_the_memory_to_parse_them`
//!   here);
//! - the HTTP endpoint: tokens, bad ids and bodies, oversized bodies, an
//!   actor longer than its column (`operator.rs`); idle connections beyond
//!   the cap and the descriptor limit, closed by the worker
//!   (`idle_http_connections_cannot_starve_the_worker_of_descriptors` here);
//!   `/healthz` never shows the database's text (`faults.rs`,
//!   `schedule_table_renamed_away_for_10_s`).

use std::process::{Command, Stdio};
use std::time::Duration;

use broker_proto::topology;
use celerity::broker::DEAD_LETTER_QUEUE;
use celerity::broker::properties::basic_properties;
use celerity::control::endpoint::MAX_CONNECTIONS;
use celerity::delivery::dead_letter::REASON_HEADER;
use celerity_tests::private_rabbitmq::PrivateRabbitmq;
use celerity_tests::procfs::peak_rss_kib;
use celerity_tests::tls::TestCerts;
use celerity_tests::workload::produce;
use celerity_tests::{
    ChildGuard, PrivateMariadb, TestDatabase, Vhost, celerity_bin, confirmed_channel, connect, declare_framework_queue,
    example_worker, migrated_database, publish_raw, task_message, temp_dir, unique, wait_for_rows,
};
use chrono::Utc;
use diesel::prelude::*;
use lapin::options::BasicGetOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqps_with_the_operators_ca_runs_schedules_and_refuses_an_unknown_ca() {
    let broker = PrivateRabbitmq::start_with_tls();
    let db = migrated_database();
    let conn = connect(&broker.url()).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let dir = temp_dir();

    // Not trusting the test CA: the TLS handshake fails, and the worker says so.
    let refused =
        example_worker(celerity_bin(), &broker.amqps_url(), &db.url()).args(["--broker-wait", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "an untrusted certificate must not be accepted");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(!stderr.contains("guest:guest"), "{stderr}");

    let mut cmd = Command::new(celerity_bin());
    cmd.args(["worker", "--example-plugin", "--broker-url", &broker.amqps_url(), "--database-url", &db.url()])
        .arg("--broker-ca-file")
        .arg(broker.ca_file())
        .args(["--queues", "plugin_schedule"]);
    let worker = ChildGuard::spawn(cmd, dir.join("worker.log"));
    let id = produce(&ch, &db.url(), "s", 3, 0).await;
    let done = wait_for_rows(&db, Duration::from_secs(30), |r| r.get(&id).is_some_and(|r| r.state == 4)).await;
    assert_eq!(done[&id].invoke_count, 4, "{}", worker.log());
    // The worker's connection is the TLS one.
    let ssl = broker.ctl(&["list_connections", "ssl", "user"]);
    assert!(ssl.lines().any(|l| l.starts_with("true")), "no TLS connection listed: {ssl}");
    drop(worker);
    let _ = std::fs::remove_dir_all(dir);
}

#[derive(QueryableByName)]
struct StatusValue {
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[diesel(column_name = Value)]
    value: String,
}

fn status(conn: &mut diesel::MysqlConnection, query: &str) -> String {
    diesel::sql_query(query).get_result::<StatusValue>(conn).unwrap().value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_over_tls_through_the_url_options() {
    let dir = temp_dir();
    let certs = TestCerts::create(&dir);
    let server = PrivateMariadb::start_in(
        dir.join("server"),
        vec![
            format!("--ssl-ca={}", certs.ca.display()),
            format!("--ssl-cert={}", certs.cert.display()),
            format!("--ssl-key={}", certs.key.display()),
        ],
    );
    let db = TestDatabase::create_on(&server.base());
    let tls = |ca: &std::path::Path| format!("{}?ssl_mode=verify_ca&ssl_ca={}", db.url(), ca.display());
    let out = Command::new(celerity_bin()).args(["migrate", "--database-url", &tls(&certs.ca)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut session = diesel::MysqlConnection::establish(&tls(&certs.ca)).unwrap();
    assert!(!status(&mut session, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").is_empty(), "the session is encrypted");
    // verify_ca checks the server's certificate: another CA is refused.
    let other = TestCerts::create(&std::fs::create_dir_all(dir.join("other")).map(|_| dir.join("other")).unwrap());
    let refused = Command::new(celerity_bin()).args(["migrate", "--database-url", &tls(&other.ca)]).output().unwrap();
    assert!(!refused.status.success(), "a server certificate from an unknown CA must be refused");

    let vhost = Vhost::create();
    let (_c, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let accepted_before: i64 = status(&mut session, "SHOW GLOBAL STATUS LIKE 'Ssl_accepts'").parse().unwrap();
    let mut cmd = Command::new(celerity_bin());
    cmd.args([
        "worker",
        "--example-plugin",
        "--broker-url",
        &vhost.url(),
        "--database-url",
        &tls(&certs.ca),
        "--queues",
        "plugin_schedule",
    ]);
    let worker = ChildGuard::spawn(cmd, dir.join("worker.log"));
    let id = produce(&ch, &db.url(), "s", 2, 0).await;
    let done = wait_for_rows(&db, Duration::from_secs(30), |r| r.get(&id).is_some_and(|r| r.state == 4)).await;
    assert_eq!(done[&id].invoke_count, 3, "{}", worker.log());
    let accepted_after: i64 = status(&mut session, "SHOW GLOBAL STATUS LIKE 'Ssl_accepts'").parse().unwrap();
    assert!(accepted_after > accepted_before, "the worker's connections were TLS handshakes");
    drop(worker);
    drop(session);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_never_show_in_logs_errors_or_status() {
    const BROKER_SECRET: &str = "brokerSecret-8f3a";
    const DB_SECRET: &str = "dbSecret-51c7";
    let vhost = Vhost::create();
    let db = migrated_database();
    let vhost_name = vhost.url().rsplit('/').next().unwrap().to_owned();
    let user = unique("celerity-user");
    let rabbit = |args: &[&str]| {
        let out = Command::new("rabbitmqctl").args(args).output().unwrap();
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    rabbit(&["add_user", &user, BROKER_SECRET]);
    rabbit(&["set_permissions", "-p", &vhost_name, &user, ".*", ".*", ".*"]);
    let db_user: String = unique("cel").replace('-', "").chars().take(16).collect();
    let db_name = db.url().rsplit('/').next().unwrap().to_owned();
    let mut admin = db.connect();
    diesel::sql_query(format!("CREATE USER '{db_user}'@'%' IDENTIFIED BY '{DB_SECRET}'")).execute(&mut admin).unwrap();
    diesel::sql_query(format!("GRANT ALL ON `{db_name}`.* TO '{db_user}'@'%'")).execute(&mut admin).unwrap();
    let broker_url = format!("amqp://{user}:{BROKER_SECRET}@127.0.0.1:5672/{vhost_name}");
    let db_url = format!("mysql://{db_user}:{DB_SECRET}@127.0.0.1:3306/{db_name}");
    let clean = |what: &str, text: &str| {
        assert!(!text.contains(BROKER_SECRET) && !text.contains(DB_SECRET), "a password shows in {what}:\n{text}");
    };
    let dir = temp_dir();

    // A run with debug logs: a schedule and a malformed message.
    let (_c, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let mut cmd = Command::new(celerity_bin());
    cmd.env("RUST_LOG", "debug").args([
        "worker",
        "--example-plugin",
        "--broker-url",
        &broker_url,
        "--database-url",
        &db_url,
        "--queues",
        "plugin_schedule",
    ]);
    let worker = ChildGuard::spawn(cmd, dir.join("worker.log"));
    let id = produce(&ch, &db.url(), "s", 2, 0).await;
    celerity_tests::publish_raw(&ch, "", topology::SCHEDULE_QUEUE.name, b"not json", Default::default()).await;
    wait_for_rows(&db, Duration::from_secs(30), |r| r.get(&id).is_some_and(|r| r.state == 4)).await;
    let status = Command::new(celerity_bin()).args(["status", &id, "--database-url", &db_url]).output().unwrap();
    assert!(status.status.success());
    clean("celerity status", &String::from_utf8_lossy(&status.stdout));
    let json = Command::new(celerity_bin()).args(["status", "--summary", "--json", "--database-url", &db_url]).output();
    clean("celerity status --json", &String::from_utf8_lossy(&json.unwrap().stdout));
    drop(worker);
    clean("the worker's debug log", &std::fs::read_to_string(dir.join("worker.log")).unwrap());

    // Wrong passwords and bad URLs: every error line keeps the secret out.
    let wrong_db = db_url.replace(DB_SECRET, &format!("{DB_SECRET}x"));
    let wrong_broker = broker_url.replace(BROKER_SECRET, &format!("{BROKER_SECRET}x"));
    let (b, d) = (broker_url.as_str(), db_url.as_str());
    let bad_scheme_broker = broker_url.replace("amqp://", "http://");
    let bad_scheme_db = db_url.replace("mysql://", "postgres://");
    let runs: [(&str, &[&str]); 7] = [
        (
            "worker, wrong broker password",
            &["worker", "--example-plugin", "--broker-url", &wrong_broker, "--database-url", d, "--broker-wait", "1"],
        ),
        (
            "worker, broker URL with a bad scheme",
            &["worker", "--example-plugin", "--broker-url", &bad_scheme_broker, "--database-url", d],
        ),
        (
            "worker, database URL with a bad scheme",
            &["worker", "--example-plugin", "--broker-url", b, "--database-url", &bad_scheme_db],
        ),
        ("migrate, wrong database password", &["migrate", "--database-url", &wrong_db]),
        ("status, wrong database password", &["status", "--summary", "--database-url", &wrong_db]),
        ("sweep, wrong database password", &["sweep", "--dry-run", "--database-url", &wrong_db]),
        (
            "sweep, wrong broker password",
            &["sweep", "--broker-wait", "1", "--broker-url", &wrong_broker, "--database-url", d],
        ),
    ];
    for (what, args) in runs {
        let out = Command::new(celerity_bin()).args(args).stdin(Stdio::null()).output().unwrap();
        assert!(!out.status.success(), "{what} must fail");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.trim().is_empty(), "{what} says why");
        clean(what, &text);
    }

    // A worker whose database refuses its password exits at start-up with
    // one clear line, rather than failing every schedule it takes.
    let out =
        example_worker(celerity_bin(), &broker_url, &wrong_db).args(["--queues", "plugin_schedule"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a refused password is bad configuration");
    assert!(stderr.contains("1045") || stderr.contains("Access denied"), "the refusal is named: {stderr}");
    clean("the error of a worker with a wrong database password", &stderr);
    rabbit(&["delete_user", &user]);
    diesel::sql_query(format!("DROP USER '{db_user}'@'%'")).execute(&mut admin).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Passwords holding URL delimiters unencoded (`/`, `?`, `#`, `@`, `;`):
/// such a URL does not work, and the worker says so without showing the
/// password (before, `mysql://root:ab/cd@…` was logged whole).
#[test]
fn passwords_with_unencoded_delimiters_never_show() {
    for secret in ["sl/ash-5e1f", "qu?ery-5e1f", "ha#sh-5e1f", "at@sign-5e1f", "semi;colon-5e1f"] {
        let db_url = format!("mysql://root:{secret}@127.0.0.1:3306/celerity");
        let broker_url = format!("amqp://guest:{secret}@127.0.0.1:5672/%2f");
        let runs: [(&str, Vec<&str>); 3] = [
            ("a worker's database URL", vec!["worker", "--example-plugin", "--database-url", &db_url]),
            ("a worker's broker URL", vec!["worker", "--example-plugin", "--broker-url", &broker_url]),
            ("migrate", vec!["migrate", "--database-url", &db_url]),
        ];
        for (what, args) in runs {
            let out = Command::new(celerity_bin())
                .args(&args)
                .args(["--broker-wait", "1"].iter().filter(|_| args[0] == "worker"))
                .env("RUST_LOG", "debug")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(!out.status.success(), "{what} with {secret} must fail: {text}");
            let tail = secret.split(['/', '?', '#', '@', ';']).nth(1).unwrap();
            assert!(!text.contains(secret) && !text.contains(tail), "{what}: the password shows:\n{text}");
        }
    }
}

/// As many idle connections as the HTTP port of a worker whose descriptor
/// limit is 256 takes (up to a thousand): the endpoint serves at most its
/// cap at once and closes idle ones, so the worker keeps the descriptors its
/// database pool needs and every schedule runs (before, the idle sockets
/// used the limit up: "Too many open files"). `/healthz` answers as soon as
/// they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_http_connections_cannot_starve_the_worker_of_descriptors() {
    let vhost = Vhost::create();
    let db = migrated_database();
    let (_c, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let http = celerity_tests::free_local_addr();
    let dir = temp_dir();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -n 256 && exec "$@""#)
        .arg("sh")
        .arg(celerity_bin())
        .args(["worker", "--example-plugin", "--broker-url", &vhost.url(), "--database-url", &db.url()])
        .args(["--queues", "plugin_schedule", "--concurrency", "16", "--http-addr", &http.to_string()]);
    let mut worker = ChildGuard::spawn(cmd, dir.join("worker.log"));
    celerity_tests::wait_health(http, 200, Duration::from_secs(30)).await;
    // Past the cap they wait in the kernel's backlog; ten connects in a row
    // that time out mean that is full too.
    let (mut idle, mut missed) = (Vec::new(), 0);
    while idle.len() < 1000 && missed < 10 {
        match std::net::TcpStream::connect_timeout(&http, Duration::from_millis(100)) {
            Ok(socket) => (idle.push(socket), missed = 0).1,
            Err(_) => missed += 1,
        }
    }
    assert!(idle.len() > 2 * MAX_CONNECTIONS, "only {} connections opened", idle.len());
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(produce(&ch, &db.url(), "s", 3, 0).await);
    }
    wait_for_rows(&db, Duration::from_secs(60), |r| ids.iter().all(|id| r.get(id).is_some_and(|r| r.state == 4))).await;
    assert!(worker.running(), "{}", worker.log());
    assert!(!worker.log().contains("Too many open files"), "{}", worker.log());
    // A connection that never sends a request is closed by the worker.
    let mut first = &idle[0];
    first.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(std::io::Read::read(&mut first, &mut byte), Ok(0)), "an idle connection was not closed");
    // Once they go, the endpoint answers again at once.
    drop(idle);
    celerity_tests::wait_health(http, 200, Duration::from_secs(30)).await;
}

/// Four 15 MiB bodies of zeros (`[[0,0,…],{},{}]`, ~8M JSON values each,
/// under the byte cap) sent together to a worker: each is refused unparsed
/// and dead-lettered with the reason, the worker's peak memory stays far
/// below what parsing them takes (2.4 GiB before the value cap), and the
/// schedules sent after them run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_of_millions_of_values_are_refused_without_the_memory_to_parse_them() {
    let vhost = Vhost::create();
    let db = migrated_database();
    let (_c, ch) = confirmed_channel(&vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let mut cmd = example_worker(celerity_bin(), &vhost.url(), &db.url());
    cmd.args(["--queues", "plugin_schedule", "--concurrency", "16"]);
    let dir = temp_dir();
    let worker = ChildGuard::spawn(cmd, dir.join("worker.log"));
    let first = produce(&ch, &db.url(), "s", 1, 0).await;
    wait_for_rows(&db, Duration::from_secs(30), |r| r.get(&first).is_some_and(|r| r.state == 4)).await;
    let before_kib = peak_rss_kib(worker.pid());

    let bomb = format!("[[{}0], {{}}, {{}}]", "0,".repeat(15 * 512 * 1024));
    let out =
        broker_proto::encode(&task_message(topology::SCHEDULE_TASK, &[("trace_id", "bomb")]), Utc::now()).unwrap();
    let props = basic_properties(&out.properties).unwrap();
    for _ in 0..4 {
        publish_raw(&ch, "", topology::SCHEDULE_QUEUE.name, bomb.as_bytes(), props.clone()).await;
    }
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(produce(&ch, &db.url(), "s", 2, 0).await);
    }
    wait_for_rows(&db, Duration::from_secs(60), |r| ids.iter().all(|id| r.get(id).is_some_and(|r| r.state == 4))).await;

    let peak_kib = peak_rss_kib(worker.pid());
    println!("decoding bomb: peak RSS {} MiB, {} MiB before the bodies", peak_kib / 1024, before_kib / 1024);
    assert!(peak_kib < 512 * 1024, "peak RSS {} MiB", peak_kib / 1024);
    let mut reasons = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reasons.len() < 4 && std::time::Instant::now() < deadline {
        let got = ch.basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true }).await.unwrap();
        match got {
            Some(dead) => {
                let headers = dead.delivery.properties.headers().clone().unwrap_or_default();
                reasons.push(
                    headers.inner().get(REASON_HEADER).and_then(broker_proto::header::as_text).unwrap_or("").to_owned(),
                );
                assert_eq!(dead.delivery.data.len(), bomb.len(), "dead-lettered whole");
            }
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert_eq!(reasons.len(), 4, "{reasons:?}\n{}", worker.log());
    for reason in &reasons {
        assert!(reason.contains("more than 100000 JSON values"), "{reason}");
    }
}
