//! The POST of `plugin_callback_info` when a schedule ends (SPEC §3.5), as
//! the framework's `PluginCallbacker` makes it: JSON in, a JSON answer out,
//! and an answer whose `result` is false counts as a failure; three tries,
//! paced by backon.

use std::cell::Cell;
use std::time::Duration;

use backon::{BlockingRetryable, ConstantBuilder};
use serde_json::{Map, Value};

/// Tries the framework gives a plugin callback.
pub const TRIES: usize = 3;
/// Time for one try, so a dead endpoint cannot hold a poll for long.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between tries.
pub const PAUSE: Duration = Duration::from_secs(1);

/// POSTs `data` as JSON to `url`, up to [`TRIES`] times; blocking.
pub fn post_with_retry(url: &str, data: &Map<String, Value>) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(TRY_TIMEOUT)).build().into();
    let attempt = Cell::new(0);
    (|| -> Result<(), String> {
        attempt.set(attempt.get() + 1);
        let mut response = agent.post(url).send_json(data).map_err(|e| e.to_string())?;
        let answer: Value = response.body_mut().read_json().map_err(|e| format!("the answer is not JSON: {e}"))?;
        match answer.get("result") {
            Some(result) if !truthy(result) => Err(format!("the answer says result false: {answer}")),
            _ => Ok(()),
        }
    })
    .retry(ConstantBuilder::new().with_delay(PAUSE).with_max_times(TRIES - 1))
    .sleep(std::thread::sleep)
    .notify(|e, _| tracing::warn!(%url, attempt = attempt.get(), error = %e, "plugin callback failed"))
    .call()
    .map_err(|e| {
        tracing::warn!(%url, attempt = attempt.get(), error = %e, "plugin callback failed");
        format!("plugin callback to {url} failed {TRIES} times: {e}")
    })
}

/// Python's truth of a JSON value, as the framework tests `not result`.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::truthy;

    #[test]
    fn result_is_false_as_python_sees_it() {
        for falsy in [json!(false), json!(0), json!(""), json!(null), json!([]), json!({})] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for true_ in [json!(true), json!(1), json!("ok"), json!([0]), json!({"a": 1})] {
            assert!(truthy(&true_), "{true_}");
        }
    }
}
