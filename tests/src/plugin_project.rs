//! The test plugin project (`tests/python/plugin_project`): the real
//! bk-plugin-framework 2.3.15 with plugins of our own, run by the
//! framework's own Celery worker and by Celerity's plugin hosts, with the
//! framework's own producer and callback API. Both read the plugin
//! runtime's settings names (`BK_PLUGIN_RUNTIME_DB_*`,
//! `BK_PLUGIN_RUNTIME_BROKER_URL`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{ChildGuard, TestDatabase, Vhost, celerity_bin, mysql_base, workspace_root};

/// The project's directory (on `PYTHONPATH`).
pub fn dir() -> PathBuf {
    workspace_root().join("tests/python/plugin_project")
}

/// The test venv's interpreter with pydantic v1 and the framework
/// (`CELERITY_TEST_PYTHON_PYDANTIC1`, else `.venv-pydantic1`). A missing
/// venv fails the test with instructions; it is never skipped.
pub fn python_pydantic1() -> PathBuf {
    let path = std::env::var_os("CELERITY_TEST_PYTHON_PYDANTIC1")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-pydantic1/bin/python"));
    assert!(path.exists(), "no pydantic v1 venv at {} (run scripts/test, which creates it)", path.display());
    path
}

/// The environment a process of the project runs in, on `db` and the
/// broker at `broker_url`: the project on `PYTHONPATH`, its Django settings,
/// and the plugin runtime's database and broker settings.
pub fn env(db: &TestDatabase, broker_url: &str) -> Vec<(String, String)> {
    env_for_url(&db.url(), broker_url)
}

/// [`env`] for the database at `url` (`mysql://user[:password]@host:port/name`),
/// e.g. as another user or through another node.
pub fn env_for_url(url: &str, broker_url: &str) -> Vec<(String, String)> {
    let rest = url.trim_start_matches("mysql://");
    let (userinfo, location) = rest.rsplit_once('@').unwrap_or(("root", rest));
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host_port, name) = location.split_once('/').expect("a database name");
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "3306"));
    vec![
        ("PYTHONPATH".into(), dir().display().to_string()),
        ("DJANGO_SETTINGS_MODULE".into(), "plugin_project.settings".into()),
        ("BK_PLUGIN_RUNTIME_DB_NAME".into(), name.into()),
        ("BK_PLUGIN_RUNTIME_DB_HOST".into(), host.into()),
        ("BK_PLUGIN_RUNTIME_DB_PORT".into(), port.into()),
        ("BK_PLUGIN_RUNTIME_DB_USER".into(), user.into()),
        ("BK_PLUGIN_RUNTIME_DB_PWD".into(), password.into()),
        ("BK_PLUGIN_RUNTIME_BROKER_URL".into(), broker_url.to_owned()),
    ]
}

/// A database and a vhost the project's processes share.
pub struct Project {
    /// The project's database, migrated by Django and by Celerity.
    pub db: TestDatabase,
    /// Its broker vhost.
    pub vhost: Vhost,
    /// More environment for every process of the project (tracing settings, say).
    pub extra_env: Vec<(String, String)>,
    python: PathBuf,
}

impl Project {
    /// A fresh database migrated by the framework's Django migrations (its
    /// `schedule_schedule`) and by `celerity migrate` (Celerity's tables), and
    /// a fresh vhost, for the project run with `python`.
    pub fn new(python: &Path) -> Project {
        Project::on(python, &mysql_base())
    }

    /// [`Project::new`] on the server at `base` (a cluster's proxy, say).
    pub fn on(python: &Path, base: &str) -> Project {
        Project::migrated_by(python, base, Command::new(celerity_bin()))
    }

