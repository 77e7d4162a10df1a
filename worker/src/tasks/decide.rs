//! The semantics of one poll (SPEC §3), without I/O: from the stored row to
//! the step a plugin takes ([`prepare`]), and from the step's result to the
//! update to apply, the next poll to enqueue and the POST to make
//! ([`conclude`]).

use celerity_db::{PollResult, ScheduleRow, State};
use chrono::NaiveDateTime;

use crate::plugins::{Callback, PluginCallbackInfo, StepInput, StepOutcome, StepResult};

/// What a poll decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The guarded update to apply.
    pub result: PollResult,
    /// Seconds until the next poll, when the plugin keeps polling.
    pub next_poll: Option<u64>,
    /// The POST to make once a final state is durable.
    pub plugin_callback: Option<PluginCallbackInfo>,
}

/// What a row needs before any plugin runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// SUCCESS or FAIL already: nothing to do.
    AlreadyFinal,
    /// Decided without a plugin (a state the framework never writes).
    Decided(Decision),
    /// A plugin takes this step.
    Step(StepInput),
}

/// The step `row` needs, with the new invoke_count and POLL or CALLBACK.
pub fn prepare(row: &ScheduleRow, callback: Option<Callback>, now: NaiveDateTime) -> Prepared {
    let state = match row.state() {
        Ok(s) if s.is_final() => return Prepared::AlreadyFinal,
        Ok(State::Callback) => State::Callback,
        Ok(_) => State::Poll,
        Err(e) => return Prepared::Decided(fail_unrun(row, format!("schedule state is invalid: {e}"), now)),
    };
    Prepared::Step(StepInput {
        trace_id: row.trace_id.clone(),
        version: row.plugin_version.clone(),
        invoke_count: row.invoke_count.saturating_add(1),
        state,
        data: row.data.clone(),
        callback,
        trace_context: Vec::new(),
    })
}

/// The update a finished step makes of `row`.
pub fn conclude(row: &ScheduleRow, step: StepResult, now: NaiveDateTime) -> Decision {
    let base = PollResult {
        trace_id: row.trace_id.clone(),
        seen_invoke_count: row.invoke_count,
        state: State::Fail,
        invoke_count: row.invoke_count.saturating_add(1),
        data: step.data,
        err: None,
        finish_at: None,
        release_lock: false,
    };
    let (result, next_poll) = match step.outcome {
        // Past the delay topology's reach (8.5 years): a plugin's mistake, said plainly.
        StepOutcome::Poll(interval) if interval > broker_proto::delay::MAX_DELAY_SECS => {
            let err = format!(
                "plugin schedule failed: poll interval of {interval} s is beyond the longest countdown ({} s)",
                broker_proto::delay::MAX_DELAY_SECS
            );
            (PollResult { err: Some(err), finish_at: Some(now), ..base }, None)
        }
        StepOutcome::Poll(interval) => (PollResult { state: State::Poll, ..base }, Some(interval)),
        StepOutcome::WaitCallback => (PollResult { state: State::Callback, ..base }, None),
        StepOutcome::Success => (PollResult { state: State::Success, finish_at: Some(now), ..base }, None),
        StepOutcome::Error(err) => (PollResult { err: Some(err), finish_at: Some(now), ..base }, None),
        // An unexpected error saves no data, as the Python worker does.
        StepOutcome::Unexpected(err) => (PollResult { data: None, err: Some(err), finish_at: Some(now), ..base }, None),
        StepOutcome::Invalid(err) => {
            let failed = fail_unrun(row, err, now);
            return Decision { plugin_callback: step.plugin_callback, ..failed };
        }
    };
    let plugin_callback = if result.state.is_final() { step.plugin_callback } else { None };
    Decision { result, next_poll, plugin_callback }
}

