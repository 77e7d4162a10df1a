//! Celery's worker flags, where they mean the same thing in Celerity, so a
//! plugin app's `schedule` process changes by one word:
//!
//! ```text
//! celery   -A blueapps.core.celery worker -P threads -n schedule_worker@%h -c 500 -Q plugin_schedule,plugin_callback,schedule_delete -l INFO
//! celerity -A blueapps.core.celery worker -P threads -n schedule_worker@%h -c 500 -Q plugin_schedule,plugin_callback,schedule_delete -l INFO
//! ```
//!
//! `-c`, `-Q`, `-n` and `-l` are Celerity's own flags under Celery's short
//! names; `-A` and `-P` are accepted and logged as having no effect (there is
//! no Celery app to load, and polls always run on async tasks); every other
//! Celery flag stops start-up naming it, rather than being silently dropped.

use tracing::level_filters::LevelFilter;

use super::DEFAULT_QUEUES;

/// `-n/--hostname` as Celery expands it: no `@` means a host name under the
/// default node name; `%h` is the host name, `%n` its first label, `%d` the
/// rest (the domain), `%%` a percent sign. Any other `%x` is an error, as in
/// Celery.
pub fn expand_hostname(pattern: &str, host: &str) -> Result<String, String> {
    let node = if pattern.contains('@') { pattern.to_owned() } else { format!("celerity@{pattern}") };
    let (name, domain) = host.split_once('.').unwrap_or((host, ""));
    let mut out = String::with_capacity(node.len() + host.len());
    let mut chars = node.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('n') => out.push_str(name),
            Some('d') => out.push_str(domain),
            Some('%') => out.push('%'),
            Some(other) => return Err(format!("--hostname {pattern:?}: %{other} is not one of %h, %n, %d")),
            None => return Err(format!("--hostname {pattern:?} ends in a lone %")),
        }
    }
    Ok(out)
}

/// `-l/--loglevel`: Celery's (Python's) level names in any case, or their
/// numbers. CRITICAL and FATAL log as errors: Celerity has no level above.
pub fn parse_loglevel(level: &str) -> Result<LevelFilter, String> {
    Ok(match level.trim().to_ascii_uppercase().as_str() {
        "DEBUG" | "10" => LevelFilter::DEBUG,
        "INFO" | "20" => LevelFilter::INFO,
        "WARNING" | "WARN" | "30" => LevelFilter::WARN,
        "ERROR" | "40" | "CRITICAL" | "FATAL" | "50" => LevelFilter::ERROR,
        _ => {
            return Err(format!("--loglevel {level:?} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)"));
        }
    })
}

/// `-Q/--queues`: a subset of the framework's three queues; anything else
/// would be declared and consumed as if it carried the framework's tasks.
pub fn check_queues(queues: &[String]) -> Result<(), String> {
    for queue in queues {
        if queue.is_empty() {
            return Err("--queues has an empty queue name".into());
        }
        if !DEFAULT_QUEUES.contains(&queue.as_str()) {
            return Err(format!(
                "--queues: {queue:?} is not one of the framework's queues ({})",
                DEFAULT_QUEUES.join(", ")
            ));
        }
    }
    Ok(())
}

/// Why start-up stops on `flag` when it is a Celery flag Celerity does not
/// take, with what to use instead where there is something; `None` for any
/// other unknown flag (clap's own message says it).
pub fn refusal(flag: &str) -> Option<String> {
    let flag = flag.split_once('=').map_or(flag, |(name, _)| name);
    let instead = match flag {
        "-b" | "--broker" => "use --broker-url (or the runtime's BK_PLUGIN_RUNTIME_BROKER_URL)",
        "-E" | "--task-events" => "events are sent by default; --without-events turns them off",
        "--time-limit" | "--soft-time-limit" => "--plugin-timeout bounds one plugin step",
        "--max-tasks-per-child" => "--python-max-tasks replaces a plugin host after that many steps",
        "--max-memory-per-child" => "--python-max-memory replaces a plugin host past that many MiB",
        "-B" | "--beat" | "-s" | "--schedule-filename" | "--scheduler" => {
            "workers send the daily delete_expired_schedule themselves; no beat is needed"
        }
        "-f" | "--logfile" => "Celerity logs to standard error",
        "-D" | "--detach" | "--pidfile" | "--uid" | "--gid" | "--umask" | "--executable" | "--workdir" => {
            "run Celerity in the foreground under the process manager"
        }
        "-S"
        | "--statedb"
        | "-O"
        | "--prefetch-multiplier"
        | "--purge"
        | "--discard"
        | "-X"
        | "--exclude-queues"
        | "-I"
        | "--include"
        | "--without-gossip"
        | "--without-mingle"
        | "--without-heartbeat"
        | "--heartbeat-interval"
        | "--autoscale"
        | "--result-backend"
        | "--loader"
        | "--config"
        | "-C"
        | "--no-color"
        | "-q"
        | "--quiet"
        | "--skip-checks" => "it has no equivalent",
        _ => return None,
    };
    Some(format!(
        "{flag} is a Celery flag Celerity does not take: {instead} (README, \"Switching a plugin app on BlueKing PaaS\")"
    ))
}

