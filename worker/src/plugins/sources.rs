//! Where each plugin version runs: a Rust plugin in this process, or a
//! Python plugin in the plugin project's hosts. A version has exactly one
//! source, and a worker without any refuses to start.

use std::sync::Arc;
use std::time::Instant;

use super::callbacks::Callbacks;
use super::python::Pool;
use super::registry::Registry;
use super::step::{StepError, StepInput, StepResult};
use crate::meters;

/// The plugins a worker runs.
#[derive(Clone)]
pub struct Plugins {
    rust: Arc<Registry>,
    python: Option<Arc<Pool>>,
    /// How their `plugin_callback_info` is posted.
    callbacks: Callbacks,
}

/// A step as [`Plugins::local`] finds it.
pub enum Local<F> {
    /// A Rust plugin of this process takes it: blocking work to run off the
    /// async side.
    Step(F),
    /// A Python plugin, or none, takes it: the input back, for [`Plugins::step`].
    Elsewhere(StepInput),
}

/// What runs a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runs {
    /// A Rust plugin of this process, by its type.
    Rust(&'static str),
    /// A plugin class of the Python project, `module.Class`.
    Python(String),
}

impl Plugins {
    /// The Rust plugins of `rust` and the Python ones `python`'s hosts
    /// report. Refused: a version both offer, and no plugin at all.
    pub fn new(rust: Registry, python: Option<Arc<Pool>>) -> Result<Plugins, String> {
        if let Some(pool) = &python {
            for (version, type_name) in rust.versions() {
                if let Some(py) = pool.version(version) {
                    return Err(format!(
                        "plugin version {version} is offered by the Rust plugin {type_name} and by the Python class {}; a version must have one source",
                        py.class
                    ));
                }
            }
            if pool.ready().versions.is_empty() {
                return Err("the Python plugin project registers no plugin versions (bk_plugin_framework's VersionHub is empty and bk_plugin.versions holds none)".into());
            }
        } else if rust.versions().is_empty() {
            return Err(
                "no plugins to run: give --python PATH (the plugin project's interpreter) or --example-plugin".into()
            );
        }
        Ok(Plugins { rust: Arc::new(rust), python, callbacks: Callbacks::system() })
    }

    /// Only the Rust plugins of `rust` (embedding programs and tests).
    pub fn rust(rust: Registry) -> Plugins {
        Plugins { rust: Arc::new(rust), python: None, callbacks: Callbacks::system() }
    }

    /// These plugins, posting their callbacks with `callbacks`.
    pub fn posting_with(self, callbacks: Callbacks) -> Plugins {
        Plugins { callbacks, ..self }
    }

    /// How their `plugin_callback_info` is posted.
    pub fn callbacks(&self) -> &Callbacks {
        &self.callbacks
    }

    /// Every version, sorted, with what runs it.
    pub fn versions(&self) -> Vec<(String, Runs)> {
        let mut all: Vec<(String, Runs)> =
            self.rust.versions().into_iter().map(|(v, type_name)| (v.to_owned(), Runs::Rust(type_name))).collect();
        if let Some(pool) = &self.python {
            all.extend(pool.ready().versions.iter().map(|v| (v.version.clone(), Runs::Python(v.class.clone()))));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The Python hosts, when the project has any.
    pub fn python(&self) -> Option<&Arc<Pool>> {
        self.python.as_ref()
    }

    /// One step of the plugin of `input.version`, wherever it runs.
    pub async fn step(&self, input: StepInput) -> Result<StepResult, StepError> {
        let input = match self.local(input) {
            Local::Step(step) => {
                return Ok(tokio::task::spawn_blocking(step)
                    .await
                    .unwrap_or_else(|join| panic!("a plugin step panicked outside the plugin: {join}")));
            }
            Local::Elsewhere(input) => input,
        };
        let Some(pool) = self.python.as_ref().filter(|p| p.version(&input.version).is_some()) else {
            // Not measured: versions named only by bad rows would be unbounded labels.
            return Ok(StepResult::invalid(format!("can not find plugin for version {}", input.version)));
        };
        let started = Instant::now();
        let result = pool.step(&input).await;
        let outcome = match &result {
            Ok(result) => result.label(),
            Err(StepError::HostDied(_)) => "host died",
            Err(StepError::TimedOut(_)) => "timed out",
            Err(StepError::Unreadable(_)) => "unreadable",
            Err(StepError::NoHost(_)) => "no host",
        };
        record(&input.version, outcome, started);
        result
    }

    /// The step of `input` as blocking work to run off the async side, when
    /// a Rust plugin of this process takes it (its caller may run it on the
    /// thread that then stores the result); `input` back otherwise.
    pub fn local(&self, input: StepInput) -> Local<impl FnOnce() -> StepResult + Send + 'static> {
        if !self.rust.contains(&input.version) {
            return Local::Elsewhere(input);
        }
        let rust = self.rust.clone();
        Local::Step(move || {
            let started = Instant::now();
            let version = input.version.clone();
            let result = rust
                .step(input)
                .unwrap_or_else(|| StepResult::invalid(format!("can not find plugin for version {version}")));
            record(&version, result.label(), started);
            result
        })
    }

    /// Stops the Python hosts (the worker is stopping).
    pub async fn close(&self) {
        if let Some(pool) = &self.python {
            pool.close().await;
        }
    }
}

/// How long a step took, by version and outcome.
fn record(version: &str, outcome: &'static str, started: Instant) {
    metrics::histogram!(meters::STEP_SECONDS, "version" => version.to_owned(), "outcome" => outcome)
        .record(started.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_without_plugins_says_which_flags_give_it_some() {
        let err = Plugins::new(Registry::new(), None).err().expect("refused");
        assert!(err.contains("--python PATH") && err.contains("--example-plugin"), "{err}");
    }

    #[test]
    fn versions_say_what_runs_them() {
        let plugins = Plugins::new(Registry::with_builtin(), None).unwrap();
        let versions = plugins.versions();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].0, "1.0.0");
        assert!(matches!(&versions[0].1, Runs::Rust(t) if t.ends_with("example::Example")), "{versions:?}");
    }
}
