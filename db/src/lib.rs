//! The database layer: the framework's `schedule_schedule` table, Celerity's
//! own tables (retry bookkeeping, attempt log, operator pauses and actions), the r2d2 pool over diesel's
//! MySQL connection, and whose fault each database error is.
//!
//! Everything here is blocking diesel; async callers go through [`Db::call`],
//! which runs on `spawn_blocking` under a deadline.

mod class;
pub mod codes;
mod config;
pub mod daily;
mod db;
mod diagnose;
mod error;
pub mod migrate;
mod models;
pub mod operator;
mod pool;
mod prepared;
pub mod repo;
pub mod schema;
pub mod status;
pub mod stranded;
mod tx;

pub use chrono_tz::Tz;
pub use class::ErrorClass;
pub use codes::MysqlCode;
pub use config::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LOCK_WAIT_TIMEOUT,
    DEFAULT_MAX_LIFETIME, DEFAULT_POOL_SIZE, DbConfig, redact_url,
};
pub use db::Db;
pub use diesel::MysqlConnection;
pub use error::DbError;
pub use models::{
    ActionRecord, Attempt, HeldCallback, NewSchedule, Parked, PauseRecord, PollResult, RetryState, ScheduleRow, State,
};
pub use status::Status;
