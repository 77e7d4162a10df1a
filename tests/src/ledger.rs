//! The fault suite's checker, after the jepsen checker's categories: each
//! schedule a run started is finalised once, lost, stranded or finalised
//! twice, read from `schedule_schedule` and the attempt log.

use std::collections::BTreeMap;
use std::fmt;

use celerity_db::State;

use crate::{RowView, TestDatabase, rows};

/// What one schedule of a run should end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// SUCCESS after `polls` worker polls of the example plugin.
    Success {
        /// The plugin's `polls`.
        polls: i32,
    },
    /// FAIL with an `err` starting with this text.
    Fail(&'static str),
}

/// How one schedule ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Final as expected, each poll once.
    Once,
    /// Final, but not as expected (wrong state, err, or polls missing).
    Wrong(String),
    /// The row is gone.
    Lost,
    /// Still open (POLL or CALLBACK) when the run ended.
    Stranded,
    /// Polled past its end or finalised more than once.
    Twice(String),
}

/// The counts of a run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Schedules checked.
    pub schedules: usize,
    /// Finalised once, as expected.
    pub once: usize,
    /// Final, not as expected.
    pub wrong: usize,
    /// Rows gone.
    pub lost: usize,
    /// Left open.
    pub stranded: usize,
    /// Finalised twice or polled past the end.
    pub twice: usize,
    /// Ending in SUCCESS.
    pub success: usize,
    /// Ending in FAIL.
    pub fail: usize,
    /// The first few schedules that were not `Once`, with why.
    pub examples: Vec<(String, Verdict)>,
}

impl Report {
    /// Whether every schedule was finalised once, as expected.
    pub fn all_once(&self) -> bool {
        self.once == self.schedules
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schedules={} once={} lost={} stranded={} twice={} wrong={} (SUCCESS={} FAIL={})",
            self.schedules, self.once, self.lost, self.stranded, self.twice, self.wrong, self.success, self.fail
        )?;
        for (id, verdict) in &self.examples {
            write!(f, "\n  {id}: {verdict:?}")?;
        }
        Ok(())
    }
}

/// Checks every schedule in `expected` against the database.
pub fn check(db: &TestDatabase, expected: &BTreeMap<String, Expect>) -> Report {
    let rows = rows(db);
    let handle = db.handle();
    let mut report = Report { schedules: expected.len(), ..Report::default() };
    for (id, expect) in expected {
        let key = id.clone();
        let attempts = handle.blocking(move |c| celerity_db::repo::attempts(c, &key)).expect("read the attempt log");
        let verdict = judge(rows.get(id), &attempts, *expect);
        match &verdict {
            Verdict::Once => report.once += 1,
            Verdict::Wrong(_) => report.wrong += 1,
            Verdict::Lost => report.lost += 1,
            Verdict::Stranded => report.stranded += 1,
            Verdict::Twice(_) => report.twice += 1,
        }
        match rows.get(id).map(|r| r.state) {
            Some(s) if s == State::Success.code() => report.success += 1,
            Some(s) if s == State::Fail.code() => report.fail += 1,
            _ => {}
        }
        if verdict != Verdict::Once && report.examples.len() < 5 {
            report.examples.push((id.clone(), verdict));
        }
    }
    report
}

fn judge(row: Option<&RowView>, attempts: &[celerity_db::Attempt], expect: Expect) -> Verdict {
    let Some(row) = row else { return Verdict::Lost };
    let finals = attempts.iter().filter(|a| a.outcome == "SUCCESS" || a.outcome == "FAIL").count();
    if finals > 1 {
        return Verdict::Twice(format!("{finals} final attempts in the log"));
    }
    if let Some(last_final) = attempts.iter().position(|a| a.outcome == "SUCCESS" || a.outcome == "FAIL")
        && last_final + 1 != attempts.len()
    {
        return Verdict::Twice("polled after a final attempt".into());
    }
    let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
    if numbers.iter().zip(numbers.iter().skip(1)).any(|(a, b)| b - a != 1) {
        return Verdict::Twice(format!("attempt numbers not consecutive: {numbers:?}"));
    }
    if row.state == State::Poll.code() || row.state == State::Callback.code() {
        return Verdict::Stranded;
    }
    if !row.finished {
        return Verdict::Wrong("final without finish_at".into());
    }
    match expect {
        Expect::Success { polls } => {
            if row.state != State::Success.code() {
                return Verdict::Wrong(format!("state {} err {:?}", row.state, row.err));
            }
            if row.invoke_count > polls + 1 {
                return Verdict::Twice(format!("invoke_count {} past {}", row.invoke_count, polls + 1));
            }
            if row.invoke_count != polls + 1 || numbers != (2..=polls + 1).collect::<Vec<_>>() {
                return Verdict::Wrong(format!("invoke_count {}, attempts {numbers:?}", row.invoke_count));
            }
            if !row.data.contains(&format!(r#""polls_done": {polls}"#)) {
                return Verdict::Wrong(format!("data {}", row.data));
            }
            Verdict::Once
        }
        Expect::Fail(prefix) => {
            if row.state != State::Fail.code() || !row.err.starts_with(prefix) {
                return Verdict::Wrong(format!("state {} err {:?}", row.state, row.err));
            }
            if row.invoke_count != numbers.last().copied().unwrap_or(1) {
                return Verdict::Wrong(format!("invoke_count {} but attempts {numbers:?}", row.invoke_count));
            }
            Verdict::Once
        }
    }
}
