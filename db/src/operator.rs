//! Operator controls on a schedule: pause, resume and stop. Which action a
//! status allows is one table ([`verdict`]); [`apply`] decides and writes in
//! one transaction, with the schedule's row locked, so two operators (or an
//! operator and a worker) never act on a status that has already changed.
//!
//! State diagram, after Apache Doris's streaming jobs:
//!
//! ```text
//!   POLL / CALLBACK ── transient error ──▶ RETRYING ── poll lands ──▶ POLL / CALLBACK
//!        │                                   │
//!      PAUSE                               PAUSE (retries suspended)
//!        ▼                                   ▼
//!      PAUSED ◀──────────────────────────────┘
//!        │ RESUME: POLL / CALLBACK, or RETRYING if it was backing off
//!   any open status ── STOP ──▶ FAIL "stopped by operator: REASON"
//!   RESUME on RETRYING is refused: the system is already recovering it.
//! ```

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::error::DbError;
use crate::models::{ActionRecord, Parked, PauseRecord, ScheduleRow, State};
use crate::schema::{
    celerity_action, celerity_callback_lock, celerity_parked, celerity_pause, celerity_schedule_retry,
    schedule_schedule,
};
use crate::status::Status;
use crate::tx;

/// What an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Hold the schedule: messages that arrive for it are parked.
    Pause,
    /// Lift the hold and send the parked messages again.
    Resume,
    /// End it FAIL.
    Stop,
}

impl Action {
    /// The action's name, as recorded.
    pub fn name(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Stop => "stop",
        }
    }
}

/// What an action does to a schedule in a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It changes the schedule.
    Apply,
    /// There is nothing to do, and this says why.
    Nothing(&'static str),
    /// It is refused, and this says why.
    Refused(&'static str),
}

/// The transition table: every action from every status.
pub fn verdict(action: Action, status: Status) -> Verdict {
    use Status::*;
    match (action, status) {
        (Action::Pause, Poll | Callback | Retrying) => Verdict::Apply,
        (Action::Pause, Paused) => Verdict::Nothing("already paused"),
        (Action::Resume, Paused) => Verdict::Apply,
        (Action::Resume, Poll | Callback) => Verdict::Nothing("not paused"),
        (Action::Resume, Retrying) => Verdict::Refused(
            "it is RETRYING: the system is already recovering it with backoff; pause it first to hold it",
        ),
        (Action::Stop, Poll | Callback | Retrying | Paused) => Verdict::Apply,
        (_, Empty) => {
            Verdict::Refused("it is EMPTY: the producer has not run it yet, and its own write would undo this")
        }
        (_, Success | Fail) => Verdict::Refused("it is final: nothing changes a SUCCESS or FAIL schedule"),
    }
}

/// The status an applied action leaves: a resumed schedule that was backing
/// off is RETRYING again, its parked retry on its way.
pub fn after(action: Action, state: State, retrying: bool) -> Status {
    match action {
        Action::Pause => Status::Paused,
        Action::Resume => Status::of(state, retrying, false),
        Action::Stop => Status::Fail,
    }
}

/// Who asks, when, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The schedule.
    pub trace_id: String,
    /// Who: `user@host` for the CLI, `http <peer>` for the HTTP controls.
    pub actor: String,
    /// Why (may be empty except for a stop).
    pub reason: String,
    /// When, in the tables' zone.
    pub at: NaiveDateTime,
}

/// What an action did.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    /// No schedule has this trace id.
    NoSuchSchedule,
    /// The schedule's state is outside 1..=5; nothing is done to it.
    Invalid(i32),
    /// It changed the schedule.
    Changed {
        /// The status before.
        from: Status,
        /// The status after.
        to: Status,
    },
    /// Nothing to do.
    Unchanged {
        /// The status.
        status: Status,
        /// Why nothing.
        why: &'static str,
    },
    /// Refused.
    Refused {
        /// The status.
        status: Status,
        /// Why.
        why: &'static str,
    },
}

/// The `err` of a stopped schedule.
pub fn stop_err(reason: &str) -> String {
    format!("stopped by operator: {reason}")
}

