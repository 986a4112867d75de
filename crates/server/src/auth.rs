//! API keys by role: who may call a route group, checked before anything else runs.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Read,
    Write,
    Admin,
}

pub(crate) fn api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Constant-time comparison so key checks leak no prefix timing.
fn key_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn authorize(state: &AppState, headers: &HeaderMap, role: Role) -> Result<(), ApiError> {
    let auth = &state.config.auth;
    if auth.read_keys.is_empty() && auth.write_keys.is_empty() && auth.admin_keys.is_empty() {
        return Ok(());
    }
    let Some(key) = api_key(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required (Authorization: Bearer <key> or X-API-Key)",
        )
        .field("authorization"));
    };
    let has = |keys: &[String]| keys.iter().any(|k| key_eq(k, key));
    let allowed = match role {
        Role::Read => has(&auth.read_keys) || has(&auth.write_keys) || has(&auth.admin_keys),
        Role::Write => has(&auth.write_keys) || has(&auth.admin_keys),
        Role::Admin => has(&auth.admin_keys),
    };
    if allowed {
        return Ok(());
    }
    let known = has(&auth.read_keys) || has(&auth.write_keys) || has(&auth.admin_keys);
    let (status, code, msg) = if known {
        (
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key may not call this route",
        )
    } else {
        (StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key")
    };
    Err(ApiError::new(status, code, msg).field("authorization"))
}

/// Middleware: the request goes on only with a key that may act as `role`.
pub(crate) async fn require(
    State((s, role)): State<(AppState, Role)>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    match authorize(&s, req.headers(), role) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
