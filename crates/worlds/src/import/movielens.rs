//! The MovieLens format: items with genres and years, users' demographics, ratings as events.

use super::csv_files::*;
use super::plumbing::*;
use cascade_core::{EventIn, EventKind, Item, Millis, TimeInput, User};
use serde_json::{Map, Value};

pub(crate) fn movielens_items(
    mut r: Csv,
    now: Millis,
    out: &mut Batcher<'_>,
) -> anyhow::Result<()> {
    let id = Some(r.require(&["item_id", "movieId", "movie_id"])?);
    let title_col = r.column(&["title"]);
    let genres = r.column(&["genres", "genre"]);
    while let Some(line) = r.next_record()? {
        let mut item = movielens_item(r.cell(id), r.cell(title_col), r.cell(genres));
        item.validate(now).map_err(|e| invalid(&r.file, line, &e))?;
        out.item(item)?;
    }
    Ok(())
}

/// The year in a MovieLens title such as "Heat (1995)".
pub(crate) fn title_year(title: &str) -> Option<i64> {
    let inner = title.trim_end().strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let year = &inner[open + 1..];
    if year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) {
        year.parse().ok()
    } else {
        None
    }
}

pub(crate) fn movielens_users(mut r: Csv, out: &mut Batcher<'_>) -> anyhow::Result<()> {
    let id = Some(r.require(&["user_id", "userId"])?);
    let cols = [
        ("gender", r.column(&["gender"])),
        ("age", r.column(&["age"])),
        ("occupation", r.column(&["occupation"])),
        ("zip", r.column(&["zip", "zip_code", "zipcode"])),
    ];
    while let Some(line) = r.next_record()? {
        let mut attributes = Map::new();
        for (name, col) in cols {
            let v = r.cell(col);
            if v.is_empty() {
                continue;
            }
            // Age is a number (an age group's lower bound in ML-1M); the rest are codes.
            let value = match (name, v.parse::<i64>()) {
                ("age", Ok(n)) => Value::from(n),
                _ => Value::from(v),
            };
            attributes.insert(name.to_string(), value);
        }
        let user = User {
            id: r.cell(id).to_string(),
            attributes,
            follows: Vec::new(),
        };
        user.validate().map_err(|e| invalid(&r.file, line, &e))?;
        out.user(user)?;
    }
    Ok(())
}

pub(crate) fn movielens_ratings(
    mut r: Csv,
    now: Millis,
    out: &mut Batcher<'_>,
) -> anyhow::Result<()> {
    let user = Some(r.require(&["user_id", "userId"])?);
    let item = Some(r.require(&["item_id", "movieId", "movie_id"])?);
    let rating = Some(r.require(&["rating"])?);
    let ts = Some(r.require(&["timestamp"])?);
    while let Some(line) = r.next_record()? {
        let Some(stars) = r.parse::<f64>(rating, line, "rating")? else {
            return Err(bad_field(&r.file, line, "rating", "is empty"));
        };
        let Some(at) = r.time(ts, line, "timestamp")? else {
            return Err(bad_field(&r.file, line, "timestamp", "is empty"));
        };
        let e = rating_event(r.cell(user), r.cell(item), stars, at);
        let event = e.into_event(now).map_err(|e| invalid(&r.file, line, &e))?;
        out.event(event)?;
    }
    Ok(())
}

/// The documented MovieLens mapping: every rating is one implicit positive at its time;
/// 4–5 stars are a `like`, 1–3 a `view`, and the rating is the event's weight.
pub fn rating_event(user: &str, item: &str, stars: f64, at: TimeInput) -> EventIn {
    let kind = if stars >= 4.0 {
        EventKind::Like
    } else {
        EventKind::View
    };
    EventIn {
        kind,
        user_id: user.to_string(),
        item_id: Some(item.to_string()),
        creator_id: None,
        value: Some(stars),
        fraction: None,
        timestamp: Some(at),
        request_id: None,
        surface: None,
        position: None,
        propensity: None,
        experiment: None,
    }
}

/// A MovieLens item: genres become categories, a trailing "(1995)" the `year` attribute.
pub fn movielens_item(id: &str, title: &str, genres: &str) -> Item {
    let mut attributes = Map::new();
    if let Some(year) = title_year(title) {
        attributes.insert("year".to_string(), Value::from(year));
    }
    Item {
        id: id.to_string(),
        title: title.to_string(),
        categories: split_list(genres)
            .into_iter()
            .filter(|g| g != "(no genres listed)")
            .collect(),
        tags: Vec::new(),
        creator_id: None,
        created_at: Some(TimeInput(MOVIELENS_START)),
        attributes,
        hidden: false,
        mature: false,
    }
}
