//! Rust plugins by version, and one step of one of them: the stored data
//! parsed, typed inputs checked, a panic caught as the Python worker's
//! "unexpected error", the context data re-validated as Python does, and
//! the new data written as Python's `json.dumps` writes it.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use celerity_db::State;
use serde_json::{Map, Value};

use super::example::Example;
use super::plugin::{Callback, Context, Outcome, Plugin};
use super::pyjson;
use super::step::{PluginCallbackInfo, StepInput, StepOutcome, StepResult};

/// What one run of a plugin left behind.
struct Run {
    /// The outcome, or the panic message of an unexpected error.
    outcome: Result<Outcome, String>,
    storage: Map<String, Value>,
    outputs: Map<String, Value>,
    /// The context data as stored again: the original, re-validated.
    context_data: Value,
    plugin_callback: Option<PluginCallbackInfo>,
}

/// The stored parts of a schedule a plugin runs with.
struct RunInput {
    trace_id: String,
    invoke_count: i32,
    state: State,
    inputs: Value,
    storage: Map<String, Value>,
    outputs: Map<String, Value>,
    context_data: Value,
    callback: Option<Callback>,
}

/// A plugin behind a type-erased interface, so plugins of any input types share a registry.
trait DynPlugin: Send + Sync {
    /// The run, or the framework's `err` when the plugin cannot run.
    fn run(&self, input: RunInput) -> Result<Run, String>;
}

impl<P: Plugin> DynPlugin for P {
    fn run(&self, input: RunInput) -> Result<Run, String> {
        let inputs: P::Inputs =
            serde_json::from_value(input.inputs).map_err(|e| format!("inputs validation error: {e}"))?;
        let parse_data = || -> Result<P::ContextData, String> {
            serde_json::from_value(input.context_data.clone()).map_err(|e| format!("context validation error: {e}"))
        };
        let mut ctx = Context {
            trace_id: input.trace_id,
            invoke_count: input.invoke_count,
            state: input.state,
            storage: input.storage,
            outputs: input.outputs,
            data: parse_data()?,
            callback: input.callback,
        };
        // A panic is the "unexpected error" of the Python worker: the worker survives it.
        let outcome = catch_unwind(AssertUnwindSafe(|| self.execute(inputs, &mut ctx))).map_err(panic_message);
        // Changes to the context data are discarded, as Python re-validates the original.
        let context_data = serde_json::to_value(parse_data()?).map_err(|e| format!("context validation error: {e}"))?;
        let plugin_callback = if P::PLUGIN_CALLBACK {
            context_data.get("plugin_callback_info").and_then(|v| serde_json::from_value(v.clone()).ok())
        } else {
            None
        };
        Ok(Run { outcome, storage: ctx.storage, outputs: ctx.outputs, context_data, plugin_callback })
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "plugin panicked".to_owned()
    }
}

/// A registered plugin and the Rust type behind it.
#[derive(Clone)]
struct Entry {
    plugin: Arc<dyn DynPlugin>,
    type_name: &'static str,
}

/// Rust plugins by version.
#[derive(Clone, Default)]
pub struct Registry {
    plugins: HashMap<String, Entry>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The registry with the plugins Celerity ships (the example plugin `1.0.0`).
    pub fn with_builtin() -> Registry {
        let mut r = Registry::new();
        r.register("1.0.0", Example);
        r
    }

    /// Registers `plugin` under `version` (a plugin may serve several versions).
    pub fn register<P: Plugin>(&mut self, version: &str, plugin: P) -> &mut Self {
        let entry = Entry { plugin: Arc::new(plugin), type_name: std::any::type_name::<P>() };
        self.plugins.insert(version.to_owned(), entry);
        self
    }

    /// Whether a version is known.
    pub fn contains(&self, version: &str) -> bool {
        self.plugins.contains_key(version)
    }

    /// The registered versions, sorted, with the Rust type behind each.
    pub fn versions(&self) -> Vec<(&str, &'static str)> {
        let mut v: Vec<(&str, &'static str)> =
            self.plugins.iter().map(|(version, e)| (version.as_str(), e.type_name)).collect();
        v.sort_unstable();
        v
    }

    /// One step of the plugin of `input.version`; `None` if no Rust plugin
    /// has that version. Blocking: the plugin's own code runs here.
    pub fn step(&self, input: StepInput) -> Option<StepResult> {
        let entry = self.plugins.get(&input.version)?;
        let stored = match StoredData::parse(&input.data) {
            Ok(stored) => stored,
            Err(e) => return Some(StepResult::invalid(format!("schedule data load error: {e}"))),
        };
        let run = entry.plugin.run(RunInput {
            trace_id: input.trace_id,
            invoke_count: input.invoke_count,
            state: input.state,
            inputs: stored.inputs.clone(),
            storage: stored.storage,
            outputs: stored.outputs,
            context_data: stored.context_data,
            callback: input.callback,
        });
        let run = match run {
            Ok(run) => run,
            Err(err) => return Some(StepResult::invalid(err)),
        };
        // Saved exactly as the Python worker dumps it.
        let data = pyjson::dumps(&Value::Object(Map::from_iter([
            ("inputs".to_owned(), stored.inputs),
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
        let (outcome, data) = match run.outcome {
            Ok(Outcome::Poll(interval)) => (StepOutcome::Poll(interval.max(0) as u64), Some(data)),
            Ok(Outcome::WaitCallback) => (StepOutcome::WaitCallback, Some(data)),
            Ok(Outcome::Success) => (StepOutcome::Success, Some(data)),
            Ok(Outcome::Error(msg)) => (StepOutcome::Error(format!("plugin schedule failed: {msg}")), Some(data)),
            // An unexpected error saves no data, as the Python worker does.
            Err(panic) => (StepOutcome::Unexpected(format!("plugin schedule failed: {panic}")), None),
        };
        Some(StepResult { outcome, data, plugin_callback: run.plugin_callback })
    }
}

/// `{"inputs": ..., "context": {"storage": {}, "outputs": {}, "data": {}}, ...}`.
struct StoredData {
    inputs: Value,
    storage: Map<String, Value>,
    outputs: Map<String, Value>,
    context_data: Value,
}

impl StoredData {
    fn parse(text: &str) -> Result<StoredData, String> {
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
        let context_data = context.remove("data").ok_or("data.context has no data")?;
        Ok(StoredData { inputs, storage, outputs, context_data })
    }
}