/// FAIL before the plugin ran: data and invoke_count untouched, a clear err.
pub fn fail_unrun(row: &ScheduleRow, err: String, now: NaiveDateTime) -> Decision {
    Decision {
        result: PollResult {
            trace_id: row.trace_id.clone(),
            seen_invoke_count: row.invoke_count,
            state: State::Fail,
            invoke_count: row.invoke_count,
            data: None,
            err: Some(err),
            finish_at: Some(now),
            release_lock: false,
        },
        next_poll: None,
        plugin_callback: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::Registry;

    /// A poll of `row` by the Rust plugins of `reg`.
    fn decide(reg: &Registry, row: &ScheduleRow, callback: Option<Callback>, now: NaiveDateTime) -> Option<Decision> {
        match prepare(row, callback, now) {
            Prepared::AlreadyFinal => None,
            Prepared::Decided(decision) => Some(decision),
            Prepared::Step(input) => {
                let version = input.version.clone();
                let step = reg
                    .step(input)
                    .unwrap_or_else(|| StepResult::invalid(format!("can not find plugin for version {version}")));
                Some(conclude(row, step, now))
            }
        }
    }

    fn row(data: &str, invoke_count: i32) -> ScheduleRow {
        ScheduleRow {
            trace_id: "t".into(),
            plugin_version: "1.0.0".into(),
            state: 2,
            invoke_count,
            data: data.into(),
            created_at: NaiveDateTime::default(),
            finish_at: None,
            scheduling: false,
            err: String::new(),
        }
    }

    /// As the framework's producer leaves it: its own execute was invoke 1.
    const DATA: &str = r#"{"inputs": {"polls": 2, "interval": 3}, "context": {"storage": {"executions": 1}, "outputs": {}, "data": {}}, "outputs": {}}"#;

    #[test]
    fn polls_then_succeeds_like_the_python_plugin() {
        let reg = Registry::with_builtin();
        let now = NaiveDateTime::default();
        let d = decide(&reg, &row(DATA, 1), None, now).unwrap();
        assert_eq!((d.result.state, d.result.invoke_count, d.next_poll), (State::Poll, 2, Some(3)));
        assert_eq!(
            d.result.data.as_deref().unwrap(),
            r#"{"inputs": {"polls": 2, "interval": 3}, "context": {"storage": {"executions": 2}, "outputs": {}, "data": {}}, "outputs": {}}"#
        );
        let d = decide(&reg, &row(d.result.data.as_deref().unwrap(), 2), None, now).unwrap();
        assert_eq!((d.result.state, d.result.invoke_count, d.result.finish_at), (State::Success, 3, Some(now)));
        assert_eq!(
            d.result.data.as_deref().unwrap(),
            r#"{"inputs": {"polls": 2, "interval": 3}, "context": {"storage": {"executions": 3}, "outputs": {"polls_done": 2}, "data": {}}, "outputs": {"polls_done": 2}}"#
        );
    }

    #[test]
    fn failures_have_clear_errors() {
        let reg = Registry::with_builtin();
        let now = NaiveDateTime::default();
        let fail_at = DATA.replace(r#""interval": 3"#, r#""fail_at": 2"#);
        let d = decide(&reg, &row(&fail_at, 1), None, now).unwrap();
        assert_eq!(d.result.state, State::Fail);
        assert_eq!(d.result.err.as_deref(), Some("plugin schedule failed: fail_at reached"));
        assert!(d.result.data.is_some(), "a plugin error saves data");
        assert_eq!(d.result.invoke_count, 2);

        let d = decide(&reg, &row("not json", 1), None, now).unwrap();
        assert!(d.result.err.unwrap().starts_with("schedule data load error"));
        assert_eq!((d.result.invoke_count, d.result.data), (1, None));

        let bad_inputs = DATA.replace(r#""polls": 2"#, r#""polls": "many""#);
        let d = decide(&reg, &row(&bad_inputs, 1), None, now).unwrap();
        assert!(d.result.err.unwrap().starts_with("inputs validation error"), "serde error in err");

        let mut unknown = row(DATA, 1);
        unknown.plugin_version = "9.9.9".into();
        let d = decide(&reg, &unknown, None, now).unwrap();
        assert_eq!(d.result.err.as_deref(), Some("can not find plugin for version 9.9.9"));

        let mut done = row(DATA, 4);
        done.state = State::Success.code();
        assert_eq!(decide(&reg, &done, None, now), None);
    }

    #[test]
    fn a_poll_interval_past_the_longest_countdown_fails_with_a_reason() {
        let now = NaiveDateTime::default();
        let huge = StepResult { outcome: StepOutcome::Poll(u64::MAX), data: Some("{}".into()), plugin_callback: None };
        let d = conclude(&row(DATA, 1), huge, now);
        assert_eq!((d.result.state, d.next_poll, d.result.finish_at), (State::Fail, None, Some(now)));
        let err = d.result.err.unwrap();
        assert!(err.starts_with("plugin schedule failed: poll interval of 18446744073709551615 s is beyond"), "{err}");
        let longest = broker_proto::delay::MAX_DELAY_SECS;
        let at_most =
            StepResult { outcome: StepOutcome::Poll(longest), data: Some("{}".into()), plugin_callback: None };
        assert_eq!(conclude(&row(DATA, 1), at_most, now).next_poll, Some(longest));
    }
}
