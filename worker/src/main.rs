//! The `celerity` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use celerity::cli::{Cli, Command};
use clap::Parser;

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
