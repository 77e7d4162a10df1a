//! `celerity migrate`: create Celerity's tables, and `schedule_schedule`
//! where it does not exist yet; safe to run again.

use crate::config::flags::MigrateArgs;
use crate::config::validate::open_database;

/// Runs the migrations not run yet and says which.
pub fn run(args: MigrateArgs) -> Result<String, String> {
    let db = open_database(args.database.config()?)?;
    let ran = db.blocking(celerity_db::migrate::run).map_err(|e| e.to_string())?;
    Ok(if ran.is_empty() { "nothing to migrate".into() } else { format!("ran migrations: {}", ran.join(", ")) })
}
