//! The Celerity worker library: the binary only parses its command line and
//! calls in here.

pub mod amqp;
pub mod cli;
pub mod plugin;
pub mod plugins;
pub mod poll;
pub mod pyjson;