/// Decides `action` for the schedule and, when it applies, writes it and
/// records it, in one transaction. Returns what was done and, for a resume,
/// the parked messages to send again: those it released, and any an
/// earlier resume released and did not finish sending.
pub fn apply(conn: &mut MysqlConnection, action: Action, req: &Request) -> Result<(Done, Vec<Parked>), DbError> {
    tx::transaction(conn, |conn| {
        let Some(row) = schedule_schedule::table
            .find(&req.trace_id)
            .select(ScheduleRow::as_select())
            .for_update()
            .first(conn)
            .optional()?
        else {
            return Ok((Done::NoSuchSchedule, Vec::new()));
        };
        let Ok(state) = row.state() else {
            return Ok((Done::Invalid(row.state), Vec::new()));
        };
        let paused = lock_pause(conn, &req.trace_id)?;
        let retrying = celerity_schedule_retry::table
            .find(&req.trace_id)
            .select(celerity_schedule_retry::trace_id)
            .first::<String>(conn)
            .optional()?
            .is_some();
        let from = Status::of(state, retrying, paused);
        let done = match verdict(action, from) {
            Verdict::Nothing(why) => Done::Unchanged { status: from, why },
            Verdict::Refused(why) => Done::Refused { status: from, why },
            Verdict::Apply => {
                write(conn, action, req)?;
                diesel::insert_into(celerity_action::table)
                    .values((
                        celerity_action::trace_id.eq(&req.trace_id),
                        celerity_action::action.eq(action.name()),
                        celerity_action::actor.eq(&req.actor),
                        celerity_action::at.eq(req.at),
                        celerity_action::reason.eq(&req.reason),
                        celerity_action::from_status.eq(from.name()),
                    ))
                    .execute(conn)?;
                Done::Changed { from, to: after(action, state, retrying) }
            }
        };
        let resend = match (action, &done) {
            (Action::Resume, Done::Changed { .. } | Done::Unchanged { .. }) => released(conn, &req.trace_id)?,
            _ => Vec::new(),
        };
        Ok((done, resend))
    })
}

/// Whether the schedule is paused, its pause row locked until the
/// transaction ends: what orders a park against a resume.
fn lock_pause(conn: &mut MysqlConnection, trace_id: &str) -> Result<bool, DbError> {
    Ok(celerity_pause::table
        .find(trace_id)
        .select(celerity_pause::trace_id)
        .for_update()
        .first::<String>(conn)
        .optional()?
        .is_some())
}

/// The writes of an applied action.
fn write(conn: &mut MysqlConnection, action: Action, req: &Request) -> Result<(), DbError> {
    let id = &req.trace_id;
    match action {
        Action::Pause => {
            diesel::insert_into(celerity_pause::table)
                .values((
                    celerity_pause::trace_id.eq(id),
                    celerity_pause::paused_at.eq(req.at),
                    celerity_pause::paused_by.eq(&req.actor),
                    celerity_pause::reason.eq(&req.reason),
                ))
                .execute(conn)?;
        }
        Action::Resume => {
            diesel::delete(celerity_pause::table.find(id)).execute(conn)?;
            diesel::update(
                celerity_parked::table
                    .filter(celerity_parked::trace_id.eq(id))
                    .filter(celerity_parked::released_at.is_null()),
            )
            .set(celerity_parked::released_at.eq(Some(req.at)))
            .execute(conn)?;
        }
        Action::Stop => {
            diesel::update(schedule_schedule::table.find(id))
                .set((
                    schedule_schedule::state.eq(State::Fail.code()),
                    schedule_schedule::err.eq(stop_err(&req.reason)),
                    schedule_schedule::finish_at.eq(Some(req.at)),
                    schedule_schedule::scheduling.eq(false),
                ))
                .execute(conn)?;
            diesel::delete(celerity_schedule_retry::table.find(id)).execute(conn)?;
            diesel::delete(celerity_callback_lock::table.find(id)).execute(conn)?;
            diesel::delete(celerity_pause::table.find(id)).execute(conn)?;
            // Whatever was parked for it is stale now.
            diesel::delete(celerity_parked::table.filter(celerity_parked::trace_id.eq(id))).execute(conn)?;
        }
    }
    Ok(())
}

