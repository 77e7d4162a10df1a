//! The POST of `plugin_callback_info` when a schedule ends (SPEC §3.5).

use std::time::Duration;

use serde_json::{Map, Value};

/// Tries the framework gives a plugin callback.
pub const TRIES: u32 = 3;
/// Time for one try, so a dead endpoint cannot hold a poll for long.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between tries.
pub const PAUSE: Duration = Duration::from_secs(1);

/// POSTs `data` as JSON to `url`, up to [`TRIES`] times; blocking.
pub fn post_with_retry(url: &str, data: &Map<String, Value>) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(TRY_TIMEOUT)).build().into();
    let mut last = String::new();
    for attempt in 1..=TRIES {
        match agent.post(url).send_json(data) {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = e.to_string();
                tracing::warn!(%url, attempt, error = %last, "plugin callback failed");
            }
        }
        if attempt < TRIES {
            std::thread::sleep(PAUSE);
        }
    }
    Err(format!("plugin callback to {url} failed {TRIES} times: {last}"))
}
