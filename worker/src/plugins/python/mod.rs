//! Python plugins, unchanged: the plugin project's own classes run in host
//! processes of the project's interpreter (`celerity worker --python PATH`).
//! A host runs only the plugin part of the framework's step; the worker keeps
//! the rest.

pub mod host;
mod lines;
pub mod pool;
pub mod protocol;

pub use self::pool::Pool;

pub use crate::config::PythonSettings;
