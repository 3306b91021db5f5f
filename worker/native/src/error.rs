//! The crate's one error type. Each kind maps to one Python exception class; messages are
//! one line of plain words (no Rust type names, no source paths).

use std::fmt;

/// What went wrong, in the terms the Python side translates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Bad options or input (a key, an address, a ticket): fix the call.
    Config(String),
    /// The peer could not be reached or refused the handshake.
    ConnectFailed(String),
    /// The connection (or the endpoint) is gone.
    ConnectionLost(String),
    /// One stream was reset or stopped by the peer, or aborted locally.
    StreamReset(String),
    /// A local socket failed.
    Io(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn message(&self) -> &str {
        match self {
            Error::Config(m)
            | Error::ConnectFailed(m)
            | Error::ConnectionLost(m)
            | Error::StreamReset(m)
            | Error::Io(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

/// One line from an error and its sources: `outer: inner: innermost`, repeats dropped.
///
/// Only `Display` is used; iroh's `Debug` output carries source locations.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string().replace(['\n', '\r'], " ");
        let text = text.trim().to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        "unknown error".to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot connect")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("timed\nout")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    #[test]
    fn describe_is_one_line_with_sources() {
        assert_eq!(describe(&Outer(Inner)), "cannot connect: timed out");
    }
}
