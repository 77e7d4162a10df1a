//! A `mariadbd` of the test's own, which a test may stop, kill or freeze.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::{free_port, temp_dir};

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

pub(crate) fn diesel_ping(url: &str) -> bool {
    use diesel::Connection;
    diesel::MysqlConnection::establish(url).is_ok()
}
