//! Tracing's configuration, read once at start from the environment: the
//! settings BlueKing apps turn tracing on with (blueapps' names, which the
//! PaaS sets as environment variables of the same names) and the standard
//! `OTEL_*` variables. Where both name a value, the BlueKing setting wins,
//! as it does in the app's Python side, where blueapps passes it to the
//! SDK explicitly. Every value remembers where it came from, for the
//! start-up log.

use std::fmt;

/// Where a value came from: a variable's name, or `default`.
pub type Source = &'static str;

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// The variable it came from.
    pub source: Source,
}

/// How spans leave the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`BKAPP_OTEL_GRPC_HOST`, or `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`).
    HttpProtobuf,
}

/// Which polls are sampled: the names blueapps and the OTel SDKs share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Every trace.
    AlwaysOn,
    /// No trace (the context still travels on).
    AlwaysOff,
    /// This fraction of traces, by trace id.
    Ratio(f64),
    /// As the producer's span was; a poll without one by the inner choice.
    ParentBased(Root),
}

/// A parent-based sampler's choice for a trace that starts here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    /// Sampled.
    On,
    /// Not sampled.
    Off,
    /// This fraction, by trace id.
    Ratio(f64),
}

/// What tracing was configured to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where spans go: a gRPC endpoint, or the full URL of `/v1/traces`.
    pub endpoint: Setting<String>,
    /// How they go there.
    pub protocol: Setting<Protocol>,
    /// `service.name`.
    pub service_name: Setting<String>,
    /// Which polls are sampled.
    pub sampling: Setting<Sampling>,
    /// Resource attributes besides `service.name` (`OTEL_RESOURCE_ATTRIBUTES`
    /// and BlueKing APM's `bk.data.token`), in order.
    pub resource: Vec<(String, String)>,
    /// Whether `bk.data.token` was set (its value is a secret: never logged).
    pub data_token: Option<Source>,
    /// Finished spans waiting to be sent, at most (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub queue: Setting<usize>,
}

/// A setting that cannot be used, with the variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting {
    /// The variable.
    pub name: &'static str,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for BadSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.why)
    }
}

impl std::error::Error for BadSetting {}

const ENABLE: &str = "ENABLE_OTEL_TRACE";
const BK_GRPC_HOST: &str = "BKAPP_OTEL_GRPC_HOST";
const BK_SERVICE_NAME: &str = "BKAPP_OTEL_SERVICE_NAME";
const BK_SAMPLER: &str = "BKAPP_OTEL_SAMPLER";
const BK_DATA_TOKEN: &str = "BKAPP_OTEL_BK_DATA_TOKEN";
const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
const RESOURCE: &str = "OTEL_RESOURCE_ATTRIBUTES";
const APP_ID: &str = "BKPAAS_APP_ID";
const QUEUE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";

/// The SDKs' default span queue.
const DEFAULT_QUEUE: usize = 2048;
/// The largest span queue accepted: a span is a few hundred bytes.
const MAX_QUEUE: usize = 1 << 20;

/// Longest value read from any of these variables: they end up in every
/// export request, so a runaway value is refused at start.
const MAX_VALUE: usize = 4096;

