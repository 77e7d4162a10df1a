//! The embedded migrations: Celerity's own tables, and `schedule_schedule`
//! where the framework's Django migrations have not made it. diesel records
//! what ran in `__diesel_schema_migrations`, so running twice is harmless.

use diesel::MysqlConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::DbError;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Runs every pending migration; returns the versions it ran.
pub fn run(conn: &mut MysqlConnection) -> Result<Vec<String>, DbError> {
    let ran = conn.run_pending_migrations(MIGRATIONS).map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(ran.into_iter().map(|v| v.to_string()).collect())
}