/// The Celery flags accepted for compatibility that change nothing, as the
/// worker logs them at start-up.
pub fn no_effect(app: Option<&str>, pool: Option<&str>) -> Vec<String> {
    let mut said = Vec::new();
    if let Some(app) = app {
        said.push(format!("-A {app} has no effect: Celerity loads no Celery app (the plugins come from --python)"));
    }
    if let Some(pool) = pool {
        said.push(format!("-P {pool} has no effect: polls run on async tasks, --concurrency at once"));
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_expand_as_celery_expands_them() {
        let host = "plugin-7f9c.svc.cluster.local";
        assert_eq!(
            expand_hostname("schedule_worker@%h", host).unwrap(),
            "schedule_worker@plugin-7f9c.svc.cluster.local"
        );
        assert_eq!(expand_hostname("w@%n", host).unwrap(), "w@plugin-7f9c");
        assert_eq!(expand_hostname("w@%n.%d", host).unwrap(), "w@plugin-7f9c.svc.cluster.local");
        assert_eq!(expand_hostname("%n@%d", host).unwrap(), "plugin-7f9c@svc.cluster.local");
        assert_eq!(expand_hostname("w@%h", "bare").unwrap(), "w@bare", "a host name without a domain");
        assert_eq!(expand_hostname("w@%d", "bare").unwrap(), "w@");
        assert_eq!(expand_hostname("100%%@%n", host).unwrap(), "100%@plugin-7f9c");
        assert_eq!(
            expand_hostname("%h", host).unwrap(),
            "celerity@plugin-7f9c.svc.cluster.local",
            "no @: the default name"
        );
        assert_eq!(expand_hostname("name@fixed", host).unwrap(), "name@fixed");
        assert!(expand_hostname("w@%i", host).unwrap_err().contains("%i is not one of"));
        assert!(expand_hostname("w@%", host).unwrap_err().contains("lone %"));
    }

    #[test]
    fn log_levels_are_celerys_names_in_any_case() {
        assert_eq!(parse_loglevel("INFO"), Ok(LevelFilter::INFO));
        assert_eq!(parse_loglevel("info"), Ok(LevelFilter::INFO));
        assert_eq!(parse_loglevel("Warning"), Ok(LevelFilter::WARN));
        assert_eq!(parse_loglevel("warn"), Ok(LevelFilter::WARN));
        assert_eq!(parse_loglevel("debug"), Ok(LevelFilter::DEBUG));
        assert_eq!(parse_loglevel("CRITICAL"), Ok(LevelFilter::ERROR));
        assert_eq!(parse_loglevel("fatal"), Ok(LevelFilter::ERROR));
        assert_eq!(parse_loglevel("40"), Ok(LevelFilter::ERROR));
        assert!(parse_loglevel("verbose").unwrap_err().contains("is not one of DEBUG"));
    }

    #[test]
    fn only_the_frameworks_queues_are_consumed() {
        let queues = |q: &[&str]| check_queues(&q.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(queues(&["plugin_schedule", "plugin_callback", "schedule_delete"]), Ok(()));
        assert_eq!(queues(&["plugin_callback"]), Ok(()));
        let unknown = queues(&["plugin_schedule", "celery"]).unwrap_err();
        assert!(unknown.contains("\"celery\" is not one of the framework's queues"), "{unknown}");
        assert_eq!(queues(&[""]).unwrap_err(), "--queues has an empty queue name");
    }

    #[test]
    fn celery_only_flags_are_named_with_what_to_do() {
        let beat = refusal("-B").unwrap();
        assert!(beat.starts_with("-B is a Celery flag Celerity does not take: workers send the daily"), "{beat}");
        assert!(refusal("--autoscale=10,3").unwrap().starts_with("--autoscale is a Celery flag"));
        assert!(refusal("--max-tasks-per-child").unwrap().contains("--python-max-tasks"));
        assert_eq!(refusal("--no-such-flag"), None);
        assert_eq!(refusal("--concurrency"), None, "Celerity's own flags are never refused here");
    }
}
