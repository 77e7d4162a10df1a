//! Where a delivery enters and how it ends. A [`Handler`] holds what the
//! deliveries of one consumer session share; each delivery becomes an
//! [`Incoming`], whose methods are the stages: poison check, decode, route,
//! wait for the eta, run ([`incoming`]), and settle ([`settle`]), the one
//! place a delivery is acked or handed back.

pub mod dead_letter;
pub mod decoding;
pub mod handler;
pub mod incoming;
pub mod job;
pub mod poison;
pub mod settle;
pub mod tracking;

#[cfg(test)]
mod tests;

pub use self::handler::Handler;
pub use self::incoming::Incoming;
pub use self::settle::Settle;
