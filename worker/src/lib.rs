//! The Celerity worker library. A delivery enters in [`delivery`], is
//! decided by a task in [`tasks`] (running a plugin from [`plugins`]), and
//! leaves as database writes and confirmed messages through [`broker`];
//! [`control`] is what operators see of it, [`operator`] the controls they
//! have over schedules (pause, resume, stop), [`worker`] runs the loop, and
//! [`commands`] are the subcommands the binary runs.

pub mod broker;
pub mod commands;
pub mod config;
pub mod control;
pub mod delivery;
pub mod operator;
pub mod plugins;
pub mod tasks;
pub mod worker;
