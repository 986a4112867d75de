//! Gorse's items: `POST /api/item`, `POST /api/items`, `GET|PATCH|DELETE /api/item/{id}`,
//! `GET /api/items?n&cursor` and `?q=` (the suggestion index over titles). `Comment` is the
//! item's title, `Timestamp` its `created_at`, `IsHidden` its `hidden`, `Labels` the
//! `labels` attribute; creator, tags and other attributes set through v1 are kept.

use super::{Params, both, check_labels, format_time, parse_time, record, records, rows};
use crate::error::ApiError;
use crate::extract::{JsonBody, check_batch};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cascade_core::time::{TimeInput, now_millis};
use cascade_core::{Item, ItemPatch, Mutation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub(super) fn routes() -> Router<AppState> {
    let r = Router::new();
    let r = both(r, "/api/item", post(insert_item));
    let r = both(r, "/api/items", post(insert_items).get(list_items));
    both(
        r,
        "/api/item/{id}",
        get(get_item).patch(patch_item).delete(delete_item),
    )
}

/// A Gorse item as given (keys lower-cased).
#[derive(Debug, Deserialize)]
struct ItemIn {
    itemid: String,
    #[serde(default)]
    ishidden: bool,
    #[serde(default)]
    categories: Option<Vec<String>>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    labels: Value,
    #[serde(default)]
    comment: Option<String>,
}

/// Gorse's item patch: only the fields given change.
#[derive(Debug, Deserialize)]
struct PatchIn {
    #[serde(default)]
    ishidden: Option<bool>,
    #[serde(default)]
    categories: Option<Vec<String>>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    labels: Option<Value>,
    #[serde(default)]
    comment: Option<String>,
}

/// A Gorse item as answered.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ItemOut {
    item_id: String,
    is_hidden: bool,
    categories: Vec<String>,
    timestamp: String,
    labels: Value,
    comment: String,
}

pub(super) fn from_item(it: Item) -> ItemOut {
    ItemOut {
        is_hidden: it.hidden,
        categories: it.categories,
        timestamp: format_time(it.created_at.map(TimeInput::millis)),
        labels: it.attributes.get("labels").cloned().unwrap_or(Value::Null),
        comment: it.title,
        item_id: it.id,
    }
}

fn stored(s: &AppState, id: &str) -> Option<Item> {
    let g = s.engine.env.state.read();
    g.items.get(id).and_then(|i| g.item_record(i))
}

fn time_field(field: &str, t: Option<&str>) -> Result<Option<TimeInput>, ApiError> {
    let Some(t) = t else {
        return Ok(None);
    };
    parse_time(t)
        .map(|ms| ms.map(TimeInput))
        .map_err(|m| ApiError::bad_request("invalid_value", field, m))
}

fn to_item(s: &AppState, it: ItemIn, field: &str) -> Result<Item, ApiError> {
    check_labels(&format!("{field}.Labels"), &it.labels)?;
    let base = stored(s, &it.itemid);
    let mut attributes: Map<String, Value> = base
        .as_ref()
        .map(|b| b.attributes.clone())
        .unwrap_or_default();
    if it.labels.is_null() {
        attributes.remove("labels");
    } else {
        attributes.insert("labels".into(), it.labels);
    }
    let mut item = Item {
        title: it.comment.unwrap_or_default(),
        categories: it.categories.unwrap_or_default(),
        tags: base.as_ref().map(|b| b.tags.clone()).unwrap_or_default(),
        creator_id: base.as_ref().and_then(|b| b.creator_id.clone()),
        created_at: time_field(&format!("{field}.Timestamp"), it.timestamp.as_deref())?,
        attributes,
        hidden: it.ishidden,
        mature: base.as_ref().is_some_and(|b| b.mature),
        id: it.itemid,
    };
    // Gorse keeps a missing timestamp as its zero time; Cascade's `created_at` then is now.
    item.validate(now_millis()).map_err(ApiError::from)?;
    Ok(item)
}

async fn insert_item(
    State(s): State<AppState>,
    JsonBody(v): JsonBody<Value>,
) -> Result<Json<super::Success>, ApiError> {
    let it = to_item(&s, record("item", None, v)?, "item")?;
    s.engine.commit(Mutation::UpsertItems(vec![it])).await?;
    Ok(rows(1))
}

async fn insert_items(
    State(s): State<AppState>,
    JsonBody(v): JsonBody<Value>,
) -> Result<Json<super::Success>, ApiError> {
    let list: Vec<ItemIn> = records("items", v)?;
    check_batch(&s, "items", &list)?;
    let items = list
        .into_iter()
        .enumerate()
        .map(|(i, it)| to_item(&s, it, &format!("items[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let n = items.len();
    s.engine.commit(Mutation::UpsertItems(items)).await?;
    Ok(rows(n))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("item_not_found", "id", format!("item {id} not found"))
}

async fn get_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ItemOut>, ApiError> {
    stored(&s, &id)
        .map(|it| Json(from_item(it)))
        .ok_or_else(|| not_found(&id))
}

async fn patch_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(v): JsonBody<Value>,
) -> Result<Json<super::Success>, ApiError> {
    let p: PatchIn = record("patch", None, v)?;
    if let Some(l) = &p.labels {
        check_labels("Labels", l)?;
    }
    if stored(&s, &id).is_none() {
        return Err(not_found(&id));
    }
    let patch = ItemPatch {
        title: p.comment,
        categories: p.categories,
        created_at: time_field("Timestamp", p.timestamp.as_deref())?,
        attributes: p
            .labels
            .map(|l| Map::from_iter([("labels".to_string(), l)])),
        hidden: p.ishidden,
        ..Default::default()
    };
    patch.validate().map_err(ApiError::from)?;
    s.engine.commit(Mutation::PatchItem { id, patch }).await?;
    Ok(rows(1))
}

/// `{"RowAffected": 1}` whether or not it existed, as Gorse answers.
async fn delete_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<super::Success>, ApiError> {
    if stored(&s, &id).is_some() {
        s.engine.commit(Mutation::DeleteItem { id }).await?;
    }
    Ok(rows(1))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ItemsPage {
    cursor: String,
    items: Vec<ItemOut>,
}

/// Cursor tag of Gorse's item listing.
const ITEMS: char = 'I';

/// Every item a page at a time, or with `q` the best `n` matches of the titles (hidden items
/// are listed, as Gorse lists them, but never found by a search).
async fn list_items(State(s): State<AppState>, p: Params) -> Result<Json<ItemsPage>, ApiError> {
    let n = p.page_n()?;
    if let Some(q) = p.get("q").filter(|q| !q.trim().is_empty()) {
        let query = cascade_runtime::suggest::SuggestQuery {
            q: q.to_string(),
            n,
            kinds: vec![cascade_suggest::Kind::Item],
            user_id: None,
            blocklist: None,
        };
        let found = s.engine.suggest(&query);
        let items = found
            .into_iter()
            .filter_map(|f| stored(&s, &f.id).map(from_item))
            .collect();
        return Ok(Json(ItemsPage {
            cursor: String::new(),
            items,
        }));
    }
    let from = p.cursor(ITEMS)?;
    let g = s.engine.env.state.read();
    let page = g.items_page(from, n);
    let items = page
        .rows
        .iter()
        .filter_map(|&i| g.item_record(i).map(from_item))
        .collect();
    drop(g);
    Ok(Json(ItemsPage {
        cursor: page
            .next
            .map(|at| crate::paging::encode(ITEMS, at))
            .unwrap_or_default(),
        items,
    }))
}
