//! Gorse's recommendations: `GET /api/recommend/{user}[/{category}]` runs `gorse.surface`'s
//! whole pipeline (sources, ranking cascade, policy, fallbacks); `POST /api/session/recommend`,
//! `GET /api/item/{id}/neighbors`, `GET /api/latest` and `GET /api/non-personalized/{name}`
//! answer from the co-visitation model and the live popular, trending and fresh lists.

use super::feedback::{FeedbackIn, to_events};
use super::{Params, Score, both, kind_of, records, unknown_type};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::{AppState, List};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cascade_core::time::now_millis;
use cascade_core::{Event, Idx, Millis, Mutation, Target};
use cascade_features::state::Inner;
use serde_json::Value;

pub(super) fn routes() -> Router<AppState> {
    let r = Router::new();
    let r = both(r, "/api/recommend/{user_id}", get(recommend));
    let r = both(r, "/api/recommend/{user_id}/{category}", get(recommend_in));
    let r = both(r, "/api/session/recommend", post(session));
    let r = both(r, "/api/item/{id}/neighbors", get(neighbors));
    let r = both(r, "/api/latest", get(latest));
    both(r, "/api/non-personalized/{name}", get(non_personalized))
}

/// Depth of a list without categories (offsets within it are served from it).
const MIN_DEPTH: usize = 50;

/// `n` and `offset`: Gorse computes `n + offset` and drops the first `offset`.
fn window(s: &AppState, p: &Params) -> Result<(usize, usize), ApiError> {
    let (n, offset) = (p.count("n", super::DEFAULT_N)?, p.count("offset", 0)?);
    let max = s.config.server.max_n;
    if n == 0 || n.saturating_add(offset) > max {
        return Err(ApiError::bad_request(
            "invalid_value",
            "n",
            format!("n must be positive and n + offset at most {max}"),
        ));
    }
    Ok((n, offset))
}

/// Whether item `i` is in every one of `cats` (category names; AND, as Gorse).
fn in_all(g: &Inner, i: Idx, cats: &[String]) -> bool {
    cats.is_empty()
        || g.item(i).is_some_and(|r| {
            cats.iter().all(|c| {
                g.categories
                    .get(c)
                    .is_some_and(|c| r.categories.contains(&c))
            })
        })
}

/// Servable to everyone: live, not hidden, not mature.
fn servable(g: &Inner, i: Idx) -> bool {
    g.item(i).is_some_and(|r| !r.hidden && !r.mature)
}

/// Ids (`["a", "b"]`), or with `X-API-Version: 2` scored (`[{"Id", "Score"}]`).
fn answer(headers: &HeaderMap, scored: Vec<Score>) -> Response {
    let v2 = headers
        .get("x-api-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "2");
    if v2 {
        Json(scored).into_response()
    } else {
        Json(scored.into_iter().map(|s| s.id).collect::<Vec<_>>()).into_response()
    }
}

/// A Go duration (`10m`, `1h30m`, `300s`, `1.5h`, `0`) in milliseconds.
fn go_duration(s: &str) -> Option<Millis> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&e| e > 0)?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += value * ms;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total < 1e15).then_some(total as Millis)
}

async fn recommend(
    State(s): State<AppState>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    run(&s, user_id, None, &headers, &p).await
}

async fn recommend_in(
    State(s): State<AppState>,
    Path((user_id, category)): Path<(String, String)>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    run(&s, user_id, Some(category), &headers, &p).await
}

