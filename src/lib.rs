//! The `shlyuz` binary's library: configuration of the whole system, its targets, and the
//! commands that run them (`up`, `serve`, `migrate`, `seed`, `demo`, `bench`).

pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod system;
pub mod target;
pub mod targets;
pub mod up;
