//! `bk_plugin_framework.runtime.schedule.celery.tasks.schedule(trace_id)`.

use super::headers::pending_fail;
use super::{Handled, Store, Task};
use crate::broker::{BrokerError, Publish};

impl<S: Store, P: Publish> Task<'_, S, P> {
    /// Polls the schedule once (or writes its pending FAIL).
    pub async fn schedule(&self, trace_id: &str) -> Result<Handled, BrokerError> {
        if let Some(err) = pending_fail(self.msg) {
            return self.fail_schedule(trace_id, err).await;
        }
        self.poll(trace_id, None).await
    }
}
