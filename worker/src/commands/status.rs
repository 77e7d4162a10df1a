//! `celerity status`: a schedule as an operator needs to see it, and counts
//! by status (see [`crate::operator::view`]).

use crate::config::flags::StatusArgs;
use crate::config::validate::open_database;
use crate::operator::view;

/// One schedule or the counts by status, as text or JSON.
pub fn run(args: StatusArgs) -> Result<String, String> {
    let db = open_database(args.database.config()?)?;
    let printed = match &args.trace_id {
        Some(id) => db.blocking(|c| view::schedule(c, id)).map(|s| if args.json { json(&s) } else { s.render() }),
        None => db.blocking(view::summary).map(|s| if args.json { json(&s) } else { s.render() }),
    };
    printed.map_err(|e| e.to_string())
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("the status views serialise")
}
