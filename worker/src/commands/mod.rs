//! The subcommands of `celerity`: each takes its checked flags and returns
//! the text it prints or one line of why it failed. The binary parses the
//! command line and calls [`run`].

pub mod control;
pub mod hand_back;
pub mod migrate;
pub mod plugins;
pub mod status;
pub mod sweep;
pub mod worker;

use std::process::ExitCode;

use celerity_db::operator::Action;

use crate::config::flags::{Cli, Command, WorkerArgs};

/// Runs the command `cli` names; the exit status says how it went, and a
/// failure is one line on stderr.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fatal(&format!("cannot start the async runtime: {e}")),
    };
    let printed = match cli.command {
        Command::Worker(args) => worker::run(WorkerArgs { app: cli.app, ..*args }, &runtime, shutdown_signal()),
        Command::Migrate(args) => migrate::run(args),
        Command::Status(args) => status::run(args),
        Command::Sweep(args) => runtime.block_on(sweep::run(args)),
        Command::HandBack(args) => runtime.block_on(hand_back::run(args)),
        Command::Plugins(args) => runtime.block_on(plugins::run(args)),
        Command::Pause(args) => return controlled(runtime.block_on(control::run(Action::Pause, args))),
        Command::Resume(args) => return controlled(runtime.block_on(control::run(Action::Resume, args))),
        Command::Stop(args) => return controlled(runtime.block_on(control::run(Action::Stop, args))),
    };
    match printed {
        Ok(text) => {
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fatal(&e),
    }
}

/// A control's report, with its own exit status (3 when something was refused).
fn controlled(result: Result<(String, ExitCode), String>) -> ExitCode {
    match result {
        Ok((text, code)) => {
            println!("{}", text.trim_end());
            code
        }
        Err(e) => fatal(&e),
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
