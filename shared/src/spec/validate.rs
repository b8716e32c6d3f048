//! Turns the raw TOML tables into a validated [`ReleaseSpec`].
use super::{Diagnostic, ReleaseSpec, SourceFile, Span, SpecErrors};

pub(crate) fn parse(source: &SourceFile) -> Result<ReleaseSpec, SpecErrors> {
    Err(source.locate_all([Diagnostic::new(Span::default(), "spec parsing is being written")]))
}
