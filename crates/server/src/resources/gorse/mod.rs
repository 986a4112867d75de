//! Gorse's v0.5 REST API under `/api/*` (`[gorse]`, on by default): the routes PyGorse 0.5.1
//! calls, with Gorse's shapes (PascalCase records, keys matched case-insensitively,
//! `{"RowAffected": n}`, `{"Cursor", "Users"|"Items"|"Feedback"}` pages) mapped onto the same
//! engine calls as v1, so a Gorse client gets Cascade's pipeline, policy and fallbacks. Its
//! contract is Gorse's (documented by Gorse), so these routes are not in `/openapi.json`.

mod feedback;
mod health;
mod items;
mod recommend;
mod users;

use crate::auth::{Role, require};
use crate::config::GorseSection;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::middleware;
use axum::routing::MethodRouter;
use cascade_core::{EventKind, Millis};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Gorse's page size when `n` is absent (`server.default_n`).
const DEFAULT_N: usize = 10;

/// Every `/api/*` route, each also with a trailing slash, in its access group: data routes
/// take the data key (write or admin), recommendations the read key, health none.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let data = [users::routes(), items::routes(), feedback::routes()]
        .into_iter()
        .fold(Router::new(), Router::merge)
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Role::Write),
            require,
        ));
    let reads = recommend::routes().route_layer(middleware::from_fn_with_state(
        (state.clone(), Role::Read),
        require,
    ));
    Router::new()
        .merge(data)
        .merge(reads)
        .merge(health::routes())
}

/// `path` and `path/` (Gorse's router tolerates the trailing slash; PyGorse sends one when
/// a recommendation has no category).
fn both(r: Router<AppState>, path: &str, m: MethodRouter<AppState>) -> Router<AppState> {
    r.route(path, m.clone()).route(&format!("{path}/"), m)
}

/// `{"RowAffected": n}`, the answer of every Gorse write.
#[derive(Debug, Serialize)]
struct Success {
    #[serde(rename = "RowAffected")]
    row_affected: usize,
}

fn rows(n: usize) -> axum::Json<Success> {
    axum::Json(Success { row_affected: n })
}

/// An item with a score, Gorse's `{"Id", "Score"}`.
#[derive(Debug, Serialize)]
struct Score {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Score")]
    score: f64,
}

/// The query string as pairs, repeated keys kept (`category` may repeat); Gorse ignores
/// parameters it does not know, so this does too.
struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let pairs = form_pairs(q).ok_or_else(|| {
            ApiError::bad_request("invalid_value", "query", "not a valid query string")
        })?;
        Ok(Params(pairs))
    }
}

/// `a=1&b=x%20y` → pairs, percent-decoded (`+` is a space).
fn form_pairs(q: &str) -> Option<Vec<(String, String)>> {
    let decode = |s: &str| -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }

    fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(x, v)| x == k && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A non-negative integer parameter (`n`, `offset`), 400 naming it when it is not one.
    fn count(&self, k: &str, default: usize) -> Result<usize, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                ApiError::bad_request("invalid_value", k, "must be a non-negative integer")
            }),
        }
    }

    /// `n` of a page: 1..=1000.
    fn page_n(&self) -> Result<usize, ApiError> {
        let n = self.count("n", DEFAULT_N)?;
        if !(1..=crate::paging::MAX_PAGE).contains(&n) {
            return Err(ApiError::bad_request(
                "invalid_value",
                "n",
                format!("must be within 1..={}", crate::paging::MAX_PAGE),
            ));
        }
        Ok(n)
    }

    /// Where a page starts: the `Cursor` of the previous page (`""` or absent: the start).
    fn cursor(&self, tag: char) -> Result<u64, ApiError> {
        crate::paging::PageParams {
            n: None,
            cursor: self.get("cursor").map(str::to_string),
        }
        .resolve(tag)
        .map(|(_, at)| at)
    }
}

