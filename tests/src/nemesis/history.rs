//! Reads a run's history for the checker: the rows and Celerity's attempt
//! log from the database, the plugin's ledger from its files, and what is
//! left in the broker's queues.

use std::collections::BTreeMap;
use std::path::Path;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Text};

use super::checker::{Row, Step};

#[derive(QueryableByName)]
struct RowLine {
    #[diesel(sql_type = Text)]
    trace_id: String,
    #[diesel(sql_type = Integer)]
    state: i32,
    #[diesel(sql_type = Integer)]
    invoke_count: i32,
    #[diesel(sql_type = Bool)]
    finished: bool,
    #[diesel(sql_type = Text)]
    err: String,
}

#[derive(QueryableByName)]
struct AttemptLine {
    #[diesel(sql_type = Text)]
    trace_id: String,
    #[diesel(sql_type = Integer)]
    attempt: i32,
}

#[derive(QueryableByName)]
struct Sweeps {
    #[diesel(sql_type = BigInt)]
    schedules: i64,
    #[diesel(sql_type = BigInt)]
    sweeps: i64,
}

/// The rows whose trace id starts with `prefix`.
pub fn rows(conn: &mut MysqlConnection, prefix: &str) -> QueryResult<BTreeMap<String, Row>> {
    let lines: Vec<RowLine> = diesel::sql_query(
        "SELECT trace_id, state, invoke_count, finish_at IS NOT NULL AS finished, err \
         FROM schedule_schedule WHERE trace_id LIKE CONCAT(?, '%')",
    )
    .bind::<Text, _>(prefix)
    .load(conn)?;
    Ok(lines
        .into_iter()
        .map(|l| (l.trace_id, Row { state: l.state, invoke_count: l.invoke_count, finished: l.finished, err: l.err }))
        .collect())
}

/// Celerity's attempt log: each schedule's attempt numbers, oldest first.
pub fn attempts(conn: &mut MysqlConnection, prefix: &str) -> QueryResult<BTreeMap<String, Vec<i32>>> {
    let lines: Vec<AttemptLine> = diesel::sql_query(
        "SELECT trace_id, attempt FROM celerity_attempt WHERE trace_id LIKE CONCAT(?, '%') ORDER BY trace_id, attempt",
    )
    .bind::<Text, _>(prefix)
    .load(conn)?;
    let mut log: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for l in lines {
        log.entry(l.trace_id).or_default().push(l.attempt);
    }
    Ok(log)
}

/// Schedules the sweeper re-enqueued, and its re-enqueues in all.
pub fn swept(conn: &mut MysqlConnection) -> QueryResult<(u64, u64)> {
    let s: Sweeps = diesel::sql_query(
        "SELECT COUNT(*) AS schedules, CAST(COALESCE(SUM(sweeps), 0) AS SIGNED) AS sweeps FROM celerity_sweep",
    )
    .get_result(conn)?;
    Ok((s.schedules as u64, s.sweeps as u64))
}

/// The plugin's ledger: every line of every file in `dir`, by trace id.
/// A line that does not parse is a torn write of a killed process and is
/// counted, not read.
pub fn ledger(dir: &Path) -> (BTreeMap<String, Vec<Step>>, usize) {
    #[derive(serde::Deserialize)]
    struct Line {
        t: String,
        n: i32,
        at: f64,
        #[serde(default)]
        w: Option<u32>,
    }
    let mut ledger: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    let mut torn = 0;
    for file in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(file.path()).unwrap_or_default();
        for line in text.lines() {
            match serde_json::from_str::<Line>(line) {
                Ok(l) => ledger.entry(l.t).or_default().push(Step { invoke_count: l.n, at: l.at, worker: l.w }),
                Err(_) => torn += 1,
            }
        }
    }
    for steps in ledger.values_mut() {
        steps.sort_by(|a, b| a.at.total_cmp(&b.at));
    }
    (ledger, torn)
}

/// Messages (ready and unacknowledged) in each queue, from `rabbitmqctl list_queues` output.
pub fn queue_depths(listing: &str) -> BTreeMap<String, u64> {
    listing
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let name = cols.next()?.trim();
            let ready: u64 = cols.next()?.trim().parse().ok()?;
            let unacked: u64 = cols.next()?.trim().parse().ok()?;
            Some((name.to_owned(), ready + unacked))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_listings_and_torn_ledger_lines_are_read() {
        let depths = queue_depths("plugin_schedule\t0\t0\ncelerity.schedule\t2\t1\nnot a line\n");
        assert_eq!(depths.get("celerity.schedule"), Some(&3));
        assert_eq!(depths.get("plugin_schedule"), Some(&0));
        assert_eq!(depths.len(), 2);
        let dir = crate::temp_dir();
        std::fs::write(
            dir.join("1.jsonl"),
            "{\"t\": \"a\", \"n\": 2, \"at\": 5.0}\n{\"t\": \"a\", \"n\": 1, \"at\": 1.0}\n{\"t\": \"a\", \"n\"",
        )
        .unwrap();
        let (ledger, torn) = ledger(&dir);
        assert_eq!(torn, 1);
        assert_eq!(ledger["a"].iter().map(|s| s.invoke_count).collect::<Vec<_>>(), [1, 2]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
