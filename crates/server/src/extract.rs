//! Request extraction and checks that answer bad input with a 4xx naming the field: JSON
//! bodies (bounded, parsed off the runtime when large) and batch sizes.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// Like `axum::Json`, but bounded by `server.max_body_bytes` (413) and with errors that name
/// the JSON path of the offending field (`events[2].type`).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(axum::http::header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !(ct.starts_with("application/json") || ct.contains("+json")) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("expected application/json, got `{ct}`"),
                )
                .field("content-type"));
            }
        }
        let limit = state.config.server.max_body_bytes;
        let body: Body = req.into_body();
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {limit} bytes"),
            )
            .field("body")
        })?;
        // Large bodies are parsed on the CPU pool, not on the async runtime.
        if bytes.len() > 64 * 1024 {
            let pool = state.engine.env.pool.clone();
            pool.run(move || parse::<T>(&bytes))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "parsing a request body failed");
                    ApiError::internal("internal error")
                })?
                .map(JsonBody)
        } else {
            parse::<T>(&bytes).map(JsonBody)
        }
    }
}

/// A batch (`list` names it) must hold 1..=`server.max_batch` entries: 400 when empty, 413
/// past the limit.
pub fn check_batch<T>(state: &AppState, list: &str, v: &[T]) -> Result<(), ApiError> {
    let max = state.config.server.max_batch;
    if v.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_value",
            list,
            "batch is empty",
        ));
    }
    if v.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{} entries; at most {max} per request", v.len()),
        )
        .field(list));
    }
    Ok(())
}

/// A bad query string as a 400 naming the parameter. axum reports the serde path first
/// (`n: invalid digit found in string`) or names an unknown parameter.
pub fn query_error(e: axum::extract::rejection::QueryRejection) -> ApiError {
    let msg = e.body_text();
    let rest = msg
        .split_once("query string: ")
        .map_or(msg.as_str(), |(_, r)| r);
    let ident =
        |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let named = rest
        .strip_prefix("unknown field `")
        .or_else(|| rest.strip_prefix("missing field `"));
    let field = match named {
        Some(r) => r.split('`').next().filter(ident),
        None => rest.split_once(": ").map(|(p, _)| p).filter(ident),
    };
    let code = if rest.starts_with("unknown field") {
        "unknown_field"
    } else if rest.starts_with("missing field") {
        "missing_field"
    } else {
        "invalid_value"
    };
    ApiError::bad_request(code, field.unwrap_or("query"), rest)
}

/// Parses `bytes`, turning serde errors into field-named 400s.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "malformed_json",
            "body",
            "request body is empty",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("malformed_json", "body", format!("malformed JSON: {inner}"))
            }
            Category::Data => {
                let msg = inner.to_string();
                let field = field_of(&path, &msg);
                let code = if msg.starts_with("missing field") {
                    "missing_field"
                } else if msg.starts_with("unknown field") {
                    "unknown_field"
                } else if msg.starts_with("unknown variant") {
                    "invalid_value"
                } else {
                    "invalid_type"
                };
                ApiError::bad_request(code, field, strip_position(&msg))
            }
        }
    })
}

/// Completes the path with the field a "missing"/"unknown field" message names.
fn field_of(path: &str, msg: &str) -> String {
    let path = if path == "." { "" } else { path };
    for prefix in ["missing field `", "unknown field `"] {
        if let Some(rest) = msg.strip_prefix(prefix)
            && let Some(name) = rest.split('`').next()
        {
            if path.ends_with(name) {
                return path.to_string();
            }
            return if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
        }
    }
    if path.is_empty() {
        "body".into()
    } else {
        path.to_string()
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(p) => msg[..p].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Batch {
        events: Vec<cascade_core::EventIn>,
    }

    fn err(json: &str) -> ApiError {
        match parse::<Batch>(json.as_bytes()) {
            Ok(_) => panic!("{json} should fail"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_name_the_path() {
        let e = err(
            r#"{"events":[{"type":"click","user_id":"u","item_id":"i"},{"type":"poke","user_id":"u"}]}"#,
        );
        assert_eq!(e.field.as_deref(), Some("events[1].type"));
        assert_eq!(e.index, Some(1));
        assert_eq!(e.code, "invalid_value");
        let e = err(r#"{"events":[{"type":"click","item_id":"i"}]}"#);
        assert_eq!(e.field.as_deref(), Some("events[0].user_id"));
        assert_eq!(e.code, "missing_field");
        let e = err(r#"{"events":[{"type":"click","user_id":5,"item_id":"i"}]}"#);
        assert_eq!(e.field.as_deref(), Some("events[0].user_id"));
        assert_eq!(e.code, "invalid_type");
        let e = err(r#"{"events":[{"type":"click","user_id":"u","item_id":"i","colour":1}]}"#);
        assert_eq!(e.field.as_deref(), Some("events[0].colour"));
        let e = err(r#"{"events":[ {"type": "#);
        assert_eq!(e.code, "malformed_json");
        let e = err(r#"{}"#);
        assert_eq!(e.field.as_deref(), Some("events"));
    }
}