/// Decodes one Gorse record: keys are matched case-insensitively (as Go's decoder does),
/// unknown keys are ignored, and a field of the wrong type is a 400 naming it.
fn record<T: DeserializeOwned>(list: &str, index: Option<usize>, v: Value) -> Result<T, ApiError> {
    let v = match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        ),
        other => other,
    };
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = match (index, path.as_str()) {
            (Some(i), ".") => format!("{list}[{i}]"),
            (Some(i), p) => format!("{list}[{i}].{p}"),
            (None, ".") => list.to_string(),
            (None, p) => p.to_string(),
        };
        ApiError::bad_request("invalid_value", field, e.inner().to_string())
    })
}

/// A list body: each element a record.
fn records<T: DeserializeOwned>(list: &str, v: Value) -> Result<Vec<T>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::bad_request(
            "invalid_value",
            list,
            "must be a JSON array",
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| record(list, Some(i), v))
        .collect()
}

/// Gorse's rule for `Labels`: null, a string, a number, a list of only strings or only
/// numbers, or an object whose values follow the same rule.
fn labels_ok(v: &Value) -> bool {
    match v {
        Value::Null | Value::String(_) | Value::Number(_) => true,
        Value::Array(a) => a.iter().all(Value::is_string) || a.iter().all(Value::is_number),
        Value::Object(m) => m.values().all(labels_ok),
        Value::Bool(_) => false,
    }
}

fn check_labels(field: &str, v: &Value) -> Result<(), ApiError> {
    if labels_ok(v) {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "invalid_value",
        field,
        "labels must be null, a string, a number, a list of strings or of numbers, or an object of those",
    ))
}

/// Gorse's zero time: what it answers for a record without one.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A Gorse timestamp: RFC 3339, `2006-01-02 15:04:05`, `2006-01-02T15:04:05` (UTC) or
/// `2006-01-02`; empty is none. `Err` names what was wrong.
fn parse_time(s: &str) -> Result<Option<Millis>, String> {
    let s = s.trim();
    if s.is_empty() || s == ZERO_TIME {
        return Ok(None);
    }
    if let Some(ms) = cascade_core::time::parse_rfc3339(s) {
        return Ok(Some(ms));
    }
    let bad =
        || format!("`{s}` is not a timestamp (RFC 3339, `2006-01-02 15:04:05` or `2006-01-02`)");
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = s.get(r)?;
        d.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| d.parse().ok())?
    };
    let sep = |i: usize, c: &[u8]| s.as_bytes().get(i).is_some_and(|b| c.contains(b));
    let (Some(y), Some(mo), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return Err(bad());
    };
    if !sep(4, b"-") || !sep(7, b"-") {
        return Err(bad());
    }
    let (h, mi, se) = match s.len() {
        10 => (0, 0, 0),
        19 if sep(10, b" T") && sep(13, b":") && sep(16, b":") => {
            match (num(11..13), num(14..16), num(17..19)) {
                (Some(h), Some(mi), Some(se)) => (h, mi, se),
                _ => return Err(bad()),
            }
        }
        _ => return Err(bad()),
    };
    let month = time::Month::try_from(mo as u8).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(y as i32, month, d as u8).map_err(|_| bad())?;
    let t = time::Time::from_hms(h as u8, mi as u8, se as u8).map_err(|_| bad())?;
    let at = time::PrimitiveDateTime::new(date, t).assume_utc();
    Ok(Some(at.unix_timestamp() * 1000))
}

/// RFC 3339 in UTC (`2022-02-24T00:00:00Z`: what a UTC timestamp was given as, byte for
/// byte); Gorse's zero time for none.
fn format_time(ms: Option<Millis>) -> String {
    ms.map_or_else(|| ZERO_TIME.to_string(), cascade_core::time::format_rfc3339)
}