/// The schedule's parked messages that a resume released.
fn released(conn: &mut MysqlConnection, trace_id: &str) -> Result<Vec<Parked>, DbError> {
    Ok(celerity_parked::table
        .filter(celerity_parked::trace_id.eq(trace_id))
        .filter(celerity_parked::released_at.is_not_null())
        .order(celerity_parked::parked_at.asc())
        .select(Parked::as_select())
        .load(conn)?)
}

/// Parks a message for a paused schedule: returns false, parking nothing,
/// when the schedule is no longer paused (a resume got there first), so the
/// caller runs it. The pause row is locked, so a resume either sees this
/// message parked or this call sees the pause gone.
pub fn park(conn: &mut MysqlConnection, parked: &Parked) -> Result<bool, DbError> {
    tx::transaction(conn, |conn| {
        let paused = lock_pause(conn, &parked.trace_id)?;
        if paused {
            // A redelivery of a message already parked parks nothing more.
            diesel::insert_or_ignore_into(celerity_parked::table).values(parked).execute(conn)?;
        }
        Ok(paused)
    })
}

/// Removes a parked message once it has been sent again.
pub fn unpark(conn: &mut MysqlConnection, trace_id: &str, task_id: &str) -> Result<(), DbError> {
    diesel::delete(celerity_parked::table.find((trace_id, task_id))).execute(conn)?;
    Ok(())
}

/// Parked messages released before `cutoff` and still here: a resume that
/// died before sending them. The sweeper sends them.
pub fn released_before(conn: &mut MysqlConnection, cutoff: NaiveDateTime, limit: i64) -> Result<Vec<Parked>, DbError> {
    Ok(celerity_parked::table
        .filter(celerity_parked::released_at.lt(cutoff))
        .order(celerity_parked::released_at.asc())
        .limit(limit)
        .select(Parked::as_select())
        .load(conn)?)
}

/// The schedule's pause, if it is paused.
pub fn pause_of(conn: &mut MysqlConnection, trace_id: &str) -> Result<Option<PauseRecord>, DbError> {
    Ok(celerity_pause::table.find(trace_id).select(PauseRecord::as_select()).first(conn).optional()?)
}

/// Messages parked for the schedule, oldest first.
pub fn parked_of(conn: &mut MysqlConnection, trace_id: &str) -> Result<Vec<Parked>, DbError> {
    Ok(celerity_parked::table
        .filter(celerity_parked::trace_id.eq(trace_id))
        .order(celerity_parked::parked_at.asc())
        .select(Parked::as_select())
        .load(conn)?)
}

/// The operator actions recorded for the schedule, oldest first.
pub fn actions_of(conn: &mut MysqlConnection, trace_id: &str) -> Result<Vec<ActionRecord>, DbError> {
    Ok(celerity_action::table
        .filter(celerity_action::trace_id.eq(trace_id))
        .order(celerity_action::id.asc())
        .select(ActionRecord::as_select())
        .load(conn)?)
}

/// Which open schedules a selector picks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    /// Only this plugin version.
    pub version: Option<String>,
    /// Only this status (POLL, CALLBACK, RETRYING or PAUSED).
    pub status: Option<Status>,
    /// Only schedules created before this time.
    pub created_before: Option<NaiveDateTime>,
}

