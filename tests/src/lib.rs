//! Harness for the integration tests: the real RabbitMQ (a private vhost per
//! test), the real MariaDB (a database per test), the Python venv with real
//! Celery, and child processes that are killed when a test ends, pass or
//! fail. One file per thing a test starts or talks to; everything is
//! re-exported here, so tests name `celerity_tests::Vhost` and the like.

pub mod broker;
pub mod celery_cli;
pub mod database;
pub mod firewall;
pub mod galera;
pub mod ha;
pub mod http;
pub mod in_process;
pub mod ledger;
pub mod nemesis;
pub mod otlp;
pub mod paths;
pub mod plugin_project;
pub mod private_mariadb;
pub mod private_rabbitmq;
pub mod processes;
pub mod procfs;
pub mod rabbit_cluster;
pub mod tls;
pub mod workload;

pub use broker::*;
pub use celery_cli::*;
pub use database::*;
pub use http::*;
pub use in_process::*;
pub use paths::*;
pub use private_mariadb::*;
pub use processes::*;