impl Settings {
    /// Reads the settings through `var` (the environment, in the worker).
    /// `None`: tracing is off, which it is unless configured: set
    /// `ENABLE_OTEL_TRACE`, or give an OTLP endpoint.
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, BadSetting> {
        let get = |name: &'static str| -> Result<Option<Setting<String>>, BadSetting> {
            match var(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) if v.len() > MAX_VALUE => Err(bad(name, format!("longer than {MAX_VALUE} bytes"))),
                Some(v) => Ok(Some(Setting { value: v.trim().to_owned(), source: name })),
            }
        };
        let enable = get(ENABLE)?.map(|s| flag(&s)).transpose()?;
        let disabled = get(SDK_DISABLED)?.map(|s| flag(&s)).transpose()?.unwrap_or(false);
        let exporter_none = get(TRACES_EXPORTER)?.is_some_and(|s| s.value.eq_ignore_ascii_case("none"));
        let bk_host = get(BK_GRPC_HOST)?;
        let (endpoint, traces_endpoint) = (get(ENDPOINT)?, get(TRACES_ENDPOINT)?);
        let configured = bk_host.is_some() || endpoint.is_some() || traces_endpoint.is_some();
        let on = match enable {
            Some(on) => on,
            None => configured && !disabled && !exporter_none,
        };
        if !on {
            return Ok(None);
        }

        let (endpoint, protocol) = match bk_host {
            Some(host) => {
                let protocol = Setting { value: Protocol::Grpc, source: BK_GRPC_HOST };
                (url(host)?, protocol)
            }
            None => {
                let protocol = match get(TRACES_PROTOCOL)?.or(get(PROTOCOL)?) {
                    None => Setting { value: Protocol::Grpc, source: "default" },
                    Some(p) => Setting { value: protocol_named(&p)?, source: p.source },
                };
                let endpoint = match (traces_endpoint, endpoint, protocol.value) {
                    (Some(exact), _, _) => url(exact)?,
                    (None, Some(base), Protocol::Grpc) => url(base)?,
                    (None, Some(base), Protocol::HttpProtobuf) => {
                        let base = url(base)?;
                        let value = format!("{}/v1/traces", base.value.trim_end_matches('/'));
                        Setting { value, source: base.source }
                    }
                    (None, None, Protocol::Grpc) => default("http://localhost:4317"),
                    (None, None, Protocol::HttpProtobuf) => default("http://localhost:4318/v1/traces"),
                };
                (endpoint, protocol)
            }
        };

        let mut resource = match get(RESOURCE)? {
            Some(attrs) => resource_attributes(&attrs)?,
            None => Vec::new(),
        };
        let named_in_resource = resource.iter().position(|(k, _)| k == "service.name").map(|i| resource.remove(i).1);
        let service_name = match (get(BK_SERVICE_NAME)?, get(SERVICE_NAME)?, named_in_resource, get(APP_ID)?) {
            (Some(name), _, _, _) | (None, Some(name), _, _) => name,
            (None, None, Some(name), _) => Setting { value: name, source: RESOURCE },
            (None, None, None, Some(app)) => app,
            (None, None, None, None) => default("celerity"),
        };

        // blueapps' default keeps a trace only when the producer's was kept;
        // the SDKs' default starts one for every poll without a parent.
        let sampler_default = if enable.is_some() { "parentbased_always_off" } else { "parentbased_always_on" };
        let ratio = match get(SAMPLER_ARG)? {
            None => 1.0,
            Some(arg) => fraction(&arg)?,
        };
        let sampling = match get(BK_SAMPLER)?.or(get(SAMPLER)?) {
            Some(name) => Setting { value: sampling_named(&name, ratio)?, source: name.source },
            None => Setting { value: sampling_named(&default(sampler_default), ratio)?, source: "default" },
        };

        let token = get(BK_DATA_TOKEN)?;
        let data_token = token.as_ref().map(|t| t.source);
        if let Some(token) = token {
            resource.retain(|(k, _)| k != "bk.data.token");
            resource.push(("bk.data.token".to_owned(), token.value));
        }
        let queue = match get(QUEUE)? {
            None => Setting { value: DEFAULT_QUEUE, source: "default" },
            Some(q) => match q.value.parse::<usize>() {
                Ok(n) if (1..=MAX_QUEUE).contains(&n) => Setting { value: n, source: QUEUE },
                _ => return Err(bad(QUEUE, format!("{:?} is not a count from 1 to {MAX_QUEUE}", q.value))),
            },
        };
        Ok(Some(Settings { endpoint, protocol, service_name, sampling, resource, data_token, queue }))
    }

    /// One line per setting, saying where each value came from.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            format!("endpoint {} ({})", self.endpoint.value, self.endpoint.source),
            format!("protocol {:?} ({})", self.protocol.value, self.protocol.source),
            format!("service.name {} ({})", self.service_name.value, self.service_name.source),
            format!("sampler {:?} ({})", self.sampling.value, self.sampling.source),
            format!("span queue {} ({})", self.queue.value, self.queue.source),
        ];
        let shown: Vec<&str> =
            self.resource.iter().map(|(k, _)| k.as_str()).filter(|k| *k != "bk.data.token").collect();
        if !shown.is_empty() {
            lines.push(format!("resource attributes {} ({RESOURCE})", shown.join(", ")));
        }
        if let Some(source) = self.data_token {
            lines.push(format!("bk.data.token set ({source})"));
        }
        lines
    }
}

fn bad(name: &'static str, why: impl Into<String>) -> BadSetting {
    BadSetting { name, why: why.into() }
}

