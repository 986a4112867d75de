//! Per-key rate limits: a token bucket (governor's GCRA) per API key and route group, so one
//! client cannot take a group's whole capacity; past it, 429 with `Retry-After`.

use crate::auth::{Role, api_key};
use crate::config::RateLimitSection;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

/// The limiter of one route group; `None` when its rate is 0 (unlimited).
#[derive(Clone)]
pub(crate) struct Limit {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    group: &'static str,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit")
            .field("group", &self.group)
            .field("on", &self.limiter.is_some())
            .finish()
    }
}

/// Keys kept before idle ones are dropped (keys are configured, but without keys the client
/// address is the key, and addresses are many).
const MAX_KEYS: usize = 100_000;

impl Limit {
    pub(crate) fn new(c: &RateLimitSection, role: Role) -> Self {
        let (per_s, group) = match role {
            Role::Read => (c.read_per_s, "read"),
            Role::Write => (c.write_per_s, "write"),
            Role::Admin => (c.admin_per_s, "admin"),
        };
        let limiter = NonZeroU32::new(per_s).map(|rate| {
            let burst = NonZeroU32::new(((per_s as f64) * c.burst_s).ceil() as u32)
                .unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Self { limiter, group }
    }
}

/// Middleware (after auth): the request's key, or without one its client address, spends a
/// token of this group's bucket, or gets 429 with `Retry-After` (whole seconds, at least 1).
pub(crate) async fn limit(
    State(l): State<Limit>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let Some(limiter) = &l.limiter else {
        return next.run(req).await;
    };
    let key = match api_key(req.headers()) {
        Some(k) => format!("k:{k}"),
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "open".to_string(), |c| format!("a:{}", c.0.ip())),
    };
    if limiter.len() > MAX_KEYS {
        limiter.retain_recent();
    }
    match limiter.check_key(&key) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            metrics::counter!("cascade_rate_limited_total", "group" => l.group).increment(1);
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this key's {} rate is spent; retry in {} s",
                    l.group,
                    secs.max(1)
                ),
            )
            .field("authorization")
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            r
        }
    }
}
