//! The run's workload, drawn from the seed: schedules of the ledgered
//! plugin (4.0.0), most polling then succeeding, some planned to FAIL at a
//! step, some waiting for a callback after their polls; and what each is
//! planned to end as.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::checker::{End, Planned};

/// The plugin version the workload runs.
pub const VERSION: &str = "4.0.0";

/// Trace ids start with this (the callback sender looks for it).
pub const PREFIX: &str = "nem";

/// How big the workload is.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Schedules.
    pub schedules: usize,
    /// Polls per schedule: from 1 to this.
    pub max_polls: i32,
    /// Seconds between polls: from 0 to this.
    pub max_interval_s: i32,
}

/// One schedule as the producer invokes it.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    /// Its trace id.
    pub trace_id: String,
    /// The plugin version.
    pub version: &'static str,
    /// The plugin's inputs.
    pub inputs: serde_json::Value,
    /// What it should end as, if the producer's invoke works.
    #[serde(skip)]
    pub planned: Planned,
}

/// Draws the workload for `seed` (a stream of its own, apart from the timeline's).
pub fn draw(seed: u64, size: Size) -> Vec<Spec> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_10ad_u64);
    (0..size.schedules)
        .map(|i| {
            let polls = rng.random_range(1..=size.max_polls);
            let interval = rng.random_range(0..=size.max_interval_s);
            let roll: f64 = rng.random_range(0.0..1.0);
            let (inputs, planned) = if roll < 0.1 {
                let fail_at = rng.random_range(2..=polls + 1);
                (
                    serde_json::json!({"polls": polls, "interval": interval, "fail_at": fail_at}),
                    Planned {
                        end: End::Fail,
                        last_step: fail_at,
                        interval_s: f64::from(interval),
                        dispatch_unsure: false,
                    },
                )
            } else if roll < 0.2 {
                (
                    serde_json::json!({"polls": polls, "interval": interval, "callback": true}),
                    Planned {
                        end: End::Success,
                        last_step: polls + 2,
                        interval_s: f64::from(interval),
                        dispatch_unsure: false,
                    },
                )
            } else {
                (
                    serde_json::json!({"polls": polls, "interval": interval}),
                    Planned {
                        end: End::Success,
                        last_step: polls + 1,
                        interval_s: f64::from(interval),
                        dispatch_unsure: false,
                    },
                )
            };
            Spec { trace_id: format!("{PREFIX}{i:07}"), version: VERSION, inputs, planned }
        })
        .collect()
}

/// What the producer said of one invoke.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Invoked {
    /// The trace id it invoked under (the spec's, or a retry's `<id>r<n>`).
    pub trace_id: String,
    /// The spec's trace id.
    pub spec: String,
    /// Its error, if the invoke failed.
    pub err: Option<String>,
}

/// What a schedule is planned to end as, given what its invoke answered:
/// after a dispatch error the framework marks the row FAIL, or the message
/// got through and the plan holds (see `Planned::dispatch_unsure`); an
/// invoke that failed otherwise (before the row exists) plans nothing.
pub fn planned_after(spec: &Spec, invoked: &Invoked) -> Option<Planned> {
    match invoked.err.as_deref() {
        None => Some(spec.planned),
        Some(err) if err.starts_with("schedule task dispatch error") => {
            Some(Planned { dispatch_unsure: true, ..spec.planned })
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_the_seeds_and_mixes_every_ending() {
        let size = Size { schedules: 500, max_polls: 10, max_interval_s: 3 };
        let a = draw(3, size);
        let b = draw(3, size);
        assert_eq!(
            a.iter().map(|s| s.inputs.clone()).collect::<Vec<_>>(),
            b.iter().map(|s| s.inputs.clone()).collect::<Vec<_>>()
        );
        let fails = a.iter().filter(|s| s.planned.end == End::Fail).count();
        let callbacks = a.iter().filter(|s| s.inputs.get("callback").is_some()).count();
        assert!((20..80).contains(&fails), "{fails} planned to fail");
        assert!((20..80).contains(&callbacks), "{callbacks} wait for a callback");
        for s in &a {
            assert!(s.planned.last_step >= 2, "{s:?}");
        }
    }

    #[test]
    fn a_dispatch_error_plans_either_ending_and_other_errors_plan_nothing() {
        let spec = &draw(1, Size { schedules: 1, max_polls: 3, max_interval_s: 0 })[0];
        let said = |err: Option<&str>| Invoked {
            trace_id: spec.trace_id.clone(),
            spec: spec.trace_id.clone(),
            err: err.map(str::to_owned),
        };
        assert_eq!(planned_after(spec, &said(None)), Some(spec.planned));
        let dispatch = planned_after(spec, &said(Some("schedule task dispatch error: gone"))).unwrap();
        assert!(dispatch.dispatch_unsure);
        assert_eq!(dispatch.last_step, spec.planned.last_step);
        assert_eq!(planned_after(spec, &said(Some("raised: OperationalError"))), None);
    }
}
