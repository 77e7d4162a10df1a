//! `celerity pause | resume | stop`: the operator controls from the command
//! line, by trace ids or by a selector, as the OS user running it. Prints a
//! line per schedule (what changed, what did nothing, what was refused and
//! why) and the totals; exits 3 when anything was refused.

use std::process::ExitCode;

use celerity_db::operator::{Action, Selector};
use celerity_db::{DbConfig, Status};

use crate::config::flags::ControlArgs;
use crate::config::validate::{open_database, parse_zone};
use crate::operator::{Controls, actor, report};

/// The exit status when some schedule was refused (1 is a failure to run).
pub const REFUSED: u8 = 3;

/// Runs the control; the text to print and the exit status.
pub async fn run(action: Action, args: ControlArgs) -> Result<(String, ExitCode), String> {
    let reason = args.reason.clone().unwrap_or_default();
    if action == Action::Stop && reason.trim().is_empty() {
        return Err("stop needs --reason TEXT: it is written to the schedule's err".into());
    }
    let selector = selector(&args)?;
    if args.trace_ids.is_empty() && selector.is_empty() {
        return Err("name schedules by trace id, or select them with --version, --state or --older-than".into());
    }
    let db = open_database(DbConfig { time_zone: parse_zone(&args.db_time_zone)?, ..args.database.config()? })?;
    let controls = Controls::new(db.clone(), args.broker.addr()?, args.broker.broker_wait.0);
    let trace_ids = if args.trace_ids.is_empty() {
        let selector = Selector {
            created_before: selector.created_before.map(|age| db.now() - age),
            version: selector.version,
            status: selector.status,
        };
        controls.select(selector).await.map_err(|e| e.to_string())?
    } else {
        args.trace_ids.clone()
    };
    let (reports, failed) = match controls.act(action, &trace_ids, &actor::cli(), &reason).await {
        Ok(reports) => (reports, None),
        Err((reports, e)) => (reports, Some(e)),
    };
    let mut text = if args.json { report::render_json(&reports) } else { report::render(&reports) };
    if let Some(e) = failed {
        // What was done is printed before the error that stopped the run.
        print!("{text}");
        return Err(format!("stopped after {} of {} schedule(s): {e}", reports.len(), trace_ids.len()));
    }
    if trace_ids.is_empty() && !args.json {
        text = "no open schedule matched\n".into();
    }
    let refused = reports.iter().any(|r| r.refused());
    Ok((text, if refused { ExitCode::from(REFUSED) } else { ExitCode::SUCCESS }))
}

/// The selector the flags describe, with `--older-than` as an age (the
/// cutoff is taken from the database's clock once connected).
struct Wanted {
    version: Option<String>,
    status: Option<Status>,
    created_before: Option<chrono::Duration>,
}

impl Wanted {
    /// No selector flag given.
    fn is_empty(&self) -> bool {
        self.version.is_none() && self.status.is_none() && self.created_before.is_none()
    }
}

fn selector(args: &ControlArgs) -> Result<Wanted, String> {
    let status = match &args.state {
        None => None,
        Some(name) => match Status::parse(name) {
            Some(s @ (Status::Poll | Status::Callback | Status::Retrying | Status::Paused)) => Some(s),
            _ => {
                return Err(format!(
                    "--state {name}: only POLL, CALLBACK, RETRYING and PAUSED schedules can be acted on"
                ));
            }
        },
    };
    let created_before = match &args.older_than {
        None => None,
        Some(text) => {
            let age = humantime::parse_duration(text)
                .map_err(|e| format!("--older-than {text}: {e} (e.g. 90s, 30m, 2h, 1d)"))?;
            Some(chrono::Duration::from_std(age).map_err(|_| format!("--older-than {text} is too long"))?)
        }
    };
    Ok(Wanted { version: args.version.clone(), status, created_before })
}
