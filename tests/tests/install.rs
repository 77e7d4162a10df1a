//! The wheel where plugins run (issue 27): `pip install` of the x86_64
//! wheel into a venv of a clean Debian bullseye root (glibc 2.31, Python
//! 3.9, no MySQL or TLS library) and a clean bookworm root, both made by
//! `debootstrap --variant=minbase`, beside the real framework and the test
//! plugin project. There, the plugin app's `schedule` command with one word
//! changed (`celery` → `celerity`) and nothing but the runtime's environment
//! runs the project's schedules end to end against the real services.
//!
//! scripts/test prepares the roots (cached) and the wheel, and names them in
//! `CELERITY_TEST_INSTALL_ROOTS` (`release=path,...`); without it this test
//! fails with instructions, it is never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use celerity_tests::plugin_project::Project;
use celerity_tests::{ChildGuard, RowView, mysql_base, rows, temp_dir};
use serde_json::json;

/// The plugin app's `schedule` process, as its app_desc.yml has it, with `celery` changed to `celerity`.
const SCHEDULE_COMMAND: &str = "celerity -A blueapps.core.celery worker -P threads -n schedule_worker@%h -c 500 \
     -Q plugin_schedule,plugin_callback,schedule_delete -l INFO";

fn roots() -> Vec<(String, PathBuf)> {
    let named = std::env::var("CELERITY_TEST_INSTALL_ROOTS").unwrap_or_else(|_| {
        panic!(
            "CELERITY_TEST_INSTALL_ROOTS is not set: run scripts/test, which builds the wheel and prepares the roots"
        )
    });
    named
        .split(',')
        .map(|pair| {
            let (release, path) = pair.split_once('=').expect("release=path");
            (release.to_owned(), PathBuf::from(path))
        })
        .collect()
}

/// `ARGV` in `root`, in the project's directory, with the venv on PATH and
/// nothing else of this process's environment (as the PaaS runs a process);
/// more arguments may follow.
fn in_root(root: &Path, argv: &str) -> Command {
    // By path: the child's PATH (the root's) would be searched for it.
    let mut cmd = Command::new("/usr/sbin/chroot");
    cmd.arg(root).args(["/bin/sh", "-c", "cd /opt/plugin/project && exec \"$@\"", "sh"]);
    cmd.args(argv.split_whitespace()).env_clear();
    cmd.envs([
        ("PATH", "/opt/plugin/venv/bin:/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/root"),
        ("LANG", "C.UTF-8"),
        ("VIRTUAL_ENV", "/opt/plugin/venv"),
    ]);
    cmd
}

/// [`in_root`] with the plugin runtime's settings of `project`, the project on PYTHONPATH.
fn in_project(root: &Path, project: &Project, argv: &str) -> Command {
    let mut cmd = in_root(root, argv);
    for (key, value) in project.env() {
        let value = if key == "PYTHONPATH" { "/opt/plugin/project".to_owned() } else { value };
        cmd.env(key, value);
    }
    cmd
}

fn final_rows(rows: &std::collections::BTreeMap<String, RowView>) -> bool {
    rows.values().all(|r| r.state == 4 || r.state == 5)
}

fn id(name: &str) -> String {
    format!("{name:0<32}")
}

/// The worker's /metrics on its default address (empty until it serves).
fn scrape() -> String {
    celerity_tests::http_get("127.0.0.1:9540".parse().expect("address"), "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

async fn runs_the_projects_schedules(release: &str, root: &Path) {
    let dir = temp_dir();
    let python = celerity_tests::python();
    // Celerity's tables made by the installed celerity, from the runtime's settings.
    let project = Project::migrated_by(&python, &mysql_base(), in_root(root, "celerity"));
    let version = in_project(root, &project, "celerity --version").output().unwrap();
    assert!(version.status.success(), "{release}: {}", String::from_utf8_lossy(&version.stderr));
    project.produce(&[
        (&id("polls"), "1.0.0", json!({"polls": 3}), json!({})),
        (&id("failat"), "1.0.0", json!({"polls": 3, "fail_at": 3}), json!({})),
        (&id("waits"), "1.2.0", json!({}), json!({})),
    ]);
    let worker = ChildGuard::spawn(in_project(root, &project, SCHEDULE_COMMAND), dir.join(format!("{release}.log")));
    let start = Instant::now();
    while rows(&project.db)[&id("waits")].state != 3 || rows(&project.db)[&id("polls")].state != 4 {
        assert!(start.elapsed() < Duration::from_secs(90), "{release}: polls not done:\n{}", worker.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    project.callback(&id("waits"), "cb-1", &json!({"answer": 42}));
    while !final_rows(&rows(&project.db)) {
        assert!(start.elapsed() < Duration::from_secs(120), "{release}: callback not done:\n{}", worker.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let done = rows(&project.db);
    assert_eq!((done[&id("polls")].state, done[&id("polls")].invoke_count), (4, 4), "{release}");
    assert_eq!(done[&id("failat")].err, "plugin schedule failed: fail_at reached", "{release}");
    assert!(done[&id("waits")].data.contains(r#""callback_data": {"answer": 42}"#), "{release}");

    // The queues' counts that c-monitor exported, on /metrics.
    let start = Instant::now();
    let metrics = loop {
        let metrics = scrape();
        if metrics.contains(r#"celerity_queue_consumers{queue="plugin_schedule"} 1"#) {
            break metrics;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{release}: no queue counts on /metrics:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(metrics.contains(r#"celerity_queue_messages{queue="schedule_delete",state="ready"} 0"#), "{metrics}");
    assert!(metrics.contains(r#"celerity_queue_messages{queue="plugin_callback",state="unacked"} 0"#), "{metrics}");

    // What the start-up said: the venv's interpreter found beside celerity, the
    // Celery flags without effect, the node name with %h expanded, the runtime's
    // settings, and the tables' zone from the project's Django settings.
    let log = worker.log();
    drop(worker);
    let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
    for said in [
        "plugin hosts' interpreter /opt/plugin/venv/bin/python from the virtual environment celerity is installed in",
        "-A blueapps.core.celery has no effect",
        "-P threads has no effect",
        &format!("schedule_worker@{}", host.trim()),
        "from BK_PLUGIN_RUNTIME_DB_*",
        "database time zone from the project's Django settings (TIME_ZONE, USE_TZ) zone=Asia/Shanghai",
        "from BK_PLUGIN_RUNTIME_BROKER_URL",
    ] {
        assert!(log.contains(said), "{release}: the log does not say {said:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wheel_runs_a_plugin_project_on_bullseye_and_bookworm_with_the_celery_command_line() {
    // One root after the other: each worker serves /metrics on the default address.
    for (release, root) in roots() {
        runs_the_projects_schedules(&release, &root).await;
    }
}
