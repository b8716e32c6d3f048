//! Source text, byte spans, and diagnostics located at file:line:column.

use std::fmt;

/// A byte range in a spec file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span over `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
}

impl From<std::ops::Range<usize>> for Span {
    fn from(r: std::ops::Range<usize>) -> Self {
        Self::new(r.start, r.end)
    }
}

/// A problem found in a spec, not yet tied to a file: what is wrong, where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, in one sentence without a trailing period.
    pub message: String,
    /// The text the problem is about.
    pub span: Span,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic without help text.
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Self { message: message.into(), span, help: None }
    }

    /// Adds the fix to the diagnostic.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A spec file's name and text, able to turn byte offsets into lines and columns.
#[derive(Debug, Clone)]
pub struct SourceFile {
    name: String,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Wraps a file's text; `name` is how errors refer to it (usually its path).
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { name: name.into(), text, line_starts }
    }

    /// The file's name as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self.text[start..floor_char_boundary(&self.text, offset)].chars().count() + 1;
        (line + 1, col)
    }

    /// The text of a 1-based line, without its line break.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self.line_starts.get(line).copied().unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// Places a diagnostic in this file.
    pub fn locate(&self, diag: Diagnostic) -> SpecError {
        let (line, column) = self.line_col(diag.span.start);
        let source_line = self.line_text(line).to_owned();
        // Underline the span, clipped to its first line, at least one character wide.
        let span_text = &self.text[floor_char_boundary(&self.text, diag.span.start)
            ..floor_char_boundary(&self.text, diag.span.end.max(diag.span.start))];
        let width = span_text.lines().next().map_or(0, |l| l.chars().count()).max(1);
        SpecError { file: self.name.clone(), line, column, message: diag.message, help: diag.help, source_line, width }
    }

    /// Places several diagnostics in this file, in the order of their positions.
    pub fn locate_all(&self, diags: impl IntoIterator<Item = Diagnostic>) -> SpecErrors {
        let mut errors: Vec<SpecError> = diags.into_iter().map(|d| self.locate(d)).collect();
        errors.sort_by_key(|e| (e.line, e.column));
        SpecErrors(errors)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A problem in a spec file, with its place: what the CLI prints and the API returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file, as named when it was read.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// The text of the offending line.
    pub source_line: String,
    /// How many characters to underline from `column`.
    pub width: usize,
}

impl fmt::Display for SpecError {
    /// Renders the error the way compilers do:
    ///
    /// ```text
    /// error: unknown key `canry` in [defaults]
    ///   --> release.toml:4:1
    ///    |
    ///  4 | canry = 1
    ///    | ^^^^^
    ///    = help: did you mean `canary`?
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        writeln!(f, "error: {}", self.message)?;
        writeln!(f, "{pad}--> {}:{}:{}", self.file, self.line, self.column)?;
        writeln!(f, "{pad} |")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        let lead: String =
            self.source_line.chars().take(self.column - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        write!(f, "{pad} | {lead}{}", "^".repeat(self.width))?;
        if let Some(help) = &self.help {
            write!(f, "\n{pad} = help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Every problem found in one spec file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// The first error (there is always at least one).
    pub fn first(&self) -> &SpecError {
        &self.0[0]
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n\n{} errors in {}", self.0.len(), self.0[0].file)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_lines_and_columns() {
        let src = SourceFile::new("a.toml", "x = 1\ny = \"é\"\nz = 3");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        assert_eq!(src.line_col(10), (2, 5));
        assert_eq!(src.line_col(13), (2, 7));
        assert_eq!(src.line_col(15), (3, 1));
        assert_eq!(src.line_text(2), "y = \"é\"");
    }

    #[test]
    fn rendered_error_points_at_the_span() {
        let src = SourceFile::new("r.toml", "release = \"x\"\ncanry = 1\n");
        let err =
            src.locate(Diagnostic::new(Span::new(14, 19), "unknown key `canry`").with_help("did you mean `canary`?"));
        assert_eq!((err.line, err.column, err.width), (2, 1, 5));
        let text = err.to_string();
        assert!(text.contains("--> r.toml:2:1"), "{text}");
        assert!(text.contains("2 | canry = 1\n  | ^^^^^"), "{text}");
        assert!(text.ends_with("= help: did you mean `canary`?"), "{text}");
    }
}
