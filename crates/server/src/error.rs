//! The one mapping of errors to HTTP: every error a handler meets becomes an [`ApiError`]
//! (status, stable code, message, offending field) here and nowhere else.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cascade_core::FieldError;
use cascade_runtime::RuntimeError;
use cascade_storage::StorageError;
use serde::Serialize;

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::UnknownModel(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_model", e.to_string()).field("version")
            }
            RuntimeError::ModelRefused(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "model_refused",
                e.to_string(),
            )
            .field("version"),
            RuntimeError::Busy(_) => Self::new(StatusCode::CONFLICT, "busy", e.to_string()),
            RuntimeError::Bus(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "bus_unavailable",
                e.to_string(),
            ),
            RuntimeError::NoRollback(_) => {
                Self::new(StatusCode::NOT_FOUND, "no_rollback_target", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "server error while serving a request");
                Self::internal("server error")
            }
        }
    }
}

/// An error answered to a client: status, stable code, message and the offending field.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Position in a batch, when the error is about one element.
    pub index: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            index: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        let f = field.into();
        self.index = batch_index(&f);
        self.field = Some(f);
        self
    }

    pub fn bad_request(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message).field(field)
    }

    pub fn not_found(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message).field(field)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A validation error on element `i` of the batch named `list`.
    pub fn in_batch(list: &str, i: usize, e: FieldError) -> Self {
        let e = e.at(&format!("{list}[{i}]"));
        Self::bad_request(e.code, e.field, e.message)
    }
}

/// `events[3].type` → 3.
fn batch_index(field: &str) -> Option<usize> {
    let open = field.find('[')?;
    let close = field[open..].find(']')? + open;
    field[open + 1..close].parse().ok()
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::bad_request(e.code, e.field, e.message)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        // Server-side by classification; details go to the log, not to the client.
        tracing::error!(error = %e, "storage error while serving a request");
        match e {
            StorageError::Closed | StorageError::Busy => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage is not accepting writes",
            ),
            _ => Self::internal("storage error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
                field: self.field,
                index: self.index,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if retry {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_index_is_parsed_from_the_field() {
        assert_eq!(batch_index("events[3].type"), Some(3));
        assert_eq!(batch_index("user_id"), None);
        let e = ApiError::in_batch("items", 2, FieldError::new("invalid_value", "id", "empty"));
        assert_eq!(e.field.as_deref(), Some("items[2].id"));
        assert_eq!(e.index, Some(2));
    }
}
