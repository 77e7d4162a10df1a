//! Whose fault a database error is, which decides what a task does about it.

/// Whose fault a database error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The connection, the server or the cluster, for now: retry this
    /// schedule with backoff, then FAIL when the retries run out.
    Transient,
    /// The worker's surroundings (credentials, grants, schema): no schedule
    /// can be served until an operator fixes it, and none is to blame.
    Environment,
    /// This schedule's own data: trying again cannot help, FAIL it now.
    ScheduleFatal,
}

impl ErrorClass {
    /// `transient`, `environment` or `schedule`: stored in the retry
    /// bookkeeping and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Environment => "environment",
            ErrorClass::ScheduleFatal => "schedule",
        }
    }
}