    /// [`Project::on`], with Celerity's tables made by `celerity`
    /// (`migrate` and the runtime's settings are added to it).
    pub fn migrated_by(python: &Path, base: &str, mut celerity: Command) -> Project {
        let project = Project {
            db: TestDatabase::create_on(base),
            vhost: Vhost::create(),
            extra_env: Vec::new(),
            python: python.to_owned(),
        };
        project.run(&["migrate"]);
        let out = celerity.arg("migrate").envs(project.env()).output().unwrap();
        assert!(out.status.success(), "celerity migrate: {}", String::from_utf8_lossy(&out.stderr));
        project
    }

    /// The environment a process of the project runs in.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = env(&self.db, &self.vhost.url());
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Runs `project.py ARGS` (migrate, produce, callback); its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.python)
            .arg(dir().join("project.py"))
            .args(args)
            .envs(self.env())
            .current_dir(dir())
            .output()
            .expect("run project.py");
        assert!(out.status.success(), "project.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// The framework's own producer: `BKPluginExecutor.execute` for each
    /// `(trace_id, version, inputs, context)`.
    pub fn produce(&self, specs: &[(&str, &str, serde_json::Value, serde_json::Value)]) {
        let specs: Vec<serde_json::Value> = specs
            .iter()
            .map(|(t, v, i, c)| serde_json::json!({"trace_id": t, "version": v, "inputs": i, "context": c}))
            .collect();
        let out = self.run(&["produce", &serde_json::Value::Array(specs.clone()).to_string()]);
        assert_eq!(out.lines().count(), specs.len(), "one line per schedule: {out}");
        for line in out.lines() {
            let produced: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert!(produced["err"].is_null(), "the producer's execute failed: {produced}");
        }
    }

    /// The framework's callback API for a schedule waiting in CALLBACK.
    pub fn callback(&self, trace_id: &str, callback_id: &str, data: &serde_json::Value) {
        let out = self.run(&["callback", trace_id, callback_id, &data.to_string()]);
        assert!(out.contains("\"result\": true"), "the callback API refused: {out}");
    }

    /// What the framework's own readers see of a schedule (its model and its
    /// State enum): `{"state": "POLL", "err", "finished", "outputs"}`.
    pub fn read(&self, trace_id: &str) -> serde_json::Value {
        serde_json::from_str(&self.run(&["read", trace_id])).expect("one JSON line")
    }

    /// `celerity worker --python` on this project, with `extra` flags.
    pub fn celerity(&self, extra: &[&str], log: PathBuf) -> ChildGuard {
        let mut cmd = Command::new(celerity_bin());
        cmd.args(["worker", "--python"])
            .arg(&self.python)
            .args(["--broker-url", &self.vhost.url(), "--database-url", &self.db.url()])
            .args(["--db-time-zone", "Asia/Shanghai", "--sweep-interval", "0"])
            .args(extra)
            .envs(self.env())
            .current_dir(dir());
        if !extra.contains(&"--http-addr") {
            cmd.args(["--http-addr", "127.0.0.1:0"]);
        }
        ChildGuard::spawn(cmd, log)
    }

    /// The framework's own Celery worker (prefork, 2 children) on this project.
    pub fn framework_worker(&self, log: PathBuf) -> ChildGuard {
        self.framework_worker_on(&self.db.url(), log)
    }

    /// [`Project::framework_worker`] on the database at `url` (another
    /// user, another node).
    pub fn framework_worker_on(&self, url: &str, log: PathBuf) -> ChildGuard {
        let mut cmd = Command::new(&self.python);
        cmd.args(["-m", "celery", "-A", "plugin_project.celery_app", "worker", "-P", "prefork", "-c", "2"])
            .args(["-Q", "plugin_schedule,plugin_callback", "--without-gossip", "--without-mingle", "-l", "INFO"])
            .args(["-n", &format!("{}@%h", crate::unique("framework"))])
            .envs(env_for_url(url, &self.vhost.url()))
            .envs(self.extra_env.iter().cloned())
            .current_dir(dir());
        ChildGuard::spawn(cmd, log)
    }
}
