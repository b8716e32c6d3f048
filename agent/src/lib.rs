//! Flotilla agent: one per host; dials out to the coordinators, then fetches, verifies,
//! installs, starts, supervises and health-checks services (DESIGN §2, §8, §9).
//!
//! For now the crate holds the daemon's configuration ([`config`]); the agent's work
//! is built on top of it.

pub mod config;

pub use config::{AgentArgs, AgentConfig};