/// The surface's pipeline for the user, `n + offset` deep (all of `server.max_n` when
/// categories narrow it, so the category still fills the page), cut to the window; with
/// `write-back-type`, feedback of that type on what is returned, stamped now + delay, so the
/// items are not recommended again once that time passes.
async fn run(
    s: &AppState,
    user_id: String,
    category: Option<String>,
    headers: &HeaderMap,
    p: &Params,
) -> Result<Response, ApiError> {
    let (n, offset) = window(s, p)?;
    cascade_core::types::check_id("user_id", &user_id).map_err(ApiError::from)?;
    let mut cats = p.all("category");
    cats.extend(category.filter(|c| !c.is_empty()));
    let write_back = match p.get("write-back-type").filter(|t| !t.is_empty()) {
        Some(t) => {
            let kind =
                kind_of(&s.config.gorse, t).ok_or_else(|| unknown_type("write-back-type", t))?;
            let delay = match p.get("write-back-delay").filter(|d| !d.is_empty()) {
                Some(d) => go_duration(d).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_value",
                        "write-back-delay",
                        "must be a duration such as 10m, 1h30m or 300s",
                    )
                })?,
                None => 0,
            };
            Some((kind, delay))
        }
        None => None,
    };
    let surface = s.config.gorse.surface.clone();
    let max = s.config.server.max_n;
    let depth = if cats.is_empty() {
        (n + offset).max(MIN_DEPTH).min(max)
    } else {
        max
    };
    let now = now_millis();
    cats.sort();
    let key = (user_id.clone(), cats.clone());
    // What the cached list still holds for this user: servable, in the categories, and
    // nothing they gave feedback on since (what was written back).
    let page = |list: &List| -> Option<Vec<Score>> {
        let g = s.engine.env.state.read();
        let now_s = now.div_euclid(1000);
        let seen: std::collections::HashSet<Idx> = g
            .users
            .get(&user_id)
            .and_then(|u| g.user(u))
            .map(|st| {
                st.seen
                    .iter()
                    .filter(|&&(_, t)| i64::from(t) <= now_s)
                    .map(|&(i, _)| i)
                    .collect()
            })
            .unwrap_or_default();
        let left: Vec<&(Idx, f32)> = list
            .items
            .iter()
            .filter(|&&(i, _)| servable(&g, i) && in_all(&g, i, &cats) && !seen.contains(&i))
            .collect();
        if left.len() < n + offset && !list.complete {
            return None;
        }
        Some(
            left.into_iter()
                .skip(offset)
                .take(n)
                .map(|&(i, w)| Score {
                    id: g.item_id(i).to_string(),
                    score: f64::from(w),
                })
                .collect(),
        )
    };
    let cached = s.gorse_lists.get(&key).and_then(|l| page(&l));
    let scored = match cached {
        Some(p) => p,
        None => {
            let mut query = cascade_pipeline::Query::new(&surface, &user_id, depth, now);
            query.now_from_client = false;
            query.request_id = format!("gorse-{:016x}", rand::random::<u64>());
            let result = s.engine.serve(&surface, query).await.ok_or_else(|| {
                ApiError::not_found(
                    "unknown_surface",
                    "gorse.surface",
                    format!("no surface `{surface}`"),
                )
            })?;
            let list = List {
                at: std::time::Instant::now(),
                complete: result.items.len() < depth,
                items: result.items.iter().map(|c| (c.item, c.score)).collect(),
            };
            // A fresh list answers with what it has, however short.
            let whole = List {
                complete: true,
                ..list.clone()
            };
            let p = page(&whole).unwrap_or_default();
            s.gorse_lists.put(key, list);
            p
        }
    };
    if let Some((kind, delay)) = write_back
        && !scored.is_empty()
    {
        let events = scored
            .iter()
            .map(|x| Event {
                kind,
                user_id: user_id.clone(),
                target: Target::Item(x.id.clone()),
                value: 0.0,
                fraction: None,
                ts: now + delay,
                request_id: None,
                surface: Some(surface.clone()),
                position: None,
                propensity: None,
                experiment: None,
            })
            .collect();
        s.engine.commit(Mutation::Events(events)).await?;
    }
    metrics::counter!("cascade_recommendations_total", "surface" => surface).increment(1);
    Ok(answer(headers, scored))
}

/// Items for an anonymous session: the co-visitation neighbours of its positive feedback,
/// scores summed, the session's own items and unservable ones left out; `null` when none,
/// as Gorse answers.
async fn session(
    State(s): State<AppState>,
    p: Params,
    JsonBody(v): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let (n, offset) = window(&s, &p)?;
    let mut list: Vec<FeedbackIn> = records("feedback", v)?;
    // A session's feedback need not name a user; it is never stored.
    for f in list.iter_mut().filter(|f| f.userid.is_empty()) {
        f.userid = "session".into();
    }
    let mut events = to_events(&s, list, now_millis())?;
    events.sort_by_key(|e| std::cmp::Reverse(e.ts));
    let models = s.engine.env.models.load();
    let g = s.engine.env.state.read();
    let own: std::collections::HashSet<Idx> = events
        .iter()
        .filter_map(|e| match &e.target {
            Target::Item(i) => g.items.get(i),
            Target::Creator(_) => None,
        })
        .collect();
    let mut sums: std::collections::HashMap<Idx, f64> = Default::default();
    for e in events.iter().filter(|e| e.kind.is_positive()).take(100) {
        let Target::Item(id) = &e.target else {
            continue;
        };
        let Some(i) = g.items.get(id) else { continue };
        let (nb, ws) = models.covis.neighbors(i);
        for (&b, &w) in nb.iter().zip(ws) {
            if !own.contains(&b) && servable(&g, b) {
                *sums.entry(b).or_default() += f64::from(w);
            }
        }
    }
    let mut ranked: Vec<(Idx, f64)> = sums.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let out: Vec<Score> = ranked
        .into_iter()
        .skip(offset)
        .take(n)
        .map(|(i, w)| Score {
            id: g.item_id(i).to_string(),
            score: w,
        })
        .collect();
    drop(g);
    if out.is_empty() {
        return Ok(Json(Value::Null).into_response());
    }
    Ok(Json(out).into_response())
}