/// The trace ids of the open schedules (POLL or CALLBACK underneath) the
/// selector picks, oldest first. Final and EMPTY schedules are never
/// picked: no action applies to them.
pub fn select(conn: &mut MysqlConnection, selector: &Selector) -> Result<Vec<String>, DbError> {
    let open = [State::Poll.code(), State::Callback.code()];
    let mut query = schedule_schedule::table
        .left_join(celerity_pause::table.on(celerity_pause::trace_id.eq(schedule_schedule::trace_id)))
        .left_join(celerity_schedule_retry::table.on(celerity_schedule_retry::trace_id.eq(schedule_schedule::trace_id)))
        .filter(schedule_schedule::state.eq_any(open))
        .select(schedule_schedule::trace_id)
        .order(schedule_schedule::created_at.asc())
        .into_boxed();
    if let Some(version) = &selector.version {
        query = query.filter(schedule_schedule::plugin_version.eq(version.clone()));
    }
    if let Some(before) = selector.created_before {
        query = query.filter(schedule_schedule::created_at.lt(before));
    }
    let paused = celerity_pause::trace_id.nullable().is_not_null();
    let retrying = celerity_schedule_retry::trace_id.nullable().is_not_null();
    query = match selector.status {
        None => query,
        Some(Status::Paused) => query.filter(paused),
        Some(Status::Retrying) => query.filter(retrying).filter(paused.eq(false)),
        Some(Status::Poll) => query
            .filter(schedule_schedule::state.eq(State::Poll.code()))
            .filter(paused.eq(false))
            .filter(retrying.eq(false)),
        Some(Status::Callback) => query
            .filter(schedule_schedule::state.eq(State::Callback.code()))
            .filter(paused.eq(false))
            .filter(retrying.eq(false)),
        Some(other @ (Status::Empty | Status::Success | Status::Fail)) => {
            return Err(DbError::Config(format!(
                "--state {} selects nothing: only POLL, CALLBACK, RETRYING and PAUSED schedules can be acted on",
                other.name()
            )));
        }
    };
    Ok(query.load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every action from every status: what happens, and each refusal's reason.
    #[test]
    fn every_transition_of_the_state_diagram() {
        use Action::*;
        use Status::*;
        const FINAL: &str = "it is final: nothing changes a SUCCESS or FAIL schedule";
        const EMPTY: &str = "it is EMPTY: the producer has not run it yet, and its own write would undo this";
        let table: [(Action, Status, Verdict, Option<Status>); 21] = [
            (Pause, Poll, Verdict::Apply, Some(Paused)),
            (Pause, Callback, Verdict::Apply, Some(Paused)),
            (Pause, Retrying, Verdict::Apply, Some(Paused)),
            (Pause, Paused, Verdict::Nothing("already paused"), None),
            (Pause, Empty, Verdict::Refused(EMPTY), None),
            (Pause, Success, Verdict::Refused(FINAL), None),
            (Pause, Fail, Verdict::Refused(FINAL), None),
            (Resume, Paused, Verdict::Apply, Some(Poll)),
            (Resume, Poll, Verdict::Nothing("not paused"), None),
            (Resume, Callback, Verdict::Nothing("not paused"), None),
            (
                Resume,
                Retrying,
                Verdict::Refused(
                    "it is RETRYING: the system is already recovering it with backoff; pause it first to hold it",
                ),
                None,
            ),
            (Resume, Empty, Verdict::Refused(EMPTY), None),
            (Resume, Success, Verdict::Refused(FINAL), None),
            (Resume, Fail, Verdict::Refused(FINAL), None),
            (Stop, Poll, Verdict::Apply, Some(Fail)),
            (Stop, Callback, Verdict::Apply, Some(Fail)),
            (Stop, Retrying, Verdict::Apply, Some(Fail)),
            (Stop, Paused, Verdict::Apply, Some(Fail)),
            (Stop, Empty, Verdict::Refused(EMPTY), None),
            (Stop, Success, Verdict::Refused(FINAL), None),
            (Stop, Fail, Verdict::Refused(FINAL), None),
        ];
        // The table covers every pair.
        for action in [Pause, Resume, Stop] {
            for status in Status::ALL {
                assert!(table.iter().any(|(a, s, ..)| *a == action && *s == status), "{action:?} from {status:?}");
            }
        }
        for (action, status, want, to) in table {
            assert_eq!(verdict(action, status), want, "{action:?} from {status:?}");
            if let Some(to) = to {
                assert_eq!(after(action, State::Poll, false), to, "{action:?} from {status:?}");
            }
        }
    }

    #[test]
    fn a_resumed_schedule_goes_back_to_what_it_was_underneath() {
        assert_eq!(after(Action::Resume, State::Poll, false), Status::Poll);
        assert_eq!(after(Action::Resume, State::Callback, false), Status::Callback);
        assert_eq!(after(Action::Resume, State::Poll, true), Status::Retrying);
        assert_eq!(after(Action::Stop, State::Callback, true), Status::Fail);
        assert_eq!(stop_err("downstream is down"), "stopped by operator: downstream is down");
    }
}
