//! The shared MariaDB: a database (and user) per test, schedule rows as the
//! framework's producer leaves them, and reading the rows back.

use std::time::{Duration, Instant};

use crate::unique;

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

    /// The database's URL with the same user through `host_port` (a proxy in front of its server).
    pub fn url_via(&self, host_port: &str) -> String {
        let user = self.base.trim_start_matches("mysql://").rsplit_once('@').map_or("root", |(u, _)| u);
        format!("mysql://{user}@{host_port}/{}", self.name)
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
pub(crate) fn admin_cleanup(base: &str, statement: &str) {
    use diesel::Connection;
    if let Ok(mut conn) = diesel::MysqlConnection::establish(base) {
        let _ = diesel::RunQueryDsl::execute(diesel::sql_query(statement), &mut conn);
    }
}

pub(crate) fn admin_execute(base: &str, statement: &str) {
    use diesel::Connection;
    let mut conn = diesel::MysqlConnection::establish(base).unwrap_or_else(|e| panic!("connect to {base}: {e}"));
    diesel::RunQueryDsl::execute(diesel::sql_query(statement), &mut conn)
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
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
