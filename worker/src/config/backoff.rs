//! The backoff of retries after transient database errors: Celery's way,
//! the same message re-published with `retries + 1` after
//! `min(base * 2^retries, max)`, computed by backon.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// First countdown: a blip of a few seconds is ridden out on the first retry.
pub const DEFAULT_BASE: Duration = Duration::from_secs(5);
/// Longest countdown: a database back within a minute is noticed within a minute.
pub const DEFAULT_MAX: Duration = Duration::from_secs(60);
/// Retries before FAIL: 5+10+20+40+60+60 s, about three minutes of outage.
pub const DEFAULT_MAX_RETRIES: u32 = 6;

/// Countdowns between retries and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Countdown of the first retry.
    pub base: Duration,
    /// Upper bound of any countdown.
    pub max: Duration,
    /// Retries before giving up.
    pub max_retries: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: DEFAULT_BASE, max: DEFAULT_MAX, max_retries: DEFAULT_MAX_RETRIES }
    }
}

impl Backoff {
    /// The countdown before the retry of a message that has been retried
    /// `retries` times already, or `None` when the cap is reached.
    pub fn countdown(&self, retries: u32) -> Option<Duration> {
        ExponentialBuilder::new()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_max_times(self.max_retries as usize)
            .build()
            .nth(retries as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sequence_is_5_10_20_40_60_60_then_give_up() {
        let p = Backoff::default();
        let seq: Vec<u64> = (0..7).map_while(|r| p.countdown(r)).map(|d| d.as_secs()).collect();
        assert_eq!(seq, [5, 10, 20, 40, 60, 60]);
        assert_eq!(p.countdown(6), None);
        assert_eq!(p.countdown(100), None);
    }

    #[test]
    fn shrunk_for_tests() {
        let p = Backoff { base: Duration::from_millis(100), max: Duration::from_millis(300), max_retries: 3 };
        let seq: Vec<u128> = (0..4).map_while(|r| p.countdown(r)).map(|d| d.as_millis()).collect();
        assert_eq!(seq, [100, 200, 300]);
    }
}
