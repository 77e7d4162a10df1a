//! Plugins: the [`Plugin`] trait a Rust plugin implements, the [`Registry`]
//! the worker looks versions up in, and the plugins Celerity ships.

pub mod example;
pub mod plugin;
pub mod registry;

pub use self::plugin::{Callback, Context, Outcome, Plugin, PluginCallbackInfo};
pub use self::registry::{Registry, Run, RunError, RunInput};
