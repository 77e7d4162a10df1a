//! `celerity worker`: consume the framework's queues until SIGTERM or SIGINT.

use std::future::Future;

use tokio::runtime::Runtime;

use crate::config::flags::WorkerArgs;
use crate::control::logging;

/// Checks the flags, starts logging and runs the worker until `shutdown`.
pub fn run(args: WorkerArgs, runtime: &Runtime, shutdown: impl Future<Output = ()>) -> Result<String, String> {
    let config = args.into_config()?;
    logging::init(config.log_format);
    runtime.block_on(crate::worker::run(config, shutdown)).map_err(|e| e.to_string())?;
    Ok(String::new())
}
