//! The Celerity worker library: the binary only parses its command line and
//! calls [`worker::run`].

pub mod amqp;
pub mod broker;
pub mod cli;
pub mod config;
pub mod context;
pub mod dead_letter;
mod dispatch;
pub mod events;
pub mod http;
pub mod http_callback;
pub mod inflight;
pub mod meters;
pub mod pidbox;
pub mod plugin;
pub mod plugins;
pub mod poison;
pub mod poll;
pub mod pyjson;
pub mod retry;
pub mod settle;
pub mod status;
pub mod sweep;
pub mod tasks;
pub mod telemetry;
pub mod worker;
