//! Plugins: where each version runs ([`Plugins`]), one step of a plugin
//! whatever its kind ([`step`]), the POST of their callback info
//! ([`callbacks`]), Rust plugins ([`Plugin`], [`Registry`],
//! the example) and Python plugins in host processes ([`python`]).

pub mod callbacks;
pub mod example;
pub mod plugin;
pub mod pyjson;
pub mod python;
pub mod registry;
pub mod sources;
pub mod step;

pub use self::callbacks::Callbacks;
pub use self::plugin::{Callback, Context, Outcome, Plugin};
pub use self::registry::Registry;
pub use self::sources::{Local, Plugins, Runs};
pub use self::step::{PluginCallbackInfo, StepError, StepInput, StepOutcome, StepResult};
