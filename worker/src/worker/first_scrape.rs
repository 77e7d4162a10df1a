//! Every metric family on the first scrape, before anything has happened
//! (Prometheus's "avoid missing metrics"): each task's counter of each
//! outcome, the error and retry counters of each class, the broker's
//! counters for each node and queue, the gauges and histograms at zero,
//! `celerity_build_info`, and the schedules by status, counted before the
//! endpoint serves (for at most a few seconds) and then every 30 s. The process metrics come with every render.

use std::time::Duration;

use celerity_db::status::{self, Counts};
use celerity_db::{Db, ErrorClass, Status};

use crate::broker::connect::{node_name, nodes};
use crate::broker::topology::parts;
use crate::config::WorkerConfig;
use crate::delivery::job::Job;
use crate::meters;
use crate::tasks::Handled;
use crate::tasks::stop::RetryCause;

/// Python host replacement causes (`celerity_python_host_restarts_total`).
const HOST_CAUSES: [&str; 5] = ["died", "timeout", "protocol", "max_tasks", "max_memory"];

/// Registers every family at zero and describes it.
pub fn register(config: &WorkerConfig) {
    meters::install();
    describe();
    metrics::gauge!(meters::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for task in Job::NAMES {
        for outcome in Handled::LABELS {
            metrics::counter!(meters::TASKS, "task" => task, "outcome" => outcome).absolute(0);
        }
        // Registered, not recorded: the buckets show at zero without a sample.
        let _ = metrics::histogram!(meters::POLL_SECONDS, "task" => task);
    }
    let _ = metrics::histogram!(meters::ETA_LATENESS);
    for cause in RetryCause::ALL {
        metrics::counter!(meters::RETRIES, "class" => cause.text().label).absolute(0);
    }
    for class in [ErrorClass::Transient, ErrorClass::Environment, ErrorClass::ScheduleFatal] {
        metrics::counter!(meters::DB_ERRORS, "class" => class.as_str(), "code" => "none").absolute(0);
    }
    for node in nodes(&config.broker_url) {
        metrics::counter!(meters::BROKER_CONNECTIONS, "node" => node_name(node)).absolute(0);
    }
    for queue in config.consumed_queues() {
        metrics::counter!(meters::CANCELLATIONS, "queue" => queue.clone()).absolute(0);
        metrics::gauge!(meters::CONSUMING, "queue" => queue.clone()).set(0.0);
        metrics::gauge!(meters::QUEUE_MESSAGES, "queue" => queue.clone(), "state" => "ready").set(0.0);
        metrics::gauge!(meters::QUEUE_CONSUMERS, "queue" => queue).set(0.0);
    }
    for part in parts(&config.declared_queues()) {
        metrics::counter!(meters::QUEUE_UNAVAILABLE, "queue" => part.name()).absolute(0);
    }
    metrics::counter!(meters::RECONNECTS).absolute(0);
    metrics::counter!(meters::DEAD_LETTERED).absolute(0);
    metrics::counter!(meters::SPANS_EXPORTED).absolute(0);
    for reason in meters::SPAN_DROP_REASONS {
        metrics::counter!(meters::SPANS_DROPPED, "reason" => reason).absolute(0);
    }
    for cause in HOST_CAUSES {
        metrics::counter!(meters::HOST_RESTARTS, "cause" => cause).absolute(0);
    }
    metrics::gauge!(meters::IN_FLIGHT).set(0.0);
    metrics::gauge!(meters::PAUSED).set(0.0);
    metrics::gauge!(meters::PYTHON_HOSTS).increment(0.0);
    for state in ["in_use", "idle"] {
        metrics::gauge!(meters::DB_POOL, "state" => state).set(0.0);
    }
}

/// The HELP line of each family.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(meters::BUILD_INFO, "Celerity's build, as labels; always 1.");
    describe_counter!(meters::TASKS, "Deliveries handled, by task and outcome.");
    describe_counter!(meters::RETRIES, "Retries published, by what failed.");
    describe_counter!(meters::DB_ERRORS, "Database errors seen by tasks, by class and MySQL code.");
    describe_counter!(meters::BROKER_CONNECTIONS, "Broker connections made, by node.");
    describe_counter!(meters::RECONNECTS, "Broker connections re-established after a loss.");
    describe_counter!(meters::CANCELLATIONS, "Consumers the broker cancelled, by queue.");
    describe_counter!(
        meters::QUEUE_UNAVAILABLE,
        "Queues and parts of the topology the broker could not serve (a node down, no quorum), once per outage."
    );
    describe_gauge!(meters::CONSUMING, "1 while the worker consumes the queue.");
    describe_gauge!(
        meters::QUEUE_MESSAGES,
        "Messages in a consumed queue, by state (ready, unacked), as the broker counts them."
    );
    describe_gauge!(
        meters::QUEUE_CONSUMERS,
        "Consumers of a consumed queue, every worker's, as the broker counts them."
    );
    describe_counter!(meters::DEAD_LETTERED, "Messages moved to the dead-letter queue.");
    describe_counter!(meters::SPANS_EXPORTED, "Spans sent to the OTLP collector.");
    describe_counter!(
        meters::SPANS_DROPPED,
        "Spans lost, by reason: the queue to the collector full, or an export refused or unanswered."
    );
    describe_counter!(meters::HOST_RESTARTS, "Python plugin hosts replaced, by cause.");
    describe_gauge!(meters::IN_FLIGHT, "Deliveries holding a concurrency slot now.");
    describe_gauge!(meters::PAUSED, "1 while the worker takes no deliveries because of an environment fault.");
    describe_gauge!(meters::PYTHON_HOSTS, "Python plugin hosts running now.");
    describe_gauge!(meters::DB_POOL, "Pooled database connections, by state.");
    describe_gauge!(
        meters::SCHEDULES,
        "Schedules by status, counted every 30 s; PAUSED and RETRYING apart from POLL and CALLBACK."
    );
    describe_histogram!(
        meters::POLL_SECONDS,
        metrics::Unit::Seconds,
        "From a delivery's slot to its settlement, by task."
    );
    describe_histogram!(meters::ETA_LATENESS, metrics::Unit::Seconds, "From a message's eta to its start.");
    describe_histogram!(meters::STEP_SECONDS, metrics::Unit::Seconds, "One plugin step, by version and outcome.");
}

