//! The `celerity` binary: parses the command line and runs the command.

use std::process::ExitCode;

/// jemalloc: with glibc's allocator the worker's RSS crept up by about
/// 7 bytes per poll with its live heap flat (fragmentation); with jemalloc it
/// stays flat (BENCHMARKS.md, "Memory over a million polls").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = celerity::config::flags::Cli::parse_from_argv(std::env::args_os()).unwrap_or_else(|e| e.exit());
    celerity::commands::run(cli)
}
