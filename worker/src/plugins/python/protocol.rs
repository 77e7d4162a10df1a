//! The lines a plugin host and the worker exchange (see `host.py`): one
//! JSON object per line, a request per step one way, and readiness, log
//! records and replies the other.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plugins::step::{PluginCallbackInfo, StepInput, StepOutcome, StepResult};

/// The protocol version this worker speaks; a host says which it speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// One step asked of a host.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    /// Matches the reply.
    pub id: u64,
    /// The schedule.
    pub trace_id: &'a str,
    /// Its plugin version.
    pub version: &'a str,
    /// `schedule_schedule.state`: 2 POLL or 3 CALLBACK.
    pub state: i32,
    /// The stored invoke_count + 1.
    pub invoke_count: i32,
    /// The `data` column as stored.
    pub data: &'a str,
    /// `{"id", "data"}` for the callback task.
    pub callback: Option<CallbackArg<'a>>,
    /// `{"traceparent", "tracestate"}` of the run's span, when tracing is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<std::collections::BTreeMap<&'a str, &'a str>>,
}

/// The callback's id and parsed data.
#[derive(Debug, Serialize)]
pub struct CallbackArg<'a> {
    /// `callback_id`.
    pub id: &'a str,
    /// `json.loads(callback_data)`.
    pub data: &'a Value,
}

impl<'a> Request<'a> {
    /// The request for `input`.
    pub fn new(id: u64, input: &'a StepInput) -> Request<'a> {
        Request {
            id,
            trace_id: &input.trace_id,
            version: &input.version,
            state: input.state.code(),
            invoke_count: input.invoke_count,
            data: &input.data,
            callback: input.callback.as_ref().map(|c| CallbackArg { id: &c.id, data: &c.data }),
            trace_context: (!input.trace_context.is_empty())
                .then(|| input.trace_context.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()),
        }
    }
}

/// A line from a host.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HostLine {
    /// It is ready, with its plugins.
    Ready {
        /// What it runs.
        ready: Ready,
    },
    /// A log record of the plugin or the framework.
    Log {
        /// The record.
        log: LogRecord,
    },
    /// The reply to a step.
    Reply(Reply),
}

/// What a host runs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Ready {
    /// The project's plugin versions.
    pub versions: Vec<PythonVersion>,
    /// The interpreter's version.
    pub python: String,
    /// bk-plugin-framework's version.
    pub framework: String,
    /// pydantic's version.
    pub pydantic: String,
    /// The host's protocol version.
    pub protocol: u32,
    /// The zone of the naive datetimes the project's Django writes (its
    /// `TIME_ZONE` when `USE_TZ` is off, else UTC); none without Django settings.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// One plugin version of the project.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PythonVersion {
    /// `Meta.version`.
    pub version: String,
    /// `module.Class`.
    pub class: String,
    /// `Meta.enable_plugin_callback`.
    pub plugin_callback: bool,
}

/// A Python log record.
#[derive(Debug, Deserialize)]
pub struct LogRecord {
    /// `record.levelno`.
    pub level: u32,
    /// `record.name`.
    pub logger: String,
    /// The formatted message, with its traceback if any.
    pub message: String,
    /// The step's schedule, if the record came during one.
    pub trace_id: Option<String>,
}

/// A host's answer to a step.
#[derive(Debug, Deserialize)]
pub struct Reply {
    /// The request it answers.
    pub id: u64,
    /// `poll`, `callback`, `success`, `error`, `unexpected` or `invalid`.
    pub outcome: String,
    /// `poll_interval`, for `poll`.
    #[serde(default)]
    pub interval: Option<f64>,
    /// The new `data` column.
    #[serde(default)]
    pub data: Option<String>,
    /// The framework's `err` text.
    #[serde(default)]
    pub err: Option<String>,
    /// `context.plugin_callback_info`, when the plugin enables it.
    #[serde(default)]
    pub plugin_callback: Option<PluginCallbackInfo>,
}

