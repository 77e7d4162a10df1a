//! The operators' side of a worker: Celery events and remote control (so
//! Flower and `celery inspect` see it), the in-flight view they read, the
//! metrics and health endpoint, and log output. Nothing here decides what
//! happens to a delivery.

pub mod endpoint;
pub mod events;
pub mod inflight;
pub mod logging;
pub mod pause;
pub mod pidbox;
pub mod queue_stats;

/// Seconds since the UNIX epoch, as Celery's `time()` stamps events and expiries.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}
