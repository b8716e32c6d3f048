//! Flotilla coordinator: one node of the Raft cluster that stores release state and,
//! on the leader, runs the release engine (DESIGN §2, §7, §8).
//!
//! For now the crate holds the daemon's configuration ([`config`]); serving is built
//! on top of it.

pub mod config;

pub use config::{CoordinatorArgs, CoordinatorConfig};
