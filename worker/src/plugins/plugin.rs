//! What a Rust plugin is (SPEC §5): typed inputs and context data, one
//! `execute` that decides to poll again, wait for a callback, succeed or
//! fail.

use celerity_db::State;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// What a plugin's `execute` decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: the schedule becomes SUCCESS.
    Success,
    /// Poll again after this many seconds (negative counts as 0, as in Python).
    Poll(i64),
    /// Wait for the callback task: the schedule becomes CALLBACK.
    WaitCallback,
    /// The plugin failed: the schedule becomes FAIL with this message.
    Error(String),
}

/// The callback that resumed a schedule waiting in CALLBACK.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    /// The callback's id.
    pub id: String,
    /// Its data, parsed from the task's JSON text.
    pub data: Value,
}

/// What a plugin sees and may change during one execute.
#[derive(Debug, Clone, PartialEq)]
pub struct Context<D> {
    /// The schedule.
    pub trace_id: String,
    /// The stored invoke_count + 1: 2 on the first worker poll.
    pub invoke_count: i32,
    /// POLL, or CALLBACK when a callback resumed it.
    pub state: State,
    /// Persistent scratch space, saved with the schedule.
    pub storage: Map<String, Value>,
    /// The plugin's outputs, saved with the schedule.
    pub outputs: Map<String, Value>,
    /// The context data the schedule was created with (changes are not saved).
    pub data: D,
    /// Set when the callback task runs the poll.
    pub callback: Option<Callback>,
}

/// A plugin. `Inputs` is deserialised from `data.inputs` and
/// `ContextData` from `data.context.data`; a mismatch fails the schedule.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's inputs.
    type Inputs: DeserializeOwned;
    /// The context data it requires (unknown fields are ignored, as pydantic does).
    type ContextData: DeserializeOwned + Serialize;
    /// Whether `plugin_callback_info` is POSTed when the schedule ends
    /// (the Python plugin's `Meta.enable_plugin_callback`).
    const PLUGIN_CALLBACK: bool = false;

    /// One poll.
    fn execute(&self, inputs: Self::Inputs, ctx: &mut Context<Self::ContextData>) -> Outcome;
}
