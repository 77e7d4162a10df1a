//! What one control did to one schedule, as a line of text or a JSON
//! object, and whether it counts as refused.

use celerity_db::operator::{Action, Done};
use serde::Serialize;

use super::printable::printable;

/// One schedule's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The schedule.
    pub trace_id: String,
    /// The action.
    pub action: Action,
    /// What it did.
    pub done: Done,
    /// Parked messages sent again (resume).
    pub resent: usize,
    /// Parked messages a resume released and could not send yet, and why.
    pub unsent: Option<String>,
}

/// A [`Report`] as JSON shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportView {
    /// The schedule.
    pub trace_id: String,
    /// `pause`, `resume` or `stop`.
    pub action: &'static str,
    /// `changed`, `unchanged` or `refused`.
    pub outcome: &'static str,
    /// The status before.
    pub from: Option<&'static str>,
    /// The status after.
    pub to: Option<&'static str>,
    /// Why nothing changed, or why it was refused.
    pub why: Option<String>,
    /// Parked messages sent again.
    pub resent: usize,
    /// What could not be sent yet.
    pub unsent: Option<String>,
}

impl Report {
    /// The result of `action` on `trace_id`, nothing sent yet.
    pub fn new(trace_id: &str, action: Action, done: Done) -> Report {
        Report { trace_id: trace_id.to_owned(), action, done, resent: 0, unsent: None }
    }

    /// Refused, or no such schedule.
    pub fn refused(&self) -> bool {
        matches!(self.done, Done::Refused { .. } | Done::NoSuchSchedule | Done::Invalid(_))
    }

    /// The JSON view.
    pub fn view(&self) -> ReportView {
        let (outcome, from, to, why) = match &self.done {
            Done::Changed { from, to } => ("changed", Some(from.name()), Some(to.name()), None),
            Done::Unchanged { status, why } => ("unchanged", Some(status.name()), None, Some((*why).to_owned())),
            Done::Refused { status, why } => ("refused", Some(status.name()), None, Some((*why).to_owned())),
            Done::NoSuchSchedule => ("refused", None, None, Some("no schedule has this trace id".to_owned())),
            Done::Invalid(state) => {
                ("refused", None, None, Some(format!("its stored state {state} is outside the framework's 1..=5")))
            }
        };
        ReportView {
            trace_id: self.trace_id.clone(),
            action: self.action.name(),
            outcome,
            from,
            to,
            why,
            resent: self.resent,
            unsent: self.unsent.clone(),
        }
    }

    /// One line of text.
    pub fn line(&self) -> String {
        let v = self.view();
        let mut line = match (&self.done, v.why) {
            (Done::Changed { .. }, _) => {
                format!(
                    "{}  {}: {} -> {}",
                    printable(&self.trace_id),
                    past(self.action),
                    v.from.unwrap_or("?"),
                    v.to.unwrap_or("?")
                )
            }
            (Done::Unchanged { .. }, why) => {
                format!("{}  unchanged: {}", printable(&self.trace_id), printable(&why.unwrap_or_default()))
            }
            (_, why) => format!("{}  refused: {}", printable(&self.trace_id), printable(&why.unwrap_or_default())),
        };
        if self.resent > 0 {
            line.push_str(&format!("; {} parked message(s) sent again", self.resent));
        }
        if let Some(unsent) = &self.unsent {
            line.push_str(&format!("; {unsent} (a worker's sweeper sends them)"));
        }
        line
    }
}

fn past(action: Action) -> &'static str {
    match action {
        Action::Pause => "paused",
        Action::Resume => "resumed",
        Action::Stop => "stopped",
    }
}

/// The whole run as text: a line per schedule and the totals.
pub fn render(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&r.line());
        out.push('\n');
    }
    let (changed, unchanged, refused) = totals(reports);
    out.push_str(&format!("{changed} changed, {unchanged} unchanged, {refused} refused\n"));
    out
}

/// The whole run as JSON.
pub fn render_json(reports: &[Report]) -> String {
    let (changed, unchanged, refused) = totals(reports);
    let results: Vec<ReportView> = reports.iter().map(Report::view).collect();
    serde_json::json!({"results": results, "changed": changed, "unchanged": unchanged, "refused": refused}).to_string()
}

fn totals(reports: &[Report]) -> (usize, usize, usize) {
    let changed = reports.iter().filter(|r| matches!(r.done, Done::Changed { .. })).count();
    let refused = reports.iter().filter(|r| r.refused()).count();
    (changed, reports.len() - changed - refused, refused)
}

#[cfg(test)]
mod tests {
    use celerity_db::Status;

    use super::*;

    #[test]
    fn each_outcome_reads_as_what_happened_and_why() {
        let changed = Report::new("a", Action::Pause, Done::Changed { from: Status::Retrying, to: Status::Paused });
        assert_eq!(changed.line(), "a  paused: RETRYING -> PAUSED");
        let refused = Report::new("b", Action::Resume, Done::Refused { status: Status::Retrying, why: "busy" });
        assert_eq!(refused.line(), "b  refused: busy");
        assert!(refused.refused());
        let nothing = Report::new("c", Action::Resume, Done::Unchanged { status: Status::Poll, why: "not paused" });
        assert_eq!(nothing.line(), "c  unchanged: not paused");
        let missing = Report::new("d", Action::Stop, Done::NoSuchSchedule);
        assert_eq!(missing.line(), "d  refused: no schedule has this trace id");
        let text = render(&[changed, refused, nothing, missing]);
        assert!(text.ends_with("1 changed, 1 unchanged, 2 refused\n"), "{text}");
        let mut resumed = Report::new("e", Action::Resume, Done::Changed { from: Status::Paused, to: Status::Poll });
        resumed.resent = 1;
        assert_eq!(resumed.line(), "e  resumed: PAUSED -> POLL; 1 parked message(s) sent again");
        let json: serde_json::Value = serde_json::from_str(&render_json(&[resumed])).unwrap();
        assert_eq!(json["results"][0]["outcome"], "changed");
        assert_eq!(json["results"][0]["to"], "POLL");
        assert_eq!(json["changed"], 1);
    }
}
