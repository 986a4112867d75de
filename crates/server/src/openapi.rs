//! What the OpenAPI document declares beyond each handler's own `responses`: the statuses the
//! shared layers return (auth, the in-flight limit, the body and query extractors), added
//! from how the router is built, so the document cannot drift from what the server answers.

use crate::error::ErrorBody;
use cascade_core::types::MAX_ID_LEN;
use std::collections::BTreeSet;
use utoipa::ToSchema;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ArrayItems, Object, Schema, SchemaType, Type};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, ResponseBuilder};

/// What the configuration fixes: `server.max_n` and the surfaces served.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub max_n: usize,
    pub surfaces: Vec<String>,
}

/// Paths (as the document spells them) of one router's operations.
pub fn paths_of(api: &OpenApi) -> BTreeSet<String> {
    api.paths.paths.keys().cloned().collect()
}

/// Adds to every operation of `api` the statuses of its layers and extractors:
/// - `guarded` routes (behind `require`, `limit` and `shed`): 401 without a key or with an
///   unknown one, 403 for a role too low, 429 past the key's rate, 503 when the group's
///   permits are taken;
/// - a JSON body (`JsonBody`): 400 (malformed, a bad field), 413 (past `server.max_body_bytes`
///   or `server.max_batch`), 415 (not JSON);
/// - query or path parameters: 400 (a value that does not parse or is out of range).
///
/// A status a handler already declares keeps its own description. Then the constraints
/// every handler enforces alike, from the constants and the config that enforce them:
/// [`constrain`].
pub fn declare_layers(api: &mut OpenApi, guarded: &BTreeSet<String>, known: &Known) {
    let inputs = request_schemas(api);
    if let Some(c) = api.components.as_mut() {
        for (name, schema) in c.schemas.iter_mut() {
            if !inputs.contains(name) {
                continue;
            }
            if let RefOr::T(Schema::Object(o)) = schema {
                for (name, prop) in o.properties.iter_mut() {
                    match prop {
                        RefOr::T(Schema::Object(p)) => constrain(name, p, known),
                        // Lists of ids: each one is checked as an id.
                        RefOr::T(Schema::Array(a)) if is_id_list(name) => {
                            if let ArrayItems::RefOrSchema(item) = &mut a.items
                                && let RefOr::T(Schema::Object(p)) = item.as_mut()
                            {
                                constrain("id", p, known);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for (path, item) in api.paths.paths.iter_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            declare(op, guarded.contains(path), known);
        }
    }
}

/// The component schemas a request body refers to, directly or through others: what the
/// constraints are about (a response echoes what was accepted, or an id as given in a path).
fn request_schemas(api: &OpenApi) -> BTreeSet<String> {
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("$ref", serde_json::Value::String(r)) => {
                            if let Some(n) = r.strip_prefix("#/components/schemas/") {
                                out.push(n.to_string());
                            }
                        }
                        _ => refs(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    for item in api.paths.paths.values() {
        let ops = [&item.get, &item.put, &item.post, &item.delete, &item.patch];
        for op in ops.into_iter().flatten() {
            if let Some(b) = &op.request_body
                && let Ok(v) = serde_json::to_value(b)
            {
                refs(&v, &mut todo);
            }
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let schema = api.components.as_ref().and_then(|c| c.schemas.get(&name));
        if let Some(v) = schema.and_then(|s| serde_json::to_value(s).ok()) {
            refs(&v, &mut todo);
        }
    }
    seen
}

/// Ids (`id`, `user_id`, `item_id`, `request_id`: `cascade_core::types::check_id`) are 1 to
/// `MAX_ID_LEN` characters without control characters; a page or list size `n` without a
/// range of its own is `1..=server.max_n`; a `surface` is one the config serves.
fn constrain(name: &str, o: &mut Object, known: &Known) {
    let is = |t: Type| match &o.schema_type {
        SchemaType::Type(x) => *x == t,
        SchemaType::Array(v) => v.contains(&t),
        SchemaType::AnyValue => false,
    };
    if matches!(name, "id" | "user_id" | "item_id" | "request_id") && is(Type::String) {
        o.min_length.get_or_insert(1);
        o.max_length.get_or_insert(MAX_ID_LEN);
        o.pattern
            .get_or_insert_with(|| "^[^\\x00-\\x1F\\x7F-\\x9F]+$".into());
    }
    if name == "n" && is(Type::Integer) {
        o.minimum.get_or_insert(1.into());
        o.maximum.get_or_insert(known.max_n.into());
    }
    if name == "surface" && is(Type::String) && !known.surfaces.is_empty() {
        o.enum_values
            .get_or_insert_with(|| known.surfaces.iter().map(|s| s.as_str().into()).collect());
    }
}

/// Properties holding item, user or creator ids.
fn is_id_list(name: &str) -> bool {
    matches!(name, "items" | "follows" | "exclude") || name.ends_with("_ids")
}

fn declare(op: &mut Operation, guarded: bool, known: &Known) {
    for p in op.parameters.iter_mut().flatten() {
        if let Some(RefOr::T(Schema::Object(o))) = p.schema.as_mut() {
            constrain(&p.name, o, known);
        }
    }
    let body = op.request_body.is_some();
    let params = op.parameters.as_ref().is_some_and(|p| {
        p.iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Path))
    });
    let mut add = |status: &str, why: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(why));
    };
    if guarded {
        add(
            "401",
            "No API key, or an unknown one (keys are configured).",
        );
        add("403", "The key's role may not call this route.");
        add(
            "429",
            "The key's rate for this route group is spent (`server.rate_limit`; `Retry-After` \
             says when to retry).",
        );
        add(
            "503",
            "Overloaded (the route group's in-flight limit; `Retry-After` says when to retry) \
             or a dependency that must answer is down.",
        );
    }
    if body || params {
        add(
            "400",
            "A malformed value; `error.field` names the field or parameter.",
        );
    }
    if body {
        add(
            "413",
            "The body is past `server.max_body_bytes`, or a batch past `server.max_batch`.",
        );
        add("415", "The body is not `application/json`.");
    }
}

fn error_response(why: &str) -> RefOr<utoipa::openapi::Response> {
    let schema = Ref::from_schema_name(ErrorBody::name());
    RefOr::T(
        ResponseBuilder::new()
            .description(why)
            .content("application/json", Content::new(Some(schema)))
            .build(),
    )
}
