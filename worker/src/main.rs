//! The `celerity` binary: parses the command line and runs the command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    celerity::commands::run(celerity::config::flags::Cli::parse())
}
