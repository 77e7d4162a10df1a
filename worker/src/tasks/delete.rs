//! `bk_plugin_framework.runtime.schedule.celery.tasks.delete_expired_schedule()`.

use super::{Handled, Store, Task};
use crate::broker::{BrokerError, Publish};

impl<S: Store, P: Publish> Task<'_, S, P> {
    /// Deletes schedules finished more than the configured days ago, in batches.
    pub async fn delete_expired(&self) -> Result<Handled, BrokerError> {
        let config = &self.ctx.config;
        let cutoff = self.ctx.store.now() - chrono::Duration::days(config.delete_after_days.into());
        match self.ctx.store.delete_finished_before(cutoff, config.delete_batch).await {
            Ok(rows) => {
                tracing::info!(rows, %cutoff, "expired schedules deleted");
                Ok(Handled::Deleted)
            }
            Err(e) => self.on_db_error(None, e).await,
        }
    }
}
