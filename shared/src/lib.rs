//! Flotilla's domain model, release spec and dependency-aware planner.
//!
//! This crate is pure: it does no I/O, reads no clock and spawns no tasks, so the
//! coordinator's engine, the CLI and tests can all call it freely. (One exception to
//! "single-threaded": an analysis judgement of very many samples spreads its metrics
//! over scoped threads joined before it returns; its result does not depend on them.)

/// Canary analysis: Mann-Whitney comparison of canary and baseline metrics, and the verdict.
pub mod analysis;
pub mod fixtures;
pub mod history;
pub mod inventory;
pub mod model;
pub mod plan;
pub mod spec;
pub mod transport;
pub mod window;

pub use inventory::Fleet;
pub use model::{DepKind, HostCount, HostId, LabelSelector, Labels, OnFailure, RollbackScope, ServiceName};
pub use spec::{ReleaseSpec, SourceFile, SpecError, SpecErrors};
