//! Flotilla coordinator: one node of the Raft cluster that stores release state and,
//! on the leader, runs the release engine.

pub mod access;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod config;
pub mod daemon;
pub mod driver;
pub mod enrolment;
pub mod error;
pub mod fleet;
pub mod formation;
pub mod http;
pub mod leadership;
pub mod node;
pub mod notify;
pub mod plans;
pub mod prometheus;
pub mod raft;
pub mod server;
pub mod state;
pub mod stats;
pub mod steps;
pub mod store;

pub use config::{CoordinatorArgs, CoordinatorCommand, CoordinatorConfig, SnapshotCommand};
/// The release engine (its own crate, `flotilla-engine`, so that it stays pure).
pub use flotilla_engine as engine;
/// A plan as the API shows it (`flotilla.v1.Plan`); `flotilla plan` prints the same.
pub use server::plan_view;
