//! `bk_plugin_framework.runtime.schedule.celery.tasks.delete_expired_schedule()`.

use broker_proto::TaskMessage;
use celerity_db::repo;

use super::{Origin, on_db_error};
use crate::broker::BrokerError;
use crate::context::Ctx;
use crate::settle::Handled;

/// Deletes schedules finished more than the configured days ago, in batches.
pub(crate) async fn run(ctx: &Ctx, origin: &Origin, msg: &TaskMessage) -> Result<Handled, BrokerError> {
    let cutoff = ctx.db.now() - chrono::Duration::days(ctx.config.delete_after_days.into());
    let batch = ctx.config.delete_batch;
    match ctx.db.call(move |c| repo::delete_finished_before(c, cutoff, batch)).await {
        Ok(rows) => {
            tracing::info!(rows, %cutoff, "expired schedules deleted");
            Ok(Handled("deleted"))
        }
        Err(e) => on_db_error(ctx, origin, msg, None, e).await,
    }
}
