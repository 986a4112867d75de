//! `/dashboard`: the operator's console, one page compiled into the binary (HTML, CSS and
//! plain JavaScript, no library, no CDN). The page itself is open; every figure it shows comes
//! from the admin API with the key the operator typed into its login, kept in the browser
//! tab's session storage and sent as `Authorization: Bearer`, never in a URL.

use crate::state::AppState;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../../assets/dashboard/app.css");

/// The page and its two assets.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/dashboard",
            get(|| asset("text/html; charset=utf-8", INDEX)),
        )
        .route(
            "/dashboard/",
            get(|| asset("text/html; charset=utf-8", INDEX)),
        )
        .route(
            "/dashboard/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/dashboard/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads only what the binary serves.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
            ),
        ],
        body,
    )
}

/// Bytes of the page and its assets, as served (reported in `docs/benchmarks.md`).
pub fn asset_bytes() -> [(&'static str, usize); 3] {
    [
        ("index.html", INDEX.len()),
        ("app.js", APP_JS.len()),
        ("app.css", APP_CSS.len()),
    ]
}
