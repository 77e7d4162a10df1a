//! `bk_plugin_framework.runtime.schedule.celery.tasks.schedule(trace_id)`.

use broker_proto::TaskMessage;

use super::{Origin, fail_schedule, pending_fail, poll};
use crate::broker::BrokerError;
use crate::context::Ctx;
use crate::settle::Handled;

/// Polls the schedule once (or writes its pending FAIL).
pub(crate) async fn run(ctx: &Ctx, origin: &Origin, msg: &TaskMessage, trace_id: &str) -> Result<Handled, BrokerError> {
    if let Some(err) = pending_fail(msg) {
        return fail_schedule(ctx, origin, msg, trace_id, err).await;
    }
    poll(ctx, origin, msg, trace_id, None).await
}