/// The Cascade event a Gorse feedback type is (see [`GorseSection`]).
fn kind_of(cfg: &GorseSection, t: &str) -> Option<EventKind> {
    let has = |l: &[String]| l.iter().any(|x| x == t);
    if has(&cfg.positive_feedback_types) {
        return Some(EventKind::Like);
    }
    if has(&cfg.read_feedback_types) {
        return Some(EventKind::View);
    }
    if has(&cfg.negative_feedback_types) {
        return Some(EventKind::Skip);
    }
    EventKind::ALL
        .into_iter()
        .find(|k| k.as_str() == t && !matches!(k, EventKind::Impression | EventKind::Follow))
}

/// The Gorse name of a Cascade event: its list's first type, else the event's own name.
fn name_of(cfg: &GorseSection, k: EventKind) -> String {
    let first = match k {
        EventKind::Like => cfg.positive_feedback_types.first(),
        EventKind::View => cfg.read_feedback_types.first(),
        EventKind::Skip => cfg.negative_feedback_types.first(),
        _ => None,
    };
    first.cloned().unwrap_or_else(|| k.as_str().to_string())
}

fn unknown_type(field: &str, t: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_value",
        field,
        format!(
            "feedback type `{t}` maps to no Cascade event: add it to gorse.positive_feedback_types, read_feedback_types or negative_feedback_types"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gorse_timestamps_parse_and_utc_ones_format_back_byte_for_byte() {
        for s in [
            "2022-02-24T00:00:00Z",
            "2023-07-01T12:34:56Z",
            "2023-07-01T12:34:56.25Z",
        ] {
            let ms = parse_time(s).expect("parse");
            assert_eq!(format_time(ms), s);
        }
        let day = parse_time("2022-02-24").expect("date");
        assert_eq!(format_time(day), "2022-02-24T00:00:00Z");
        let spaced = parse_time("2022-02-24 08:30:05").expect("spaced");
        assert_eq!(format_time(spaced), "2022-02-24T08:30:05Z");
        assert_eq!(parse_time("").expect("empty"), None);
        assert_eq!(format_time(None), ZERO_TIME);
        for bad in [
            "yesterday",
            "2022-13-01",
            "2022-02-30",
            "2022-02-24 25:00:00",
            "2022/02/24",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_follow_gorse_rules_and_keys_match_case_insensitively() {
        for ok in [
            r#"null"#,
            r#""a""#,
            r#"3"#,
            r#"["a","b"]"#,
            r#"[1,2]"#,
            r#"{"x":{"y":["a"]}}"#,
        ] {
            assert!(labels_ok(&serde_json::from_str(ok).expect("json")), "{ok}");
        }
        for bad in [r#"true"#, r#"["a",1]"#, r#"{"x":false}"#] {
            assert!(
                !labels_ok(&serde_json::from_str(bad).expect("json")),
                "{bad}"
            );
        }
        #[derive(serde::Deserialize)]
        struct R {
            userid: String,
        }
        let r: R = record(
            "users",
            None,
            serde_json::json!({"UserId": "a", "Extra": 1}),
        )
        .expect("decoded");
        assert_eq!(r.userid, "a");
        let e = record::<R>("users", Some(2), serde_json::json!({"userId": 5}))
            .err()
            .expect("wrong type");
        assert_eq!(e.field.as_deref(), Some("users[2].userid"));
    }

    #[test]
    fn feedback_types_map_by_list_and_name_back_by_the_first() {
        let cfg = GorseSection::default();
        assert_eq!(kind_of(&cfg, "star"), Some(EventKind::Like));
        assert_eq!(kind_of(&cfg, "read"), Some(EventKind::View));
        assert_eq!(kind_of(&cfg, "click"), Some(EventKind::Click));
        assert_eq!(kind_of(&cfg, "impression"), None);
        assert_eq!(kind_of(&cfg, "bogus"), None);
        assert_eq!(name_of(&cfg, EventKind::Like), "like");
        assert_eq!(name_of(&cfg, EventKind::View), "read");
        assert_eq!(name_of(&cfg, EventKind::Watch), "watch");
        assert_eq!(
            form_pairs("n=3&category=a&category=b%20c&x=").expect("pairs"),
            [
                ("n", "3"),
                ("category", "a"),
                ("category", "b c"),
                ("x", "")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }
}
