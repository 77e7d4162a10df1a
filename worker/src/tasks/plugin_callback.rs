//! The POST of `plugin_callback_info` when a schedule ends (SPEC §3.5):
//! the framework's three tries, paced by backon.

use std::cell::Cell;
use std::time::Duration;

use backon::{BlockingRetryable, ConstantBuilder};
use serde_json::{Map, Value};

/// Tries the framework gives a plugin callback.
pub const TRIES: usize = 3;
/// Time for one try, so a dead endpoint cannot hold a poll for long.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between tries.
pub const PAUSE: Duration = Duration::from_secs(1);

/// POSTs `data` as JSON to `url`, up to [`TRIES`] times; blocking.
pub fn post_with_retry(url: &str, data: &Map<String, Value>) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(TRY_TIMEOUT)).build().into();
    let attempt = Cell::new(0);
    (|| {
        attempt.set(attempt.get() + 1);
        agent.post(url).send_json(data).map(drop)
    })
    .retry(ConstantBuilder::new().with_delay(PAUSE).with_max_times(TRIES - 1))
    .sleep(std::thread::sleep)
    .notify(|e, _| tracing::warn!(%url, attempt = attempt.get(), error = %e, "plugin callback failed"))
    .call()
    .map_err(|e| {
        tracing::warn!(%url, attempt = attempt.get(), error = %e, "plugin callback failed");
        format!("plugin callback to {url} failed {TRIES} times: {e}")
    })
}
