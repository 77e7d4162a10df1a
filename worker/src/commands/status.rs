//! `celerity status`: a schedule as an operator needs to see it, and counts
//! by state. RETRYING is a view, not a stored state: an open schedule (POLL
//! or CALLBACK) that has retry bookkeeping is backing off after transient
//! database errors.

use celerity_db::{Attempt, DbError, MysqlConnection, RetryState, ScheduleRow, State, repo};
use serde::Serialize;

use crate::config::flags::StatusArgs;
use crate::config::validate::open_database;

/// One schedule or the counts by state, as text or JSON.
pub fn run(args: StatusArgs) -> Result<String, String> {
    let db = open_database(args.database.config()?)?;
    let printed = match &args.trace_id {
        Some(id) => db.blocking(|c| schedule(c, id)).map(|s| if args.json { json(&s) } else { s.render() }),
        None => db.blocking(summary).map(|s| if args.json { json(&s) } else { s.render() }),
    };
    printed.map_err(|e| e.to_string())
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect("the status views serialise")
}

/// One schedule, with its retry bookkeeping and attempt log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleStatus {
    /// The schedule.
    pub trace_id: String,
    /// Its plugin version.
    pub plugin_version: String,
    /// POLL, CALLBACK, RETRYING, SUCCESS, FAIL (or EMPTY).
    pub status: String,
    /// The stored state's name (RETRYING schedules are POLL or CALLBACK underneath).
    pub state: String,
    /// invoke_count.
    pub invoke_count: i32,
    /// created_at, in the tables' zone.
    pub created_at: String,
    /// finish_at, if final.
    pub finish_at: Option<String>,
    /// err, if any.
    pub err: Option<String>,
    /// Retry bookkeeping, while RETRYING.
    pub retry: Option<RetryView>,
    /// The attempt log, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// Retry bookkeeping as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryView {
    /// Retries so far.
    pub retries: i32,
    /// First transient failure.
    pub first_failure_at: String,
    /// Latest transient failure.
    pub last_failure_at: String,
    /// When the retry is due.
    pub next_retry_at: Option<String>,
    /// `transient` or `fatal`.
    pub last_error_class: String,
    /// The latest error.
    pub last_error: String,
}

/// One attempt as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptView {
    /// The invoke_count it produced.
    pub attempt: i32,
    /// Start.
    pub started_at: String,
    /// End.
    pub ended_at: String,
    /// The state it left.
    pub outcome: String,
    /// Its error, if any.
    pub error: Option<String>,
    /// The worker that ran it.
    pub hostname: String,
}

/// Counts by state, RETRYING counted apart from POLL and CALLBACK.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Summary {
    /// State 1.
    pub empty: i64,
    /// POLL, not retrying.
    pub poll: i64,
    /// CALLBACK, not retrying.
    pub callback: i64,
    /// POLL or CALLBACK with retry bookkeeping.
    pub retrying: i64,
    /// SUCCESS.
    pub success: i64,
    /// FAIL.
    pub fail: i64,
    /// Rows whose state is outside 1..=5 (never written by Celerity).
    pub invalid: i64,
    /// All rows.
    pub total: i64,
}

fn time(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The status of one schedule.
pub fn schedule(conn: &mut MysqlConnection, trace_id: &str) -> Result<ScheduleStatus, DbError> {
    let row: ScheduleRow = repo::load(conn, trace_id)?;
    let retry: Option<RetryState> = repo::retry_state(conn, trace_id)?;
    let attempts: Vec<Attempt> = repo::attempts(conn, trace_id)?;
    let state = row.state().map(State::name).unwrap_or("INVALID");
    let open = matches!(row.state(), Ok(State::Poll | State::Callback));
    let retry = retry.filter(|_| open);
    Ok(ScheduleStatus {
        trace_id: row.trace_id,
        plugin_version: row.plugin_version,
        status: if retry.is_some() { "RETRYING".into() } else { state.into() },
        state: state.into(),
        invoke_count: row.invoke_count,
        created_at: time(row.created_at),
        finish_at: row.finish_at.map(time),
        err: non_empty(row.err),
        retry: retry.map(|r| RetryView {
            retries: r.retries,
            first_failure_at: time(r.first_failure_at),
            last_failure_at: time(r.last_failure_at),
            next_retry_at: r.next_retry_at.map(time),
            last_error_class: r.last_error_class,
            last_error: r.last_error,
        }),
        attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                started_at: time(a.started_at),
                ended_at: time(a.ended_at),
                outcome: a.outcome,
                error: non_empty(a.error),
                hostname: a.hostname,
            })
            .collect(),
    })
}

/// Counts of all schedules by state.
pub fn summary(conn: &mut MysqlConnection) -> Result<Summary, DbError> {
    let mut s = Summary::default();
    for (state, n) in repo::count_by_state(conn)? {
        s.total += n;
        match State::try_from(state) {
            Ok(State::Empty) => s.empty += n,
            Ok(State::Poll) => s.poll += n,
            Ok(State::Callback) => s.callback += n,
            Ok(State::Success) => s.success += n,
            Ok(State::Fail) => s.fail += n,
            Err(_) => s.invalid += n,
        }
    }
    // RETRYING schedules are taken out of POLL and CALLBACK.
    for (state, n) in repo::count_retrying(conn)? {
        s.retrying += n;
        if state == State::Poll.code() {
            s.poll -= n;
        } else {
            s.callback -= n;
        }
    }
    Ok(s)
}

impl ScheduleStatus {
    /// The human-readable form.
    pub fn render(&self) -> String {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut out = format!(
            "trace_id      {}\nplugin        {}\nstatus        {}{}\ninvoke_count  {}\ncreated_at    {}\nfinish_at     {}\nerr           {}\n",
            self.trace_id,
            self.plugin_version,
            self.status,
            if self.status != self.state { format!(" (stored state {})", self.state) } else { String::new() },
            self.invoke_count,
            self.created_at,
            dash(&self.finish_at),
            dash(&self.err),
        );
        if let Some(r) = &self.retry {
            out.push_str(&format!(
                "retries       {} since {}, last at {}, next at {}\nlast error    {}: {}\n",
                r.retries,
                r.first_failure_at,
                r.last_failure_at,
                dash(&r.next_retry_at),
                r.last_error_class,
                r.last_error
            ));
        }
        out.push_str(&format!("attempts      {}\n", self.attempts.len()));
        for a in &self.attempts {
            out.push_str(&format!(
                "  #{:<4} {}  {}  {:<8} {}{}\n",
                a.attempt,
                a.started_at,
                a.ended_at,
                a.outcome,
                a.hostname,
                a.error.as_ref().map(|e| format!("  {e}")).unwrap_or_default()
            ));
        }
        out
    }
}

impl Summary {
    /// The human-readable form.
    pub fn render(&self) -> String {
        format!(
            "POLL      {}\nCALLBACK  {}\nRETRYING  {}\nSUCCESS   {}\nFAIL      {}\nEMPTY     {}\ninvalid   {}\ntotal     {}\n",
            self.poll, self.callback, self.retrying, self.success, self.fail, self.empty, self.invalid, self.total
        )
    }
}
