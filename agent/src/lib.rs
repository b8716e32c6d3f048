//! Flotilla agent: one per host; dials out to the coordinators, then fetches, verifies,
//! installs, starts, supervises and health-checks services.
//!
//! The local deploy engine is complete and testable without a coordinator:
//! - [`executor`]: runs [`step::Step`]s at most once per `command_id`, reverting
//!   locally on failure and resolving steps interrupted by an agent crash;
//! - [`journal`]: the on-disk step journal and the highest term seen;
//! - [`history`]: the host's execution history (`journal/history.jsonl`), appended as
//!   steps start, finish or are refused, and its reader;
//! - [`artifact`]: fetch, sha256 verification and safe unpacking;
//! - [`driver`]: the driver trait and the `process` driver (supervision, re-adoption);
//! - [`health`]: http/tcp/exec checks, `healthy_for`, bake;
//! - [`layout`]: the data directory.
//!
//! The network side:
//! - [`session`]: the `AgentLink` session with the coordinators (register, heartbeat,
//!   steps in, progress and results out until acknowledged, cancel, leader hints,
//!   reconnects with backoff);
//! - [`convert`]: the plain types of [`step`] to and from `flotilla_proto::v1`;
//! - [`identity`]: enrolment with a join token, the certificate in the data directory,
//!   and its renewal.

pub mod artifact;
pub mod config;
pub mod convert;
pub mod driver;
pub mod executor;
pub mod health;
pub mod history;
pub mod identity;
pub mod journal;
pub mod layout;
pub mod session;
pub mod step;

pub use config::{AgentArgs, AgentConfig};
pub use executor::{Executor, ExecutorConfig, StepHandle};
