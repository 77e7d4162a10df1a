//! Names the plugin framework's producers use on the broker (SPEC §1).

/// The framework's direct exchange; every queue is bound to it with routing key = queue name.
pub const EXCHANGE: &str = "default";

/// Celery publishes to the nameless default exchange with routing key = queue
/// name, which reaches the same queue as [`EXCHANGE`].
pub const DEFAULT_EXCHANGE: &str = "";

/// Celery's own default queue, used when a task names no queue.
pub const CELERY_QUEUE: &str = "celery";

/// The framework declares its queues with `x-max-priority = 255`; declaring
/// them with any other arguments fails with `406 PRECONDITION_FAILED`.
pub const MAX_PRIORITY: u8 = 255;

/// The queue argument that carries [`MAX_PRIORITY`].
pub const MAX_PRIORITY_ARG: &str = "x-max-priority";

/// Polls one schedule: kwargs `{"trace_id": str}`.
pub const SCHEDULE_TASK: &str = "bk_plugin_framework.runtime.schedule.celery.tasks.schedule";
/// Resumes a schedule waiting for a callback: kwargs `{"trace_id", "callback_id", "callback_data"}`.
pub const CALLBACK_TASK: &str = "bk_plugin_framework.runtime.callback.celery.tasks.callback";
/// Deletes finished schedules (daily beat task, no arguments).
pub const DELETE_TASK: &str = "bk_plugin_framework.runtime.schedule.celery.tasks.delete_expired_schedule";

/// Celerity's own queue for the next polls it sends: a plain durable queue
/// without priority levels, which costs the broker a fraction of what the
/// framework's `x-max-priority = 255` queue does. Only the producers' first
/// message of a schedule goes through `plugin_schedule`.
pub const NEXT_POLL_QUEUE: &str = "celerity.schedule";

/// Celerity's queue for next polls due within the countdown window
/// (`--countdown-window`): workers consume it with room to hold each
/// message, unacked, until it is due, so a countdown costs the broker one
/// enqueue, as a poll due now does, instead of a trip through the delay
/// levels. Only Celerity workers consume it; `celerity hand-back` empties it.
pub const COUNTDOWN_QUEUE: &str = "celerity.countdown";

/// One of the framework's queues and the task its producers send to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpec {
    /// Queue name, also its routing key on [`EXCHANGE`].
    pub name: &'static str,
    /// The `task` header of messages on this queue.
    pub task: &'static str,
    /// The `x-max-priority` argument the queue is declared with.
    pub max_priority: u8,
}

/// Schedule polls.
pub const SCHEDULE_QUEUE: QueueSpec =
    QueueSpec { name: "plugin_schedule", task: SCHEDULE_TASK, max_priority: MAX_PRIORITY };
/// Plugin callbacks.
pub const CALLBACK_QUEUE: QueueSpec =
    QueueSpec { name: "plugin_callback", task: CALLBACK_TASK, max_priority: MAX_PRIORITY };
/// Expired schedule deletion.
pub const DELETE_QUEUE: QueueSpec =
    QueueSpec { name: "schedule_delete", task: DELETE_TASK, max_priority: MAX_PRIORITY };

/// Every queue of the framework, in the order a worker consumes them by default.
pub const FRAMEWORK_QUEUES: [QueueSpec; 3] = [SCHEDULE_QUEUE, CALLBACK_QUEUE, DELETE_QUEUE];

/// The framework queue with this name, if any.
pub fn queue(name: &str) -> Option<QueueSpec> {
    FRAMEWORK_QUEUES.into_iter().find(|q| q.name == name)
}

/// The framework queue a task is routed to, if any.
pub fn queue_for_task(task: &str) -> Option<QueueSpec> {
    FRAMEWORK_QUEUES.into_iter().find(|q| q.task == task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree() {
        for q in FRAMEWORK_QUEUES {
            assert_eq!(queue(q.name), Some(q));
            assert_eq!(queue_for_task(q.task), Some(q));
        }
        assert_eq!(queue(CELERY_QUEUE), None);
    }
}