fn default(value: &str) -> Setting<String> {
    Setting { value: value.to_owned(), source: "default" }
}

/// Python's truthy spellings, as Django settings read from the environment.
fn flag(s: &Setting<String>) -> Result<bool, BadSetting> {
    match s.value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(bad(s.source, format!("{:?} is not true or false", s.value))),
    }
}

fn url(s: Setting<String>) -> Result<Setting<String>, BadSetting> {
    if !(s.value.starts_with("http://") || s.value.starts_with("https://")) {
        return Err(bad(s.source, format!("{:?} is not an http:// or https:// URL", s.value)));
    }
    if s.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(s.source, "a URL cannot hold spaces or control characters"));
    }
    Ok(s)
}

fn protocol_named(s: &Setting<String>) -> Result<Protocol, BadSetting> {
    match s.value.as_str() {
        "grpc" => Ok(Protocol::Grpc),
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        other => Err(bad(s.source, format!("{other:?}: only grpc and http/protobuf are supported"))),
    }
}

fn fraction(s: &Setting<String>) -> Result<f64, BadSetting> {
    match s.value.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(bad(s.source, format!("{:?} is not a fraction between 0 and 1", s.value))),
    }
}

fn sampling_named(s: &Setting<String>, ratio: f64) -> Result<Sampling, BadSetting> {
    Ok(match s.value.to_ascii_lowercase().as_str() {
        "always_on" => Sampling::AlwaysOn,
        "always_off" => Sampling::AlwaysOff,
        "traceidratio" => Sampling::Ratio(ratio),
        "parentbased_always_on" => Sampling::ParentBased(Root::On),
        "parentbased_always_off" => Sampling::ParentBased(Root::Off),
        "parentbased_traceidratio" => Sampling::ParentBased(Root::Ratio(ratio)),
        other => {
            return Err(bad(
                s.source,
                format!(
                    "{other:?} is not a sampler: always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off or parentbased_traceidratio"
                ),
            ));
        }
    })
}

