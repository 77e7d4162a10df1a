//! How a delivery was handled, as a type. The ack decision, the metric
//! label and the Celery event each come from one exhaustive `match` here,
//! so a new outcome forces all three decisions.

use celerity_db::State;

use crate::broker::BrokerError;
use crate::control::events::TaskEnd;
use crate::telemetry::spans::Ended;

/// How a delivery was handled.
#[derive(Debug)]
pub enum Handled {
    /// The poll landed; the schedule is now in this state.
    Polled(State),
    /// The schedule has moved on past what the message expected (a
    /// duplicate, a stale redelivery, or another delivery polled first).
    Stale,
    /// The message's own earlier try had landed; its next poll was published again.
    NextPollRepublished,
    /// The schedule is SUCCESS or FAIL already.
    AlreadyFinal,
    /// No schedule has the message's trace id.
    NoSuchSchedule,
    /// A callback for a schedule that is not waiting for one.
    NotInCallback,
    /// Another worker holds the callback lock; the callback was sent again for later.
    LockBusy,
    /// A transient database error; the message was published again with a countdown.
    Retried,
    /// Retries spent by a task with no schedule to fail (the delete task).
    GaveUp,
    /// FAIL was written with the reason (a database error, retries spent, bad callback data).
    Failed,
    /// FAIL could not be written yet; a message that writes it is in flight.
    FailPending,
    /// A schedule-fatal database error in a task with no schedule to fail.
    Fatal,
    /// An operator paused the schedule: the message is parked in the
    /// database until a resume sends it again.
    Parked,
    /// The worker is paused by an environment fault: the message went back
    /// to its queue unchanged, its retries unspent.
    SetAside,
    /// Expired schedules were deleted.
    Deleted,
    /// The message's `expires` had passed; it was dropped as Celery does.
    Expired,
    /// Due later than the eta window: moved to the broker's delay queues.
    MovedToDelay,
    /// Poison or undecodable: copied to the dead-letter queue.
    DeadLettered,
    /// A redelivered classic-queue message, published again with its delivery count.
    Recounted,
    /// The plugin host died during the step; the message was sent again.
    HostDied,
    /// Its effect could not be made durable; the broker delivers it again.
    HandedBack(BrokerError),
    /// Shutdown came while it waited for its eta; it stays unacked and the
    /// channel's close hands it back.
    Interrupted,
}

/// What happens to the delivery at the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Its effect is durable: ack.
    Ack,
    /// Hand it back now (nack with requeue): it runs again.
    Requeue,
    /// Leave it unacked: closing the channel hands it back.
    Leave,
}

impl Handled {
    /// Ack, hand back, or leave for the channel's close.
    pub fn settlement(&self) -> Settlement {
        match self {
            Handled::HandedBack(_) => Settlement::Requeue,
            Handled::Interrupted => Settlement::Leave,
            Handled::Polled(_)
            | Handled::Stale
            | Handled::NextPollRepublished
            | Handled::AlreadyFinal
            | Handled::NoSuchSchedule
            | Handled::NotInCallback
            | Handled::LockBusy
            | Handled::Retried
            | Handled::GaveUp
            | Handled::Failed
            | Handled::FailPending
            | Handled::Fatal
            | Handled::SetAside
            | Handled::Parked
            | Handled::Deleted
            | Handled::Expired
            | Handled::MovedToDelay
            | Handled::DeadLettered
            | Handled::Recounted
            | Handled::HostDied => Settlement::Ack,
        }
    }

    /// Every value of [`Handled::label`], so that each task's counter of each
    /// outcome exists at 0 from the first scrape. A new outcome adds its label here.
    pub const LABELS: [&'static str; 26] = [
        "empty",
        "poll",
        "callback",
        "success",
        "fail",
        "stale",
        "next poll re-published",
        "already final",
        "no such schedule",
        "not in callback",
        "lock busy",
        "retried",
        "gave up",
        "failed",
        "fail pending",
        "fatal",
        "set aside while paused",
        "parked",
        "deleted",
        "expired",
        "moved to the delay queues",
        "dead-lettered",
        "re-published with its delivery count",
        "host died",
        "handed back",
        "interrupted",
    ];

