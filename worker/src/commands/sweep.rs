//! `celerity sweep`: one sweeper round now, waiting for a worker's round to
//! finish, or with `--dry-run` the list of what it would re-enqueue.

use std::time::Duration;

use celerity_db::DbConfig;

use super::hand_back::connect_publisher;
use crate::config::flags::SweepArgs;
use crate::config::validate::{open_database, parse_zone};
use crate::tasks::messages::Sender;
use crate::worker::sweeper::{self, SweepOutcome};

/// How long a sweep by hand waits for a worker's round to let go of the lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Runs the round and lists the schedules, as text or JSON.
pub async fn run(args: SweepArgs) -> Result<String, String> {
    let settings = args.sweep.settings()?;
    let db = open_database(DbConfig { time_zone: parse_zone(&args.db_time_zone)?, ..args.database.config()? })?;
    let found = if args.dry_run {
        sweeper::stranded_now(&db, settings).await.map_err(|e| e.to_string())?
    } else {
        let (conn, publisher) = connect_publisher(&args.broker).await?;
        let sender = Sender::new(&gethostname::gethostname().to_string_lossy());
        let outcome = sweeper::sweep_once(&db, &publisher, &sender, settings, LOCK_WAIT).await;
        let _ = conn.close(200, "sweep done".into()).await;
        match outcome.map_err(|e| e.to_string())? {
            SweepOutcome::Swept(done) => done,
            SweepOutcome::Busy => return Err("another sweeper held the lock for 60 s; try again".into()),
        }
    };
    let verb = if args.dry_run { "stranded" } else { "re-enqueued" };
    if args.json {
        let list: Vec<_> =
            found.iter().map(|s| serde_json::json!({"trace_id": s.trace_id, "invoke_count": s.invoke_count})).collect();
        return Ok(serde_json::json!({ verb: list }).to_string());
    }
    let mut text = format!("{} schedule(s) {verb}\n", found.len());
    for s in &found {
        text.push_str(&format!("{} invoke_count={}\n", s.trace_id, s.invoke_count));
    }
    Ok(text)
}
