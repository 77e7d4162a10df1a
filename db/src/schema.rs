//! diesel's view of the tables (see `migrations/` for the DDL).

diesel::table! {
    /// The framework's schedule table, as its Django migrations create it.
    schedule_schedule (trace_id) {
        trace_id -> Varchar,
        plugin_version -> Varchar,
        state -> Integer,
        invoke_count -> Integer,
        data -> Longtext,
        created_at -> Datetime,
        finish_at -> Nullable<Datetime>,
        scheduling -> Bool,
        err -> Longtext,
    }
}

diesel::table! {
    /// Retry bookkeeping of schedules backing off after transient errors.
    celerity_schedule_retry (trace_id) {
        trace_id -> Varchar,
        retries -> Integer,
        first_failure_at -> Datetime,
        last_failure_at -> Datetime,
        next_retry_at -> Nullable<Datetime>,
        last_error_class -> Varchar,
        last_error -> Longtext,
    }
}

diesel::table! {
    /// The attempt log: one row per landed poll.
    celerity_attempt (trace_id, attempt) {
        trace_id -> Varchar,
        attempt -> Integer,
        started_at -> Datetime,
        ended_at -> Datetime,
        outcome -> Varchar,
        error -> Longtext,
        hostname -> Varchar,
        next_poll_at -> Nullable<Datetime>,
        task_id -> Nullable<Varchar>,
    }
}

diesel::table! {
    /// The sweeper's record of re-enqueued schedules.
    celerity_sweep (trace_id) {
        trace_id -> Varchar,
        invoke_count -> Integer,
        swept_at -> Datetime,
        sweeps -> Integer,
    }
}

diesel::table! {
    /// Schedules an operator holds paused.
    celerity_pause (trace_id) {
        trace_id -> Varchar,
        paused_at -> Datetime,
        paused_by -> Varchar,
        reason -> Longtext,
    }
}

diesel::table! {
    /// Messages parked for paused schedules.
    celerity_parked (trace_id, task_id) {
        trace_id -> Varchar,
        task_id -> Varchar,
        task -> Varchar,
        queue -> Varchar,
        eta -> Nullable<Datetime>,
        parked_at -> Datetime,
        released_at -> Nullable<Datetime>,
        message -> Longtext,
    }
}

diesel::table! {
    /// Operator actions that changed a schedule.
    celerity_action (id) {
        id -> Bigint,
        trace_id -> Varchar,
        action -> Varchar,
        actor -> Varchar,
        at -> Datetime,
        reason -> Longtext,
        from_status -> Varchar,
    }
}

diesel::table! {
    /// The callback task holding a schedule's `scheduling` lock.
    celerity_callback_lock (trace_id) {
        trace_id -> Varchar,
        task_id -> Varchar,
        callback_id -> Longtext,
        callback_data -> Longtext,
        taken_at -> Datetime,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    schedule_schedule,
    celerity_schedule_retry,
    celerity_attempt,
    celerity_sweep,
    celerity_pause,
    celerity_parked,
    celerity_action,
    celerity_callback_lock
);
