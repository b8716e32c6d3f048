//! Errors in one line for operators: an error with its causes, and an HTTP client's
//! failure reduced to what went wrong (timed out, could not connect and why).

use std::error::Error;

/// An error and its causes, `a: b: c`, leaving out a cause whose text is already there
/// (many errors repeat their source in their own message).
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The innermost cause of `err` (`err` itself when it has none).
pub fn innermost(err: &dyn Error) -> &dyn Error {
    let mut inner = err;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner
}

/// A failed HTTP request in one line, given what the client knows of it: `timed out`;
/// `connect: ` and the innermost cause (`Connection refused (os error 111)`, a TLS
/// refusal) when no connection was made; otherwise the error with its causes.
pub fn describe_request(err: &dyn Error, timed_out: bool, connecting: bool) -> String {
    if timed_out {
        "timed out".to_owned()
    } else if connecting {
        format!("connect: {}", innermost(err))
    } else {
        chain(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    fn e(text: &'static str, source: Option<E>) -> E {
        E { text, source: source.map(Box::new) }
    }

    #[test]
    fn causes_are_chained_once_and_the_innermost_found() {
        let err = e("request failed", Some(e("tcp connect error", Some(e("Connection refused", None)))));
        assert_eq!(chain(&err), "request failed: tcp connect error: Connection refused");
        let repeating = e("tcp connect error: Connection refused", Some(e("Connection refused", None)));
        assert_eq!(chain(&repeating), "tcp connect error: Connection refused");
        assert_eq!(innermost(&err).to_string(), "Connection refused");
        assert_eq!(describe_request(&err, false, true), "connect: Connection refused");
        assert_eq!(describe_request(&err, true, true), "timed out");
        assert_eq!(describe_request(&err, false, false), "request failed: tcp connect error: Connection refused");
    }
}
