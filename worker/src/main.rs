//! The `celerity` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use celerity::broker::{self, Publisher};
use celerity::cli::{BrokerFlags, Cli, Command, HandBackArgs, SweepArgs, check_database_url, parse_zone};
use celerity::config;
use celerity_db::{Db, DbConfig};
use clap::Parser;
use lapin::Connection;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}")),
    };
    match cli.command {
        Command::Worker(args) => {
            let config = match args.into_config() {
                Ok(c) => c,
                Err(e) => return fatal(&e),
            };
            celerity::telemetry::init(config.log_format);
            match runtime.block_on(celerity::worker::run(config, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fatal(&e.to_string()),
            }
        }
        Command::Status(args) => {
            if !args.database_url.starts_with("mysql://") {
                return fatal("--database-url must be a mysql:// URL");
            }
            let db = match celerity_db::Db::new(celerity_db::DbConfig::new(args.database_url)) {
                Ok(db) => db,
                Err(e) => return fatal(&e.to_string()),
            };
            let printed = match (&args.trace_id, args.json) {
                (Some(id), json) => db.blocking(|c| celerity::status::schedule(c, id)).map(|s| {
                    if json { serde_json::to_string_pretty(&s).expect("status serialises") } else { s.render() }
                }),
                (None, json) => db.blocking(celerity::status::summary).map(|s| {
                    if json { serde_json::to_string_pretty(&s).expect("summary serialises") } else { s.render() }
                }),
            };
            match printed {
                Ok(text) => {
                    println!("{}", text.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => fatal(&e.to_string()),
            }
        }
        Command::Sweep(args) => match runtime.block_on(sweep(args)) {
            Ok(text) => {
                println!("{}", text.trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => fatal(&e),
        },
        Command::HandBack(args) => match runtime.block_on(hand_back(args)) {
            Ok(moved) => {
                println!("{moved} next poll(s) moved to plugin_schedule; countdowns still waiting will arrive there");
                ExitCode::SUCCESS
            }
            Err(e) => fatal(&e),
        },
        Command::Migrate(args) => {
            if !args.database_url.starts_with("mysql://") {
                return fatal("--database-url must be a mysql:// URL");
            }
            let result = celerity_db::Db::new(celerity_db::DbConfig::new(args.database_url))
                .and_then(|db| db.blocking(celerity_db::migrate::run));
            match result {
                Ok(ran) if ran.is_empty() => {
                    println!("nothing to migrate");
                    ExitCode::SUCCESS
                }
                Ok(ran) => {
                    println!("ran migrations: {}", ran.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => fatal(&e.to_string()),
            }
        }
    }
}

/// `celerity sweep`: one round now, waiting for a worker's round to finish.
async fn sweep(args: SweepArgs) -> Result<String, String> {
    use celerity::sweep::{self, SweepOutcome};

    check_database_url(&args.database_url)?;
    let settings = args.sweep.settings()?;
    let db_config = DbConfig { time_zone: parse_zone(&args.db_time_zone)?, ..DbConfig::new(args.database_url) };
    let db = Db::new(db_config).map_err(|e| e.to_string())?;
    let found = if args.dry_run {
        sweep::stranded_now(&db, settings).await.map_err(|e| e.to_string())?
    } else {
        let (conn, publisher) = connect_publisher(&args.broker).await?;
        let sender = sweep::Sender {
            origin: format!("{}@{}", std::process::id(), gethostname::gethostname().to_string_lossy()),
            reply_to: uuid::Uuid::new_v4().to_string(),
        };
        let outcome = sweep::sweep_once(&db, &publisher, &sender, settings, std::time::Duration::from_secs(60)).await;
        let _ = conn.close(200, "sweep done".into()).await;
        match outcome.map_err(|e| e.to_string())? {
            SweepOutcome::Swept(done) => done,
            SweepOutcome::Busy => return Err("another sweeper held the lock for 60 s; try again".into()),
        }
    };
    let verb = if args.dry_run { "stranded" } else { "re-enqueued" };
    if args.json {
        let list: Vec<_> =
            found.iter().map(|s| serde_json::json!({"trace_id": s.trace_id, "invoke_count": s.invoke_count})).collect();
        return Ok(serde_json::json!({ verb: list }).to_string());
    }
    let mut text = format!("{} schedule(s) {verb}\n", found.len());
    for s in &found {
        text.push_str(&format!("{} invoke_count={}\n", s.trace_id, s.invoke_count));
    }
    Ok(text)
}

/// `celerity hand-back`: Celerity's next polls go back to the framework's queue.
async fn hand_back(args: HandBackArgs) -> Result<u64, String> {
    let (conn, publisher) = connect_publisher(&args.broker).await?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    let moved = broker::hand_back(&channel, &publisher).await.map_err(|e| e.to_string())?;
    let _ = conn.close(200, "hand-back done".into()).await;
    Ok(moved)
}

/// A connection to the broker the flags name, and a confirm-mode publisher on it.
async fn connect_publisher(flags: &BrokerFlags) -> Result<(Connection, Publisher), String> {
    let conn = broker::connect(&flags.addr()?, flags.broker_wait.0).await.map_err(|e| e.to_string())?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    let publisher = Publisher::new(channel, config::DEFAULT_ETA_WINDOW).await.map_err(|e| e.to_string())?;
    Ok((conn, publisher))
}

/// One clear line on stderr, exit status 1.
fn fatal(message: &str) -> ExitCode {
    eprintln!("celerity: {message}");
    ExitCode::FAILURE
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