/// `key=value,key=value`, values percent-decoded, as the OTel spec writes them.
fn resource_attributes(s: &Setting<String>) -> Result<Vec<(String, String)>, BadSetting> {
    let mut attrs = Vec::new();
    for pair in s.value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(bad(s.source, format!("{pair:?} is not key=value")));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(bad(s.source, format!("{pair:?} has no key")));
        }
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| bad(s.source, format!("{pair:?}: the value is not UTF-8 once decoded")))?;
        attrs.push((key.to_owned(), value.into_owned()));
    }
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Option<Settings>, BadSetting> {
        let env: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::read(|name| env.get(name).cloned())
    }

    #[test]
    fn off_unless_configured() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("OTEL_SERVICE_NAME", "x"), ("BKAPP_OTEL_SAMPLER", "always_on")]).unwrap(), None);
        assert_eq!(read(&[("ENABLE_OTEL_TRACE", "False"), ("BKAPP_OTEL_GRPC_HOST", "http://apm:4317")]).unwrap(), None);
        assert_eq!(
            read(&[("OTEL_SDK_DISABLED", "true"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap(),
            None
        );
        assert_eq!(
            read(&[("OTEL_TRACES_EXPORTER", "none"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]).unwrap(),
            None
        );
    }

    #[test]
    fn blueapps_settings_turn_it_on_with_blueapps_defaults() {
        let s = read(&[
            ("ENABLE_OTEL_TRACE", "True"),
            ("BKAPP_OTEL_GRPC_HOST", "http://apm.bk:4317"),
            ("BKAPP_OTEL_SERVICE_NAME", "my-plugin"),
            ("BKAPP_OTEL_BK_DATA_TOKEN", "secret"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, Setting { value: "http://apm.bk:4317".into(), source: "BKAPP_OTEL_GRPC_HOST" });
        assert_eq!(s.protocol.value, Protocol::Grpc);
        assert_eq!(s.service_name.value, "my-plugin");
        assert_eq!(s.sampling, Setting { value: Sampling::ParentBased(Root::Off), source: "default" });
        assert_eq!(s.resource, vec![("bk.data.token".to_owned(), "secret".to_owned())]);
        assert!(!s.describe().join("\n").contains("secret"), "the token is never logged");
    }

    #[test]
    fn standard_variables_with_the_sdk_defaults() {
        let s = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-resource, deployment.environment=prod%20eu"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.value, "http://collector:4318/v1/traces");
        assert_eq!(s.protocol, Setting { value: Protocol::HttpProtobuf, source: "OTEL_EXPORTER_OTLP_PROTOCOL" });
        assert_eq!(s.service_name, Setting { value: "from-resource".into(), source: "OTEL_RESOURCE_ATTRIBUTES" });
        assert_eq!(s.sampling.value, Sampling::ParentBased(Root::On));
        assert_eq!(s.resource, vec![("deployment.environment".to_owned(), "prod eu".to_owned())]);
        let exact = read(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]).unwrap().unwrap();
        assert_eq!(exact.endpoint.value, "http://c:4317");
        assert_eq!(exact.protocol, Setting { value: Protocol::Grpc, source: "default" });
    }

    #[test]
    fn the_blueking_setting_wins_where_both_are_given() {
        let s = read(&[
            ("BKAPP_OTEL_GRPC_HOST", "http://apm:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("BKAPP_OTEL_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_SERVICE_NAME", "std"),
            ("BKPAAS_APP_ID", "app"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((s.endpoint.value.as_str(), s.protocol.value), ("http://apm:4317", Protocol::Grpc));
        assert_eq!(s.sampling, Setting { value: Sampling::Ratio(0.25), source: "BKAPP_OTEL_SAMPLER" });
        assert_eq!(s.service_name.value, "std");
        let app = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("BKPAAS_APP_ID", "app")]).unwrap().unwrap();
        assert_eq!(app.service_name, Setting { value: "app".into(), source: "BKPAAS_APP_ID" });
    }

    #[test]
    fn every_sampler_name_is_read() {
        for (name, want) in [
            ("always_on", Sampling::AlwaysOn),
            ("always_off", Sampling::AlwaysOff),
            ("traceidratio", Sampling::Ratio(0.5)),
            ("parentbased_always_on", Sampling::ParentBased(Root::On)),
            ("parentbased_always_off", Sampling::ParentBased(Root::Off)),
            ("parentbased_traceidratio", Sampling::ParentBased(Root::Ratio(0.5))),
        ] {
            let s =
                read(&[("ENABLE_OTEL_TRACE", "1"), ("OTEL_TRACES_SAMPLER", name), ("OTEL_TRACES_SAMPLER_ARG", "0.5")]);
            assert_eq!(s.unwrap().unwrap().sampling.value, want, "{name}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        let on = ("ENABLE_OTEL_TRACE", "true");
        for (vars, name) in [
            (vec![("ENABLE_OTEL_TRACE", "maybe")], "ENABLE_OTEL_TRACE"),
            (vec![on, ("BKAPP_OTEL_GRPC_HOST", "apm:4317")], "BKAPP_OTEL_GRPC_HOST"),
            (vec![on, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a b")], "OTEL_EXPORTER_OTLP_ENDPOINT"),
            (vec![on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")], "OTEL_EXPORTER_OTLP_PROTOCOL"),
            (vec![on, ("BKAPP_OTEL_SAMPLER", "sometimes")], "BKAPP_OTEL_SAMPLER"),
            (vec![on, ("OTEL_TRACES_SAMPLER_ARG", "2")], "OTEL_TRACES_SAMPLER_ARG"),
            (vec![on, ("OTEL_TRACES_SAMPLER_ARG", "NaN")], "OTEL_TRACES_SAMPLER_ARG"),
            (vec![on, ("OTEL_RESOURCE_ATTRIBUTES", "novalue")], "OTEL_RESOURCE_ATTRIBUTES"),
            (vec![on, ("OTEL_RESOURCE_ATTRIBUTES", "k=%ff")], "OTEL_RESOURCE_ATTRIBUTES"),
            (vec![on, ("OTEL_BSP_MAX_QUEUE_SIZE", "0")], "OTEL_BSP_MAX_QUEUE_SIZE"),
            (vec![on, ("OTEL_BSP_MAX_QUEUE_SIZE", "-1")], "OTEL_BSP_MAX_QUEUE_SIZE"),
        ] {
            let err = read(&vars).unwrap_err();
            assert_eq!(err.name, name, "{vars:?}: {err}");
        }
        let huge = "x".repeat(MAX_VALUE + 1);
        assert_eq!(read(&[on, ("BKAPP_OTEL_SERVICE_NAME", &huge)]).unwrap_err().name, "BKAPP_OTEL_SERVICE_NAME");
    }
}