    /// The `outcome` label of `celerity_tasks_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Handled::Polled(State::Empty) => "empty",
            Handled::Polled(State::Poll) => "poll",
            Handled::Polled(State::Callback) => "callback",
            Handled::Polled(State::Success) => "success",
            Handled::Polled(State::Fail) => "fail",
            Handled::Stale => "stale",
            Handled::NextPollRepublished => "next poll re-published",
            Handled::AlreadyFinal => "already final",
            Handled::NoSuchSchedule => "no such schedule",
            Handled::NotInCallback => "not in callback",
            Handled::LockBusy => "lock busy",
            Handled::Retried => "retried",
            Handled::GaveUp => "gave up",
            Handled::Failed => "failed",
            Handled::FailPending => "fail pending",
            Handled::Fatal => "fatal",
            Handled::SetAside => "set aside while paused",
            Handled::Parked => "parked",
            Handled::Deleted => "deleted",
            Handled::Expired => "expired",
            Handled::MovedToDelay => "moved to the delay queues",
            Handled::DeadLettered => "dead-lettered",
            Handled::Recounted => "re-published with its delivery count",
            Handled::HostDied => "host died",
            Handled::HandedBack(_) => "handed back",
            Handled::Interrupted => "interrupted",
        }
    }

    /// The Celery event a task that ran and ended so sends. The schedule
    /// task returns nothing whatever state the plugin left, so a landed poll
    /// succeeded even when it wrote FAIL; a FAIL written for a database
    /// error is a failure, as the Python task would have raised.
    pub fn event(&self) -> TaskEnd {
        match self {
            Handled::Polled(_)
            | Handled::Stale
            | Handled::NextPollRepublished
            | Handled::AlreadyFinal
            | Handled::NoSuchSchedule
            | Handled::NotInCallback
            | Handled::LockBusy
            | Handled::Deleted
            | Handled::MovedToDelay
            | Handled::Recounted => TaskEnd::Succeeded,
            Handled::Retried | Handled::FailPending | Handled::HostDied => TaskEnd::Retried,
            Handled::GaveUp | Handled::Failed | Handled::Fatal | Handled::Expired | Handled::DeadLettered => {
                TaskEnd::Failed(self.label())
            }
            Handled::HandedBack(_) | Handled::Interrupted | Handled::SetAside | Handled::Parked => TaskEnd::Rejected,
        }
    }
}

impl Handled {
    /// How the run's span ends: Celery's state for the event it sends, and
    /// an error status for a run that failed, was sent again or could not
    /// make its effect durable.
    pub fn span_end(&self) -> Ended {
        let (state, error) = match self.event() {
            TaskEnd::Succeeded => ("SUCCESS", false),
            TaskEnd::Retried => ("RETRY", true),
            TaskEnd::Failed(_) => ("FAILURE", true),
            TaskEnd::Rejected => ("REJECTED", matches!(self, Handled::HandedBack(_))),
        };
        Ended { state, error, outcome: self.label() }
    }
}

impl From<Result<Handled, BrokerError>> for Handled {
    /// A task that could not make its effect durable hands its message back.
    fn from(result: Result<Handled, BrokerError>) -> Handled {
        result.unwrap_or_else(Handled::HandedBack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broker_failure_hands_back_and_only_shutdown_leaves_unacked() {
        let back = Handled::HandedBack(BrokerError::Nacked("q".into()));
        assert_eq!(back.settlement(), Settlement::Requeue);
        assert_eq!(back.event(), TaskEnd::Rejected);
        assert_eq!(Handled::Interrupted.settlement(), Settlement::Leave);
        for acked in [Handled::Polled(State::Poll), Handled::Stale, Handled::SetAside, Handled::DeadLettered] {
            assert_eq!(acked.settlement(), Settlement::Ack, "{acked:?}");
        }
    }

    #[test]
    fn a_fail_is_a_failure_not_a_success() {
        assert_eq!(Handled::SetAside.event(), TaskEnd::Rejected);
        assert_eq!(Handled::Failed.event(), TaskEnd::Failed("failed"));
        assert_eq!(Handled::Polled(State::Fail).event(), TaskEnd::Succeeded);
        assert_eq!(Handled::Retried.event(), TaskEnd::Retried);
        assert_eq!(Handled::FailPending.event(), TaskEnd::Retried);
    }

    #[test]
    fn every_outcome_has_its_label_listed_once() {
        let every = [
            Handled::Polled(State::Empty),
            Handled::Polled(State::Poll),
            Handled::Polled(State::Callback),
            Handled::Polled(State::Success),
            Handled::Polled(State::Fail),
            Handled::Stale,
            Handled::NextPollRepublished,
            Handled::AlreadyFinal,
            Handled::NoSuchSchedule,
            Handled::NotInCallback,
            Handled::LockBusy,
            Handled::Retried,
            Handled::GaveUp,
            Handled::Failed,
            Handled::FailPending,
            Handled::Fatal,
            Handled::SetAside,
            Handled::Parked,
            Handled::Deleted,
            Handled::Expired,
            Handled::MovedToDelay,
            Handled::DeadLettered,
            Handled::Recounted,
            Handled::HostDied,
            Handled::HandedBack(BrokerError::Nacked("q".into())),
            Handled::Interrupted,
        ];
        let labels: Vec<&str> = every.iter().map(Handled::label).collect();
        assert_eq!(labels, Handled::LABELS);
        let distinct: std::collections::HashSet<_> = labels.iter().collect();
        assert_eq!(distinct.len(), labels.len());
    }

    #[test]
    fn labels_are_the_metric_values_operators_know() {
        assert_eq!(Handled::Polled(State::Poll).label(), "poll");
        assert_eq!(Handled::Polled(State::Success).label(), "success");
        assert_eq!(Handled::from(Err(BrokerError::Unroutable("q".into()))).label(), "handed back");
        assert_eq!(Handled::from(Ok(Handled::Stale)).label(), "stale");
    }
}
