//! The `celerity` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = celerity::cli::Cli::parse();
    match cli.command {
        None => {
            // No subcommand yet does anything but explain itself.
            let _ = <celerity::cli::Cli as clap::CommandFactory>::command().print_help();
            std::process::ExitCode::from(2)
        }
    }
}
