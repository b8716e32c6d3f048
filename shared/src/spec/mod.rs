//! The release spec: TOML in, validated [`ReleaseSpec`] out, or errors that
//! name the file, line and column and say what to do.

mod model;
mod raw;
mod source;
mod validate;

pub use model::*;
pub use source::{Diagnostic, SourceFile, Span, SpecError, SpecErrors};

/// Parses and validates a spec: TOML syntax, unknown or missing keys, value formats
/// (names, semver, ranges, durations, percentages, sha256, URLs, selectors) and
/// references inside the file (duplicate names, gates naming unknown services).
///
/// Checks that need the dependency graph (cycles) or the fleet (dependencies and
/// contracts outside the release, selectors matching no host) are the planner's:
/// see [`crate::plan::Plan::build`].
pub fn parse(source: &SourceFile) -> Result<ReleaseSpec, SpecErrors> {
    validate::parse(source)
}
