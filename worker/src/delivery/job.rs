//! Which task a message names, with its arguments checked.

use broker_proto::{TaskMessage, topology};

use crate::tasks::callback::CallbackArgs;

/// The task a message names, with its arguments checked.
#[derive(Debug, Clone)]
pub enum Job {
    /// `schedule(trace_id)`.
    Schedule(String),
    /// `callback(trace_id, callback_id, callback_data)`.
    Callback(CallbackArgs),
    /// `delete_expired_schedule()`.
    Delete,
}

impl Job {
    /// Routes by task name and checks the arguments, or says why it cannot run.
    pub fn of(msg: &TaskMessage) -> Result<Job, String> {
        let text = |name: &str| {
            msg.kwarg_str(name)
                .map(str::to_owned)
                .ok_or_else(|| format!("task {} has no string kwarg {name:?}", msg.task))
        };
        match msg.task.as_str() {
            topology::SCHEDULE_TASK => Ok(Job::Schedule(text("trace_id")?)),
            topology::CALLBACK_TASK => Ok(Job::Callback(CallbackArgs {
                trace_id: text("trace_id")?,
                callback_id: text("callback_id")?,
                callback_data: text("callback_data")?,
            })),
            topology::DELETE_TASK => Ok(Job::Delete),
            other => Err(format!("unknown task {other:?}")),
        }
    }

    /// Every [`Job::name`].
    pub const NAMES: [&'static str; 3] = ["schedule", "callback", "delete"];

    /// The task's short name, the `task` label of the metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Job::Schedule(_) => "schedule",
            Job::Callback(_) => "callback",
            Job::Delete => "delete",
        }
    }
}

#[cfg(test)]
mod tests {
    use broker_proto::Value;

    use super::*;

    fn message(task: &str, kwargs: &[(&str, &str)]) -> TaskMessage {
        let mut m = TaskMessage::new(task, "id");
        for (k, v) in kwargs {
            m.kwargs.insert((*k).into(), Value::String((*v).into()));
        }
        m
    }

    #[test]
    fn the_framework_tasks_route_with_their_arguments() {
        let job = Job::of(&message(topology::SCHEDULE_TASK, &[("trace_id", "t")])).unwrap();
        assert!(matches!(&job, Job::Schedule(t) if t == "t"));
        assert_eq!(job.name(), "schedule");
        let args = [("trace_id", "t"), ("callback_id", "c"), ("callback_data", "{}")];
        let job = Job::of(&message(topology::CALLBACK_TASK, &args)).unwrap();
        assert!(matches!(&job, Job::Callback(a) if a.callback_id == "c" && a.callback_data == "{}"));
        assert_eq!(Job::of(&message(topology::DELETE_TASK, &[])).unwrap().name(), "delete");
    }

    #[test]
    fn unknown_tasks_and_missing_arguments_say_why() {
        assert_eq!(Job::of(&message("no.such.task", &[])).unwrap_err(), r#"unknown task "no.such.task""#);
        let err = Job::of(&message(topology::CALLBACK_TASK, &[("trace_id", "t")])).unwrap_err();
        assert!(err.ends_with(r#"has no string kwarg "callback_id""#), "{err}");
        let mut number = message(topology::SCHEDULE_TASK, &[]);
        number.kwargs.insert("trace_id".into(), Value::Bool(true));
        assert!(Job::of(&number).is_err());
    }
}
