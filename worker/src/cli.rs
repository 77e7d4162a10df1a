//! The command line of `celerity` (SPEC §6). Every flag also reads an
//! environment variable `CELERITY_<FLAG>`.

use clap::{Parser, Subcommand};

/// Celerity: a Rust worker for Celery schedule tasks of the BlueKing plugin framework.
#[derive(Debug, Parser)]
#[command(name = "celerity", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands. `worker` and `migrate` arrive with the worker and db issues.
#[derive(Debug, Subcommand)]
pub enum Command {}
