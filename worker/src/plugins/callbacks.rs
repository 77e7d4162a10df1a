//! The POST of `plugin_callback_info` when a schedule ends (SPEC §3.5), as
//! the framework's `PluginCallbacker` makes it: JSON in, a JSON answer out,
//! and an answer whose `result` is false counts as a failure; three tries,
//! paced by backon. `https://` URLs are verified against the system's
//! certificate authorities (`SSL_CERT_FILE`/`SSL_CERT_DIR` move them, as
//! for OpenSSL), Mozilla's when the system has none, and the operator's
//! `--callback-ca-file`.

use std::cell::Cell;
use std::time::Duration;

use backon::{BlockingRetryable, ConstantBuilder};
use serde_json::{Map, Value};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Tries the framework gives a plugin callback.
pub const TRIES: usize = 3;
/// Time for one try, so a dead endpoint cannot hold a poll for long.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between tries.
pub const PAUSE: Duration = Duration::from_secs(1);

/// How a worker posts plugin callbacks: one HTTP agent, built once.
#[derive(Clone)]
pub struct Callbacks {
    agent: ureq::Agent,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callbacks")
    }
}

impl Callbacks {
    /// Trusting the system's authorities.
    pub fn system() -> Callbacks {
        Callbacks::trusting(Vec::new())
    }

    /// Trusting the system's authorities and those in `pem` as well.
    pub fn with_ca_pem(pem: &str) -> Result<Callbacks, String> {
        let mut extra = Vec::new();
        for item in ureq::tls::parse_pem(pem.as_bytes()) {
            match item {
                Ok(PemItem::Certificate(cert)) => extra.push(cert),
                Ok(_) => {}
                Err(e) => return Err(format!("--callback-ca-file: {e}")),
            }
        }
        Ok(Callbacks::trusting(extra))
    }

    fn trusting(extra: Vec<Certificate<'static>>) -> Callbacks {
        let mut roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect();
        roots.extend(extra);
        let root_certs = if roots.is_empty() { RootCerts::WebPki } else { RootCerts::new_with_certs(&roots) };
        let tls = TlsConfig::builder().root_certs(root_certs).build();
        let agent = ureq::Agent::config_builder().timeout_global(Some(TRY_TIMEOUT)).tls_config(tls).build().into();
        Callbacks { agent }
    }

    /// POSTs `data` as JSON to `url`, up to [`TRIES`] times; blocking.
    pub fn post_with_retry(&self, url: &str, data: &Map<String, Value>) -> Result<(), String> {
        let attempt = Cell::new(0);
        (|| -> Result<(), String> {
            attempt.set(attempt.get() + 1);
            let mut response = self.agent.post(url).send_json(data).map_err(|e| e.to_string())?;
            let answer: Value = response.body_mut().read_json().map_err(|e| format!("the answer is not JSON: {e}"))?;
            match answer.get("result") {
                Some(result) if !truthy(result) => Err(format!("the answer says result false: {answer}")),
                _ => Ok(()),
            }
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
}

/// Python's truth of a JSON value, as the framework tests `not result`.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::truthy;

    #[test]
    fn result_is_false_as_python_sees_it() {
        for falsy in [json!(false), json!(0), json!(""), json!(null), json!([]), json!({})] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for true_ in [json!(true), json!(1), json!("ok"), json!([0]), json!({"a": 1})] {
            assert!(truthy(&true_), "{true_}");
        }
    }
}
