//! A schedule as an operator sees it, for `celerity status` and
//! `GET /schedules/{trace_id}`: its status (PAUSED, RETRYING, POLL,
//! CALLBACK, SUCCESS, FAIL or EMPTY), retry bookkeeping, pause, parked
//! messages, operator actions and attempt log; and counts by status. Text
//! and JSON show the same fields.

use std::borrow::Cow;

use celerity_db::status::{self, Counts};
use celerity_db::{DbError, MysqlConnection, State, Status, operator, repo};
use serde::Serialize;

use super::printable::printable;

/// One schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleStatus {
    /// The schedule.
    pub trace_id: String,
    /// Its plugin version.
    pub plugin_version: String,
    /// PAUSED, RETRYING, POLL, CALLBACK, SUCCESS, FAIL or EMPTY (INVALID for
    /// a state outside 1..=5).
    pub status: String,
    /// The stored state's name: what the framework's readers see.
    pub state: String,
    /// invoke_count.
    pub invoke_count: i32,
    /// created_at, in the tables' zone.
    pub created_at: String,
    /// finish_at, if final.
    pub finish_at: Option<String>,
    /// err, if any.
    pub err: Option<String>,
    /// Retry bookkeeping, while retrying (kept while paused).
    pub retry: Option<RetryView>,
    /// The operator's pause, while paused.
    pub pause: Option<PauseView>,
    /// Messages parked for it.
    pub parked: Vec<ParkedView>,
    /// The latest operator action.
    pub last_action: Option<ActionView>,
    /// Every operator action, oldest first.
    pub actions: Vec<ActionView>,
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
    /// What failed: `transient` (the database) or `plugin host`.
    pub last_error_class: String,
    /// The latest error.
    pub last_error: String,
}

/// A pause as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PauseView {
    /// When.
    pub paused_at: String,
    /// Who.
    pub paused_by: String,
    /// Why.
    pub reason: String,
}

/// A parked message as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParkedView {
    /// The message's task id.
    pub task_id: String,
    /// Its task.
    pub task: String,
    /// The queue it goes back to.
    pub queue: String,
    /// When it is due.
    pub eta: Option<String>,
    /// When it was parked.
    pub parked_at: String,
    /// When a resume released it (it is being sent again).
    pub released_at: Option<String>,
}

/// An operator action as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionView {
    /// `pause`, `resume` or `stop`.
    pub action: String,
    /// Who.
    pub actor: String,
    /// When.
    pub at: String,
    /// Why.
    pub reason: String,
    /// The status it acted on.
    pub from_status: String,
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

