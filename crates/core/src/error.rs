//! Validation errors that name the offending field, and the core error enum.

use std::fmt;

/// A client input error pinned to a JSON path such as `events[3].type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Stable machine-readable code, e.g. `invalid_value`, `missing_field`.
    pub code: &'static str,
    /// JSON path of the offending field (`items[2].id`).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefix the path with the batch position, e.g. `id` → `items[3].id`.
    pub fn at(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Errors of the domain layer. All of them are the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
}

impl CoreError {
    pub fn is_client(&self) -> bool {
        true
    }
}