impl Reply {
    /// The step's result, or why the reply makes no sense.
    pub fn into_result(self) -> Result<StepResult, String> {
        let err = || self.err.clone().unwrap_or_default();
        let outcome = match self.outcome.as_str() {
            // Celery takes a float countdown; the delay queues count whole seconds.
            "poll" => StepOutcome::Poll(self.interval.unwrap_or(0.0).max(0.0).ceil() as u64),
            "callback" => StepOutcome::WaitCallback,
            "success" => StepOutcome::Success,
            "error" => StepOutcome::Error(err()),
            "unexpected" => StepOutcome::Unexpected(err()),
            "invalid" => StepOutcome::Invalid(err()),
            other => return Err(format!("a plugin host answered with an unknown outcome {other:?}")),
        };
        let saves_data = matches!(
            outcome,
            StepOutcome::Poll(_) | StepOutcome::WaitCallback | StepOutcome::Success | StepOutcome::Error(_)
        );
        if saves_data && self.data.is_none() {
            return Err(format!("a plugin host answered {} without data", self.outcome));
        }
        Ok(StepResult { outcome, data: self.data, plugin_callback: self.plugin_callback })
    }
}

#[cfg(test)]
mod tests {
    use celerity_db::State;
    use serde_json::json;

    use super::*;
    use crate::plugins::Callback;

    #[test]
    fn a_request_carries_the_row_as_stored() {
        let input = StepInput {
            trace_id: "t".into(),
            version: "1.0.0".into(),
            invoke_count: 3,
            state: State::Callback,
            data: r#"{"inputs": {}}"#.into(),
            callback: Some(Callback { id: "cb".into(), data: json!({"k": [1]}) }),
            trace_context: Vec::new(),
        };
        let line = serde_json::to_value(Request::new(7, &input)).unwrap();
        assert_eq!(
            line,
            json!({"id": 7, "trace_id": "t", "version": "1.0.0", "state": 3, "invoke_count": 3,
                   "data": "{\"inputs\": {}}", "callback": {"id": "cb", "data": {"k": [1]}}})
        );
        let traced = StepInput { trace_context: vec![("traceparent".into(), "00-a-b-01".into())], ..input };
        let line = serde_json::to_value(Request::new(7, &traced)).unwrap();
        assert_eq!(line["trace_context"], json!({"traceparent": "00-a-b-01"}));
    }

    #[test]
    fn host_lines_are_told_apart() {
        let ready: HostLine = serde_json::from_str(
            r#"{"ready": {"versions": [{"version": "1.0.0", "class": "bk_plugin.versions.v1.P", "plugin_callback": false}],
                "python": "3.8.18", "framework": "2.3.15", "pydantic": "1.10.13", "protocol": 1}}"#,
        )
        .unwrap();
        assert!(matches!(ready, HostLine::Ready { ready } if ready.versions[0].class == "bk_plugin.versions.v1.P"));
        let log: HostLine = serde_json::from_str(
            r#"{"log": {"level": 30, "logger": "bk_plugin", "message": "careful", "trace_id": "t"}}"#,
        )
        .unwrap();
        assert!(matches!(log, HostLine::Log { log } if log.level == 30 && log.trace_id.as_deref() == Some("t")));
        let reply: HostLine =
            serde_json::from_str(r#"{"id": 2, "outcome": "poll", "interval": 1.5, "data": "{}", "err": null}"#)
                .unwrap();
        let HostLine::Reply(reply) = reply else { panic!("a reply") };
        let result = reply.into_result().unwrap();
        assert_eq!(result.outcome, StepOutcome::Poll(2), "a fractional countdown waits the whole second");
    }

    #[test]
    fn replies_that_make_no_sense_are_errors() {
        let reply = |text: &str| serde_json::from_str::<Reply>(text).unwrap().into_result();
        assert!(reply(r#"{"id": 1, "outcome": "maybe"}"#).is_err());
        assert!(reply(r#"{"id": 1, "outcome": "success"}"#).is_err(), "success must save data");
        let unexpected = reply(r#"{"id": 1, "outcome": "unexpected", "err": "plugin schedule failed: boom"}"#).unwrap();
        assert_eq!(unexpected.outcome, StepOutcome::Unexpected("plugin schedule failed: boom".into()));
        assert_eq!(unexpected.data, None);
    }
}
