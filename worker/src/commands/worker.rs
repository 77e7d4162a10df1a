//! `celerity worker`: consume the framework's queues until SIGTERM or SIGINT.

use std::future::Future;

use tokio::runtime::Runtime;

use crate::config::flags::WorkerArgs;
use crate::control::logging;

/// Checks the flags, starts logging and runs the worker until `shutdown`.
pub fn run(
    args: WorkerArgs,
    runtime: &Runtime,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<String, String> {
    let config = args.into_config()?;
    logging::init(config.log_format, config.log_level);
    let tracing = crate::telemetry::start(runtime.handle())?;
    // On a runtime thread, not `block_on`'s: there, the session's loop
    // woke one more thread for every delivery (BENCHMARKS.md, issue 19).
    let worker = runtime.spawn(crate::worker::run(config, shutdown));
    let ran = match runtime.block_on(worker) {
        Ok(ran) => ran.map_err(|e| e.to_string()),
        Err(join) => Err(format!("the worker stopped: {join}")),
    };
    if let Some(tracing) = tracing {
        tracing.shutdown();
    }
    ran.map(|()| String::new())
}
