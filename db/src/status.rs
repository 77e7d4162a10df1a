//! What an operator sees of a schedule: its stored state refined by
//! Celerity's own tables. RETRYING and PAUSED are views, never written to
//! `schedule_schedule`, so the framework's readers only ever see its states.

use diesel::prelude::*;
use diesel::sql_types::{Bigint, Bool, Integer};

use crate::error::DbError;
use crate::models::State;

/// A schedule as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Stored EMPTY: the producer has not run it yet.
    Empty,
    /// Stored POLL, polled by the system.
    Poll,
    /// Stored CALLBACK, waiting for its callback.
    Callback,
    /// POLL or CALLBACK backing off after transient errors: the system is
    /// recovering it on its own.
    Retrying,
    /// POLL or CALLBACK held by an operator (RETRYING ones included: their
    /// retries are suspended).
    Paused,
    /// Stored SUCCESS.
    Success,
    /// Stored FAIL.
    Fail,
}

impl Status {
    /// Every status, in the order `celerity status --summary` lists them.
    pub const ALL: [Status; 7] = [
        Status::Poll,
        Status::Callback,
        Status::Retrying,
        Status::Paused,
        Status::Success,
        Status::Fail,
        Status::Empty,
    ];

    /// The status of a schedule in `state`, with or without retry
    /// bookkeeping and a pause. A pause outranks retrying: the operator's
    /// hold is what decides what happens next.
    pub fn of(state: State, retrying: bool, paused: bool) -> Status {
        match state {
            State::Empty => Status::Empty,
            State::Success => Status::Success,
            State::Fail => Status::Fail,
            State::Poll | State::Callback if paused => Status::Paused,
            State::Poll | State::Callback if retrying => Status::Retrying,
            State::Poll => Status::Poll,
            State::Callback => Status::Callback,
        }
    }

    /// The name operators read.
    pub fn name(self) -> &'static str {
        match self {
            Status::Empty => "EMPTY",
            Status::Poll => "POLL",
            Status::Callback => "CALLBACK",
            Status::Retrying => "RETRYING",
            Status::Paused => "PAUSED",
            Status::Success => "SUCCESS",
            Status::Fail => "FAIL",
        }
    }

    /// The status named `name` (any case).
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// SUCCESS and FAIL.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Success | Status::Fail)
    }
}

/// How many schedules are in each status, and rows whose state is outside
/// the framework's 1..=5.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// (status, count), every status present, in [`Status::ALL`] order.
    pub by_status: Vec<(Status, i64)>,
    /// Rows with a state outside 1..=5.
    pub invalid: i64,
}

impl Counts {
    /// The count of one status.
    pub fn of(&self, status: Status) -> i64 {
        self.by_status.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
    }

    /// All rows.
    pub fn total(&self) -> i64 {
        self.by_status.iter().map(|(_, n)| n).sum::<i64>() + self.invalid
    }
}

#[derive(QueryableByName)]
struct Group {
    #[diesel(sql_type = Integer)]
    state: i32,
    #[diesel(sql_type = Bool)]
    paused: bool,
    #[diesel(sql_type = Bool)]
    retrying: bool,
    #[diesel(sql_type = Bigint)]
    n: i64,
}

/// Counts every schedule by status, in one scan of the table.
pub fn count(conn: &mut MysqlConnection) -> Result<Counts, DbError> {
    let groups: Vec<Group> = diesel::sql_query(
        "SELECT s.state, p.trace_id IS NOT NULL AS paused, r.trace_id IS NOT NULL AS retrying, COUNT(*) AS n \
         FROM schedule_schedule s \
         LEFT JOIN celerity_pause p ON p.trace_id = s.trace_id \
         LEFT JOIN celerity_schedule_retry r ON r.trace_id = s.trace_id \
         GROUP BY s.state, paused, retrying",
    )
    .load(conn)?;
    let mut counts = Counts { by_status: Status::ALL.iter().map(|s| (*s, 0)).collect(), invalid: 0 };
    for g in groups {
        match State::try_from(g.state) {
            Ok(state) => {
                let status = Status::of(state, g.retrying, g.paused);
                if let Some(slot) = counts.by_status.iter_mut().find(|(s, _)| *s == status) {
                    slot.1 += g.n;
                }
            }
            Err(_) => counts.invalid += g.n,
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_outranks_retrying_and_neither_touches_a_final_or_empty_schedule() {
        let table = [
            (State::Poll, false, false, Status::Poll),
            (State::Callback, false, false, Status::Callback),
            (State::Poll, true, false, Status::Retrying),
            (State::Callback, true, false, Status::Retrying),
            (State::Poll, false, true, Status::Paused),
            (State::Callback, true, true, Status::Paused),
            (State::Success, true, true, Status::Success),
            (State::Fail, false, true, Status::Fail),
            (State::Empty, true, true, Status::Empty),
        ];
        for (state, retrying, paused, want) in table {
            assert_eq!(Status::of(state, retrying, paused), want, "{state:?} retrying={retrying} paused={paused}");
        }
    }

    #[test]
    fn names_parse_back_in_any_case() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.name()), Some(s));
            assert_eq!(Status::parse(&s.name().to_lowercase()), Some(s));
        }
        assert_eq!(Status::parse("STOPPED"), None);
    }
}
