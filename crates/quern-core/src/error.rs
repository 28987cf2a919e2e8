//! The one error quern-core produces: a submission or argument that breaks a
//! rule. It names the field so that clients can point at it.

use thiserror::Error;

/// A rule broken by a client's input. The API renders it as a 400 with the
/// code `invalid_request` and `details.field`, or for JSON nested too deep
/// as a 422 `json_too_deep`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, as the client spelled it (`name`, `retry.max_ms`).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
    /// Which kind of rule.
    pub rule: Rule,
}

/// The kinds of rule a [`ValidationError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rule {
    /// A value out of its range, of the wrong form, or too long.
    #[default]
    Broken,
    /// JSON that nests arrays and objects deeper than the limit.
    TooDeep,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into(), rule: Rule::Broken }
    }

    /// JSON in `field` nested deeper than `max` levels.
    pub fn too_deep(field: impl Into<String>, max: usize) -> Self {
        Self {
            field: field.into(),
            message: format!("nests arrays and objects deeper than {max} levels"),
            rule: Rule::TooDeep,
        }
    }

    /// The same error for `field`.
    #[must_use]
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}

/// The result of a validation.
pub type ValidationResult<T> = Result<T, ValidationError>;
