//! The one error the client returns, and how a server's error answer becomes
//! one.
//!
//! Invariant: every failure of a call lands in exactly one kind — the server
//! answered with an error ([`Error::Api`]), the server could not be reached or
//! the exchange broke off ([`Error::Transport`]), or the server answered 2xx
//! with a body this client cannot read ([`Error::Decode`]).

use serde::Deserialize;
use thiserror::Error;

/// What went wrong with a call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The server answered with a non-2xx status and (usually) the API's error
    /// body `{"error": {"code", "message", "details"}}`.
    #[error("{code}: {message}")]
    Api {
        /// The HTTP status code.
        status: u16,
        /// The machine-readable code (`not_found`, `invalid_request`, …), or
        /// `http_<status>` when the body was not the API's error shape.
        code: String,
        /// What and why, for a person.
        message: String,
    },
    /// The server could not be reached, or the exchange failed midway
    /// (refused connection, DNS failure, timeout, bad URL).
    #[error("{0}")]
    Transport(String),
    /// The server answered 2xx, but not with what the API promises.
    #[error("{0}")]
    Decode(String),
}

impl Error {
    /// A short machine-readable code: the API's `code` for [`Error::Api`],
    /// `transport` or `decode` for the others.
    pub fn code(&self) -> &str {
        match self {
            Error::Api { code, .. } => code,
            Error::Transport(_) => "transport",
            Error::Decode(_) => "decode",
        }
    }

    /// The message, for a person.
    pub fn message(&self) -> &str {
        match self {
            Error::Api { message, .. } => message,
            Error::Transport(message) | Error::Decode(message) => message,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Transport(_) | Error::Decode(_) => None,
        }
    }

    /// Builds the error for a non-2xx answer with `status` and `body`.
    ///
    /// A body that is not the API's error shape (a proxy's HTML page, a plain
    /// text 404 from an unknown route) still gives an [`Error::Api`], with the
    /// code `http_<status>` and the start of the body as its message.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            error: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            code: String,
            #[serde(default)]
            message: String,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { error }) => Error::Api { status, code: error.code, message: error.message },
            Err(_) => {
                const MAX: usize = 300;
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("the server answered HTTP {status} with no body")
                } else if text.chars().count() > MAX {
                    format!("{}…", text.chars().take(MAX).collect::<String>())
                } else {
                    text.to_owned()
                };
                Error::Api { status, code: format!("http_{status}"), message }
            }
        }
    }

    /// Builds the error for a request that did not get an answer.
    pub(crate) fn transport(url: &str, err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            return Error::Transport(format!("{url}: the server did not answer in time"));
        }
        if err.is_builder() {
            return Error::Transport(format!("{url}: not a usable server URL ({})", chain(err)));
        }
        Error::Transport(format!("cannot reach the server: {}", chain(err)))
    }
}

/// An error and its sources, joined with `: `, so that the root cause
/// ("Connection refused") is shown and not only the outermost context.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The result of a client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_error_body_is_read() {
        let body = br#"{"error":{"code":"not_found","message":"no task 42","details":{}}}"#;
        let err = Error::from_answer(404, body);
        assert_eq!(err, Error::Api { status: 404, code: "not_found".into(), message: "no task 42".into() });
        assert_eq!(err.to_string(), "not_found: no task 42");
        assert_eq!((err.code(), err.message(), err.status()), ("not_found", "no task 42", Some(404)));
    }

    #[test]
    fn other_bodies_become_http_codes() {
        let err = Error::from_answer(502, b"<html>Bad Gateway</html>");
        assert_eq!(err.code(), "http_502");
        assert_eq!(err.message(), "<html>Bad Gateway</html>");
        let err = Error::from_answer(404, b"");
        assert_eq!(err.message(), "the server answered HTTP 404 with no body");
        let long = "x".repeat(1_000);
        let err = Error::from_answer(500, long.as_bytes());
        assert_eq!(err.message().chars().count(), 301);
    }

    #[test]
    fn transport_and_decode_have_fixed_codes() {
        assert_eq!(Error::Transport("down".into()).code(), "transport");
        assert_eq!(Error::Decode("junk".into()).code(), "decode");
        assert_eq!(Error::Decode("junk".into()).status(), None);
    }
}
