//! `celerity plugins`: every plugin version, where it runs and what is
//! behind it, as a worker with the same flags would run them.

use std::sync::Arc;

use tracing::level_filters::LevelFilter;

use crate::config::flags::PluginsArgs;
use crate::plugins::example::Example;
use crate::plugins::python::Pool;
use crate::plugins::{Plugins, Registry, Runs};

/// Starts one plugin host when `--python` is given and lists the versions.
pub async fn run(args: PluginsArgs) -> Result<String, String> {
    let mut registry = Registry::new();
    if args.plugins.example_plugin {
        registry.register("1.0.0", Example);
    }
    let pool = match args
        .plugins
        .python_settings(crate::config::validate::rust_log_level().unwrap_or(LevelFilter::INFO))?
    {
        Some(settings) => Some(Arc::new(Pool::start(crate::config::PythonSettings { workers: 1, ..settings }).await?)),
        None => None,
    };
    let plugins = Plugins::new(registry, pool.clone())?;
    let mut text = String::new();
    for (version, runs) in plugins.versions() {
        let (kind, behind) = match runs {
            Runs::Rust(type_name) => ("rust", type_name.to_owned()),
            Runs::Python(class) => ("python", class),
        };
        text.push_str(&format!("{version:<16} {kind:<7} {behind}\n"));
    }
    if let Some(pool) = &pool {
        let ready = pool.ready();
        text.push_str(&format!(
            "python {} ({}), bk-plugin-framework {}, pydantic {}\n",
            ready.python,
            pool.settings().interpreter.display(),
            ready.framework,
            ready.pydantic
        ));
        pool.close().await;
    }
    Ok(text)
}
