//! OpenTelemetry tracing, configured the way BlueKing apps configure it:
//! one trace per schedule, from the producer's span through every poll, as
//! the Python worker with the Celery instrumentation gives. Off unless
//! configured ([`Settings::read`]).
//!
//! - [`settings`]: what the environment asks for, and where each value came from;
//! - [`export`]: the OTLP exporter, batched off the poll's path;
//! - [`spans`]: the spans of a run and of what it sends.

pub mod export;
pub mod settings;
pub mod spans;

pub use self::settings::{BadSetting, Settings};
pub use self::spans::{Publishing, Run};

/// Reads the settings from the environment and, when tracing is
/// configured, installs it and logs where each value came from.
pub fn start(runtime: &tokio::runtime::Handle) -> Result<Option<export::Installed>, String> {
    let Some(settings) = Settings::read(|name| std::env::var(name).ok()).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let installed = export::install(&settings, runtime)?;
    spans::switch_on();
    for line in settings.describe() {
        tracing::info!("tracing: {line}");
    }
    Ok(Some(installed))
}
