//! The Celerity worker library. A delivery enters in [`delivery`], is
//! decided by a task in [`tasks`] (running a plugin from [`plugins`]), and
//! leaves as database writes and confirmed messages through [`broker`];
//! [`control`] is what operators see of it, [`operator`] the controls they
//! have over schedules (pause, resume, stop), [`worker`] runs the loop, and
//! [`commands`] are the subcommands the binary runs. [`meters`], the
//! metric names and recorder, is a leaf every folder may use.

pub mod broker;
pub mod commands;
pub mod config;
pub mod control;
pub mod delivery;
pub mod meters;
pub mod operator;
pub mod plugins;
pub mod tasks;
pub mod telemetry;
pub mod worker;