/// Sets the schedules-by-status gauges from `counts`.
fn set_schedules(counts: &Counts) {
    for status in Status::ALL {
        metrics::gauge!(meters::SCHEDULES, "status" => status.name()).set(counts.of(status) as f64);
    }
}

/// Counts the schedules by status once; a count the database cannot give
/// leaves the last one.
pub async fn count_once(db: &Db) {
    match db.call(status::count).await {
        Ok(counts) => set_schedules(&counts),
        Err(e) => tracing::debug!(error = %e, "schedules not counted this time"),
    }
}

/// Counts the schedules by status every `every`, until the worker returns.
pub async fn count_schedules(db: Db, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        count_once(&db).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_worker_shows_every_family() {
        let config = WorkerConfig::new("amqp://a:1/%2f;amqp://b:2/%2f", "mysql://root@127.0.0.1:3306/x");
        register(&config);
        set_schedules(&Counts { by_status: Status::ALL.iter().map(|s| (*s, 2)).collect(), invalid: 0 });
        let text = meters::render();
        // Registered at zero: a series no other test of this process touches.
        assert!(text.contains(r#"celerity_python_host_restarts_total{cause="max_memory"} 0"#), "{text}");
        for family in [
            "celerity_build_info{version=",
            r#"celerity_tasks_total{task="callback",outcome="parked"}"#,
            r#"celerity_tasks_total{task="delete",outcome="deleted"}"#,
            r#"celerity_retries_total{class="plugin host"}"#,
            r#"celerity_db_errors_total{class="environment",code="none"}"#,
            r#"celerity_broker_connections_total{node="b:2"}"#,
            r#"celerity_consumer_cancellations_total{queue="plugin_callback"}"#,
            r#"celerity_queue_consuming{queue="celerity.schedule"}"#,
            r#"celerity_queue_messages{queue="plugin_schedule",state="ready"}"#,
            r#"celerity_queue_consumers{queue="plugin_callback"}"#,
            r#"celerity_queue_unavailable_total{queue="celerity.delay"}"#,
            r#"celerity_queue_unavailable_total{queue="plugin_schedule"}"#,
            "celerity_broker_reconnects_total",
            "celerity_dead_lettered_total",
            "celerity_trace_spans_exported_total",
            r#"celerity_trace_spans_dropped_total{reason="queue full"}"#,
            r#"celerity_trace_spans_dropped_total{reason="export failed"}"#,
            r#"celerity_python_host_restarts_total{cause="max_memory"}"#,
            "celerity_polls_in_flight",
            "celerity_consumption_paused",
            r#"celerity_db_pool_connections{state="idle"}"#,
            r#"celerity_schedules{status="PAUSED"} 2"#,
            r#"celerity_schedules{status="RETRYING"} 2"#,
            r#"celerity_poll_duration_seconds_count{task="schedule"}"#,
            "celerity_eta_lateness_seconds_count",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
            "# HELP celerity_tasks_total",
        ] {
            // Present, whatever other tests of this process recorded since
            // (under plain `cargo test` they share the recorder).
            assert!(text.lines().any(|line| line.starts_with(family)), "{family} is missing from\n{text}");
        }
    }
}
