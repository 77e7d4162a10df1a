//! One step of a plugin on a schedule, whichever kind of plugin takes it: a
//! Rust plugin in this process or a Python plugin in a host process. The
//! step gets the stored row's parts and gives back the new `data` column,
//! byte for byte, and what the plugin decided; the worker does the rest.

use std::time::Duration;

use celerity_db::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::plugin::Callback;

/// What a step runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInput {
    /// The schedule.
    pub trace_id: String,
    /// Its plugin version.
    pub version: String,
    /// The stored invoke_count + 1.
    pub invoke_count: i32,
    /// POLL, or CALLBACK when a callback resumed it.
    pub state: State,
    /// The `data` column as stored.
    pub data: String,
    /// The callback, for the callback task.
    pub callback: Option<Callback>,
    /// The run span's W3C trace context (`traceparent`, `tracestate`),
    /// when tracing is on: a Python host runs the step inside it.
    pub trace_context: Vec<(String, String)>,
}

/// What the plugin decided, with the framework's `err` text where it failed.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Poll again after this many seconds.
    Poll(u64),
    /// Wait for a callback.
    WaitCallback,
    /// Done.
    Success,
    /// `Plugin.Error` (or a Rust plugin's error): FAIL, data saved.
    Error(String),
    /// Any other exception (or a Rust panic): FAIL, data not saved.
    Unexpected(String),
    /// The plugin could not run on this row (no such version, data that
    /// does not load, inputs that do not validate) or its result cannot be
    /// stored: FAIL, data and invoke_count untouched.
    Invalid(String),
}

/// Where to POST when the schedule ends (`context.data.plugin_callback_info`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginCallbackInfo {
    /// The URL to POST to.
    pub url: String,
    /// The JSON object posted.
    pub data: Map<String, Value>,
}

/// A finished step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// What the plugin decided.
    pub outcome: StepOutcome,
    /// The new `data` column, as the framework's `json.dumps` writes it.
    pub data: Option<String>,
    /// Where to POST if the schedule ends now (the plugin enables it).
    pub plugin_callback: Option<PluginCallbackInfo>,
}

impl StepResult {
    /// A step that could not run the plugin.
    pub fn invalid(err: impl Into<String>) -> StepResult {
        StepResult { outcome: StepOutcome::Invalid(err.into()), data: None, plugin_callback: None }
    }

    /// The `outcome` label of the step metrics.
    pub fn label(&self) -> &'static str {
        match self.outcome {
            StepOutcome::Poll(_) => "poll",
            StepOutcome::WaitCallback => "callback",
            StepOutcome::Success => "success",
            StepOutcome::Error(_) => "error",
            StepOutcome::Unexpected(_) => "unexpected",
            StepOutcome::Invalid(_) => "invalid",
        }
    }
}

/// Why a step did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// The host process died during the step (a crash, `os._exit`, a signal).
    #[error("the plugin host died during the step ({0})")]
    HostDied(String),
    /// The step ran past `--plugin-timeout`; its host was killed.
    #[error("plugin schedule timed out after {0:?}")]
    TimedOut(Duration),
    /// The host's reply to the step cannot be read (not the protocol, or
    /// past the longest line); its host was killed.
    #[error("plugin schedule failed: the plugin host's reply cannot be read: {0}")]
    Unreadable(String),
    /// No host could be started to take the step.
    #[error("no plugin host could be started: {0}")]
    NoHost(String),
}
