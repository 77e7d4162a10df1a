//! The example plugin, version `1.0.0`: behaves exactly like the Python
//! plugin used to check compatibility (SPEC §5).

use serde::{Deserialize, Serialize};

use super::plugin::{Context, Outcome, Plugin};

/// Polls `polls` times, `interval` seconds apart, then succeeds; fails when
/// `invoke_count` reaches `fail_at`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Example;

/// The example plugin's inputs.
#[derive(Debug, Clone, Deserialize)]
pub struct Inputs {
    /// Worker polls before success.
    pub polls: i64,
    /// Seconds between polls.
    #[serde(default)]
    pub interval: i64,
    /// The invoke_count at which to fail, if any.
    #[serde(default)]
    pub fail_at: Option<i64>,
}

/// The example plugin requires no context data.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NoContext {}

impl Plugin for Example {
    type Inputs = Inputs;
    type ContextData = NoContext;

    fn execute(&self, inputs: Inputs, ctx: &mut Context<NoContext>) -> Outcome {
        let invoke_count = i64::from(ctx.invoke_count);
        if inputs.fail_at == Some(invoke_count) {
            return Outcome::Error("fail_at reached".into());
        }
        let executions = ctx.storage.get("executions").and_then(|v| v.as_i64()).unwrap_or(0) + 1;
        ctx.storage.insert("executions".into(), executions.into());
        if invoke_count < inputs.polls + 1 {
            return Outcome::Poll(inputs.interval);
        }
        ctx.outputs.insert("polls_done".into(), (executions - 1).into());
        Outcome::Success
    }
}
