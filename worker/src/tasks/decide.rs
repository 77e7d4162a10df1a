//! The semantics of one poll (SPEC §3), without I/O: from the stored row to
//! the update to apply, the next poll to enqueue and the POST to make.

use celerity_db::{PollResult, ScheduleRow, State};
use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use super::pyjson;
use crate::plugins::{Callback, Outcome, PluginCallbackInfo, Registry, RunInput};

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

/// Polls `row` with the plugin its version names. `None` when the row is
/// already final and nothing is to be done.
pub fn decide(
    registry: &Registry,
    row: &ScheduleRow,
    callback: Option<Callback>,
    now: NaiveDateTime,
) -> Option<Decision> {
    let state = match row.state() {
        Ok(s) if s.is_final() => return None,
        Ok(State::Callback) => State::Callback,
        Ok(_) => State::Poll,
        Err(e) => return Some(fail_unrun(row, format!("schedule state is invalid: {e}"), now)),
    };
    let (inputs, context) = match parse_data(&row.data) {
        Ok(parts) => parts,
        Err(e) => return Some(fail_unrun(row, format!("schedule data load error: {e}"), now)),
    };
    let invoke_count = row.invoke_count.saturating_add(1);
    let input = RunInput {
        trace_id: row.trace_id.clone(),
        invoke_count,
        state,
        inputs: inputs.clone(),
        storage: context.storage,
        outputs: context.outputs,
        context_data: context.data,
        callback,
    };
    let run = match registry.run(&row.plugin_version, input) {
        None => return Some(fail_unrun(row, format!("can not find plugin for version {}", row.plugin_version), now)),
        Some(Err(e)) => return Some(fail_unrun(row, e.to_string(), now)),
        Some(Ok(run)) => run,
    };
    // Saved exactly as the Python worker dumps it.
    let data = pyjson::dumps(&Value::Object(Map::from_iter([
        ("inputs".to_owned(), inputs),
        (
            "context".to_owned(),
            Value::Object(Map::from_iter([
                ("storage".to_owned(), Value::Object(run.storage)),
                ("outputs".to_owned(), Value::Object(run.outputs.clone())),
                ("data".to_owned(), run.context_data),
            ])),
        ),
        ("outputs".to_owned(), Value::Object(run.outputs)),
    ])));
    let base = PollResult {
        trace_id: row.trace_id.clone(),
        seen_invoke_count: row.invoke_count,
        state: State::Fail,
        invoke_count,
        data: Some(data),
        err: None,
        finish_at: None,
        release_lock: false,
    };
    let (result, next_poll) = match run.outcome {
        Ok(Outcome::Poll(interval)) => (PollResult { state: State::Poll, ..base }, Some(interval.max(0) as u64)),
        Ok(Outcome::WaitCallback) => (PollResult { state: State::Callback, ..base }, None),
        Ok(Outcome::Success) => (PollResult { state: State::Success, finish_at: Some(now), ..base }, None),
        Ok(Outcome::Error(msg)) => {
            (PollResult { err: Some(format!("plugin schedule failed: {msg}")), finish_at: Some(now), ..base }, None)
        }
        // An unexpected error: FAIL without saving data, as the Python worker does.
        Err(panic) => (
            PollResult {
                data: None,
                err: Some(format!("plugin schedule failed: {panic}")),
                finish_at: Some(now),
                ..base
            },
            None,
        ),
    };
    let plugin_callback = if result.state.is_final() { run.plugin_callback } else { None };
    Some(Decision { result, next_poll, plugin_callback })
}

/// FAIL before the plugin ran: data and invoke_count untouched, a clear err.
fn fail_unrun(row: &ScheduleRow, err: String, now: NaiveDateTime) -> Decision {
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

struct StoredContext {
    storage: Map<String, Value>,
    outputs: Map<String, Value>,
    data: Value,
}

/// `{"inputs": ..., "context": {"storage": {}, "outputs": {}, "data": {}}, ...}`.
fn parse_data(text: &str) -> Result<(Value, StoredContext), String> {
    let mut root: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("data is not a JSON object".into()),
        Err(e) => return Err(format!("data is not JSON: {e}")),
    };
    let inputs = root.remove("inputs").ok_or("data has no inputs")?;
    let mut context = match root.remove("context") {
        Some(Value::Object(c)) => c,
        _ => return Err("data has no context object".into()),
    };
    let mut object = |key: &str| match context.remove(key) {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(format!("data.context has no {key} object")),
    };
    let storage = object("storage")?;
    let outputs = object("outputs")?;
    let data = context.remove("data").ok_or("data.context has no data")?;
    Ok((inputs, StoredContext { storage, outputs, data }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