/// Counts by status: each of RETRYING and PAUSED counted apart from POLL
/// and CALLBACK, PAUSED before RETRYING.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Summary {
    /// POLL, neither retrying nor paused.
    pub poll: i64,
    /// CALLBACK, neither retrying nor paused.
    pub callback: i64,
    /// Open and backing off after transient errors, not paused.
    pub retrying: i64,
    /// Open and held by an operator.
    pub paused: i64,
    /// SUCCESS.
    pub success: i64,
    /// FAIL.
    pub fail: i64,
    /// State 1.
    pub empty: i64,
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
    let row = repo::load(conn, trace_id)?;
    let retry = repo::retry_state(conn, trace_id)?;
    let pause = operator::pause_of(conn, trace_id)?;
    let parked = operator::parked_of(conn, trace_id)?;
    let actions = operator::actions_of(conn, trace_id)?;
    let attempts = repo::attempts(conn, trace_id)?;
    let state = row.state();
    let status = match state {
        Ok(state) => Status::of(state, retry.is_some(), pause.is_some()).name(),
        Err(_) => "INVALID",
    };
    let open = matches!(state, Ok(State::Poll | State::Callback));
    let actions: Vec<ActionView> = actions
        .into_iter()
        .map(|a| ActionView {
            action: a.action,
            actor: a.actor,
            at: time(a.at),
            reason: a.reason,
            from_status: a.from_status,
        })
        .collect();
    Ok(ScheduleStatus {
        trace_id: row.trace_id,
        plugin_version: row.plugin_version,
        status: status.into(),
        state: state.map(State::name).unwrap_or("INVALID").into(),
        invoke_count: row.invoke_count,
        created_at: time(row.created_at),
        finish_at: row.finish_at.map(time),
        err: non_empty(row.err),
        retry: retry.filter(|_| open).map(|r| RetryView {
            retries: r.retries,
            first_failure_at: time(r.first_failure_at),
            last_failure_at: time(r.last_failure_at),
            next_retry_at: r.next_retry_at.map(time),
            last_error_class: r.last_error_class,
            last_error: r.last_error,
        }),
        pause: pause.filter(|_| open).map(|p| PauseView {
            paused_at: time(p.paused_at),
            paused_by: p.paused_by,
            reason: p.reason,
        }),
        parked: parked
            .into_iter()
            .map(|p| ParkedView {
                task_id: p.task_id,
                task: p.task,
                queue: p.queue,
                eta: p.eta.map(time),
                parked_at: time(p.parked_at),
                released_at: p.released_at.map(time),
            })
            .collect(),
        last_action: actions.last().cloned(),
        actions,
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

/// Counts of all schedules by status.
pub fn summary(conn: &mut MysqlConnection) -> Result<Summary, DbError> {
    Ok(Summary::from(&status::count(conn)?))
}

impl From<&Counts> for Summary {
    fn from(c: &Counts) -> Summary {
        Summary {
            poll: c.of(Status::Poll),
            callback: c.of(Status::Callback),
            retrying: c.of(Status::Retrying),
            paused: c.of(Status::Paused),
            success: c.of(Status::Success),
            fail: c.of(Status::Fail),
            empty: c.of(Status::Empty),
            invalid: c.invalid,
            total: c.total(),
        }
    }
}

impl ScheduleStatus {
    /// The human-readable form.
    pub fn render(&self) -> String {
        let dash = |v: &Option<String>| v.as_deref().map_or("-".into(), |v| printable(v).into_owned());
        let mut out = format!(
            "trace_id      {}\nplugin        {}\nstatus        {}{}\ninvoke_count  {}\ncreated_at    {}\nfinish_at     {}\nerr           {}\n",
            printable(&self.trace_id),
            printable(&self.plugin_version),
            self.status,
            if self.status != self.state { format!(" (stored state {})", self.state) } else { String::new() },
            self.invoke_count,
            self.created_at,
            dash(&self.finish_at),
            dash(&self.err),
        );
        if let Some(p) = &self.pause {
            out.push_str(&format!(
                "paused        since {} by {}: {}\n",
                p.paused_at,
                printable(&p.paused_by),
                or_none(&p.reason)
            ));
        }
        if let Some(r) = &self.retry {
            out.push_str(&format!(
                "retries       {} since {}, last at {}, next at {}\nlast error    {}: {}\n",
                r.retries,
                r.first_failure_at,
                r.last_failure_at,
                dash(&r.next_retry_at),
                r.last_error_class,
                printable(&r.last_error)
            ));
        }
        if let Some(a) = &self.last_action {
            out.push_str(&format!(
                "last action   {} at {} by {} (was {}): {}\n",
                a.action,
                a.at,
                printable(&a.actor),
                a.from_status,
                or_none(&a.reason)
            ));
        }
        if !self.parked.is_empty() {
            out.push_str(&format!("parked        {}\n", self.parked.len()));
            for p in &self.parked {
                out.push_str(&format!(
                    "  {}  {}  due {}  parked {}{}\n",
                    printable(&p.task_id),
                    printable(p.task.rsplit('.').next().unwrap_or(&p.task)),
                    dash(&p.eta),
                    p.parked_at,
                    p.released_at.as_ref().map(|r| format!("  released {r}")).unwrap_or_default()
                ));
            }
        }
        if self.actions.len() > 1 {
            out.push_str(&format!("actions       {}\n", self.actions.len()));
            for a in &self.actions {
                out.push_str(&format!(
                    "  {}  {:<6} by {}: {}\n",
                    a.at,
                    a.action,
                    printable(&a.actor),
                    or_none(&a.reason)
                ));
            }
        }
        out.push_str(&format!("attempts      {}\n", self.attempts.len()));
        for a in &self.attempts {
            out.push_str(&format!(
                "  #{:<4} {}  {}  {:<8} {}{}\n",
                a.attempt,
                a.started_at,
                a.ended_at,
                a.outcome,
                printable(&a.hostname),
                a.error.as_ref().map(|e| format!("  {}", printable(e))).unwrap_or_default()
            ));
        }
        out
    }
}

fn or_none(reason: &str) -> Cow<'_, str> {
    if reason.is_empty() { Cow::Borrowed("(no reason given)") } else { printable(reason) }
}

impl Summary {
    /// The human-readable form.
    pub fn render(&self) -> String {
        format!(
            "POLL      {}\nCALLBACK  {}\nRETRYING  {}\nPAUSED    {}\nSUCCESS   {}\nFAIL      {}\nEMPTY     {}\ninvalid   {}\ntotal     {}\n",
            self.poll,
            self.callback,
            self.retrying,
            self.paused,
            self.success,
            self.fail,
            self.empty,
            self.invalid,
            self.total
        )
    }
}