/// One page of a list for Gorse: servable items in every `category` (AND), none that
/// `user-id` interacted with, from `offset`, at most `n`.
fn list_page(
    g: &Inner,
    p: &Params,
    list: impl Iterator<Item = (Idx, f64)>,
    (n, offset): (usize, usize),
) -> Vec<Score> {
    let cats = p.all("category");
    let seen = seen_by(g, p.get("user-id"));
    list.filter(|&(i, _)| servable(g, i) && in_all(g, i, &cats) && !seen.contains(&i))
        .skip(offset)
        .take(n)
        .map(|(i, w)| Score {
            id: g.item_id(i).to_string(),
            score: w,
        })
        .collect()
}

/// The items engaged with next to this one, scored.
async fn neighbors(
    State(s): State<AppState>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Json<Vec<Score>>, ApiError> {
    let window = window(&s, &p)?;
    let models = s.engine.env.models.load();
    let g = s.engine.env.state.read();
    let i = g
        .items
        .get(&id)
        .filter(|&i| g.item(i).is_some())
        .ok_or_else(|| {
            ApiError::not_found("item_not_found", "id", format!("item {id} not found"))
        })?;
    let (nb, ws) = models.covis.neighbors(i);
    let list = nb.iter().zip(ws).map(|(&b, &w)| (b, f64::from(w)));
    Ok(Json(list_page(&g, &p, list, window)))
}

/// What user `id` interacted with (for `user-id` filters).
fn seen_by(g: &Inner, id: Option<&str>) -> std::collections::HashSet<Idx> {
    id.and_then(|u| g.users.get(u))
        .and_then(|u| g.user(u))
        .map(|st| st.seen.iter().map(|&(i, _)| i).collect())
        .unwrap_or_default()
}

/// Newest servable items first, scored by their Unix time, as Gorse's `latest`.
async fn latest(State(s): State<AppState>, p: Params) -> Result<Json<Vec<Score>>, ApiError> {
    named(&s, "latest", &p)
}

/// A named non-personalized list: `popular` (decayed engagement), `trending` (short over
/// long window) or `latest`; any other name is an empty list, as Gorse answers.
async fn non_personalized(
    State(s): State<AppState>,
    Path(name): Path<String>,
    p: Params,
) -> Result<Json<Vec<Score>>, ApiError> {
    named(&s, &name, &p)
}

fn named(s: &AppState, name: &str, p: &Params) -> Result<Json<Vec<Score>>, ApiError> {
    let window = window(s, p)?;
    let models = s.engine.env.models.load();
    let g = s.engine.env.state.read();
    let lists = &models.popular;
    let scored = |l: &[(Idx, f32)]| -> Vec<(Idx, f64)> {
        l.iter().map(|&(i, w)| (i, f64::from(w))).collect()
    };
    let list: Vec<(Idx, f64)> = match name {
        "popular" => scored(&lists.global),
        "trending" => scored(&lists.trending),
        "latest" => lists
            .fresh
            .iter()
            .map(|&(i, t)| (i, t.div_euclid(1000) as f64))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Json(list_page(&g, p, list.into_iter(), window)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(go_duration("0"), Some(0));
        assert_eq!(go_duration("10m"), Some(600_000));
        assert_eq!(go_duration("1h30m"), Some(5_400_000));
        assert_eq!(go_duration("1.5s"), Some(1500));
        assert_eq!(go_duration("250ms"), Some(250));
        for bad in ["", "10", "m", "10x", "-1s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }
}
