//! The plugins Celerity ships.

pub mod example;
