//! Plugins by version, and running one of them on a schedule's stored
//! parts: typed inputs checked, a panic caught as the Python worker's
//! "unexpected error", the context data re-validated as Python does.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use celerity_db::State;
use serde_json::{Map, Value};

use super::example::Example;
use super::plugin::{Callback, Context, Outcome, Plugin, PluginCallbackInfo};

/// What one run of a plugin left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The outcome, or the panic message of an unexpected error.
    pub outcome: Result<Outcome, String>,
    /// Storage after the run.
    pub storage: Map<String, Value>,
    /// Outputs after the run.
    pub outputs: Map<String, Value>,
    /// The context data as stored again: the original, re-validated.
    pub context_data: Value,
    /// Where to POST on a final state, if the plugin asks for it.
    pub plugin_callback: Option<PluginCallbackInfo>,
}

/// Why a plugin could not run at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// `data.inputs` does not fit the plugin's inputs.
    #[error("inputs validation error: {0}")]
    Inputs(String),
    /// `data.context.data` does not fit the plugin's context data.
    #[error("context validation error: {0}")]
    ContextData(String),
}

/// The stored parts of a schedule a plugin runs with.
#[derive(Debug, Clone)]
pub struct RunInput {
    /// The schedule.
    pub trace_id: String,
    /// The new invoke_count.
    pub invoke_count: i32,
    /// POLL or CALLBACK.
    pub state: State,
    /// `data.inputs`.
    pub inputs: Value,
    /// `data.context.storage`.
    pub storage: Map<String, Value>,
    /// `data.context.outputs`.
    pub outputs: Map<String, Value>,
    /// `data.context.data`.
    pub context_data: Value,
    /// The callback, for the callback task.
    pub callback: Option<Callback>,
}

/// A plugin behind a type-erased interface, so plugins of any input types share a registry.
trait DynPlugin: Send + Sync {
    fn run(&self, input: RunInput) -> Result<Run, RunError>;
}

impl<P: Plugin> DynPlugin for P {
    fn run(&self, input: RunInput) -> Result<Run, RunError> {
        let inputs: P::Inputs = serde_json::from_value(input.inputs).map_err(|e| RunError::Inputs(e.to_string()))?;
        let parse_data = || -> Result<P::ContextData, RunError> {
            serde_json::from_value(input.context_data.clone()).map_err(|e| RunError::ContextData(e.to_string()))
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
        let context_data = serde_json::to_value(parse_data()?).map_err(|e| RunError::ContextData(e.to_string()))?;
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

/// Plugins by version.
#[derive(Clone, Default)]
pub struct Registry {
    plugins: HashMap<String, Arc<dyn DynPlugin>>,
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
        self.plugins.insert(version.to_owned(), Arc::new(plugin));
        self
    }

    /// Whether a version is known.
    pub fn contains(&self, version: &str) -> bool {
        self.plugins.contains_key(version)
    }

    /// Runs the plugin of `version`; `None` if no plugin has that version.
    pub fn run(&self, version: &str, input: RunInput) -> Option<Result<Run, RunError>> {
        self.plugins.get(version).map(|p| p.run(input))
    }

    /// The registered versions, sorted.
    pub fn versions(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}
