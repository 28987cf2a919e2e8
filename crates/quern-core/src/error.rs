//! The one error quern-core produces: a submission or argument that breaks a
//! rule. It names the field so that clients can point at it.

use thiserror::Error;

/// A rule broken by a client's input. The API renders it as a 400 with the
/// code `invalid_request` and `details.field`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, as the client spelled it (`name`, `retry.max_ms`).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The result of a validation.
pub type ValidationResult<T> = Result<T, ValidationError>;
