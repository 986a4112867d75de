//! The CSV format: Cascade's columns for items, users and events, extra columns as attributes.

use super::plumbing::*;
use anyhow::{Context, anyhow, bail};
use cascade_core::{EventIn, EventKind, Item, Millis, TimeInput, User};
use indicatif::ProgressBar;
use serde_json::{Map, Value};
use std::fmt::Display;
use std::fs::File;

use std::path::{Path, PathBuf};

pub(crate) struct Csv {
    pub(crate) file: PathBuf,
    pub(crate) reader: csv::Reader<Counting<File>>,
    pub(crate) headers: Vec<String>,
    pub(crate) record: csv::StringRecord,
}

impl Csv {
    pub(crate) fn open(file: &Path, pb: &ProgressBar) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(open(file, pb)?);
        let headers: Vec<String> = reader
            .headers()
            .with_context(|| format!("reading the header of {}", file.display()))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_string())
            .collect();
        Ok(Self {
            file: file.to_path_buf(),
            reader,
            headers,
            record: csv::StringRecord::new(),
        })
    }

    /// The index of the first column called one of `names` (ASCII case-insensitive).
    pub(crate) fn column(&self, names: &[&str]) -> Option<usize> {
        self.headers
            .iter()
            .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
    }

    pub(crate) fn require(&self, names: &[&str]) -> anyhow::Result<usize> {
        self.column(names).ok_or_else(|| {
            anyhow!(
                "{}: missing column `{}`",
                self.file.display(),
                names.join("` or `")
            )
        })
    }

    /// Columns not among `known`, with their names.
    pub(crate) fn others(&self, known: &[&str]) -> Vec<(usize, String)> {
        self.headers
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty() && !known.iter().any(|k| h.eq_ignore_ascii_case(k)))
            .map(|(i, h)| (i, h.clone()))
            .collect()
    }

    /// Reads the next record; returns its line number, or `None` at the end.
    pub(crate) fn next_record(&mut self) -> anyhow::Result<Option<u64>> {
        let more = self
            .reader
            .read_record(&mut self.record)
            .with_context(|| format!("reading {}", self.file.display()))?;
        Ok(more.then(|| self.record.position().map_or(0, csv::Position::line)))
    }

    pub(crate) fn cell(&self, col: Option<usize>) -> &str {
        col.and_then(|i| self.record.get(i)).unwrap_or("")
    }

    pub(crate) fn opt(&self, col: Option<usize>) -> Option<String> {
        let s = self.cell(col);
        (!s.is_empty()).then(|| s.to_string())
    }

    /// Non-empty cells of `cols` as string attributes.
    pub(crate) fn attributes(&self, cols: &[(usize, String)]) -> Map<String, Value> {
        let mut m = Map::new();
        for (i, name) in cols {
            let v = self.cell(Some(*i));
            if !v.is_empty() {
                m.insert(name.clone(), Value::from(v));
            }
        }
        m
    }

    pub(crate) fn parse<T: std::str::FromStr>(
        &self,
        col: Option<usize>,
        line: u64,
        field: &str,
    ) -> anyhow::Result<Option<T>>
    where
        T::Err: Display,
    {
        let s = self.cell(col);
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<T>()
            .map(Some)
            .map_err(|e| bad_field(&self.file, line, field, format!("`{s}`: {e}")))
    }

    pub(crate) fn time(
        &self,
        col: Option<usize>,
        line: u64,
        field: &str,
    ) -> anyhow::Result<Option<TimeInput>> {
        let s = self.cell(col);
        if s.is_empty() {
            return Ok(None);
        }
        parse_time(s)
            .map(Some)
            .map_err(|e| bad_field(&self.file, line, field, e))
    }

    pub(crate) fn flag(&self, col: Option<usize>, line: u64, field: &str) -> anyhow::Result<bool> {
        let s = self.cell(col);
        match s.to_ascii_lowercase().as_str() {
            "" | "false" | "0" | "no" | "n" | "f" => Ok(false),
            "true" | "1" | "yes" | "y" | "t" => Ok(true),
            _ => Err(bad_field(
                &self.file,
                line,
                field,
                format!("`{s}` is not true or false"),
            )),
        }
    }
}

/// `|`-separated labels, blanks dropped.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split('|')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// RFC 3339 or Unix seconds, with the API's rules (both go through `TimeInput`'s parser).
pub(crate) fn parse_time(s: &str) -> Result<TimeInput, String> {
    let v = match s.parse::<f64>() {
        Ok(x) => Value::from(x),
        Err(_) => Value::String(s.to_string()),
    };
    serde_json::from_value::<TimeInput>(v).map_err(|e| e.to_string())
}

pub(crate) const ITEM_COLUMNS: [&str; 8] = [
    "id",
    "title",
    "categories",
    "tags",
    "creator_id",
    "created_at",
    "hidden",
    "mature",
];

pub(crate) fn csv_items(mut r: Csv, now: Millis, out: &mut Batcher<'_>) -> anyhow::Result<()> {
    let id = Some(r.require(&["id"])?);
    let [_, title, categories, tags, creator, created, hidden, mature] =
        ITEM_COLUMNS.map(|c| r.column(&[c]));
    let extra = r.others(&ITEM_COLUMNS);
    while let Some(line) = r.next_record()? {
        let mut item = Item {
            id: r.cell(id).to_string(),
            title: r.cell(title).to_string(),
            categories: split_list(r.cell(categories)),
            tags: split_list(r.cell(tags)),
            creator_id: r.opt(creator),
            created_at: r.time(created, line, "created_at")?,
            attributes: r.attributes(&extra),
            hidden: r.flag(hidden, line, "hidden")?,
            mature: r.flag(mature, line, "mature")?,
        };
        item.validate(now).map_err(|e| invalid(&r.file, line, &e))?;
        out.item(item)?;
    }
    Ok(())
}

pub(crate) fn csv_users(mut r: Csv, out: &mut Batcher<'_>) -> anyhow::Result<()> {
    let id = Some(r.require(&["id"])?);
    let follows = r.column(&["follows"]);
    let extra = r.others(&["id", "follows"]);
    while let Some(line) = r.next_record()? {
        let user = User {
            id: r.cell(id).to_string(),
            attributes: r.attributes(&extra),
            follows: split_list(r.cell(follows)),
        };
        user.validate().map_err(|e| invalid(&r.file, line, &e))?;
        out.user(user)?;
    }
    Ok(())
}

pub(crate) const EVENT_COLUMNS: [&str; 10] = [
    "type",
    "user_id",
    "item_id",
    "creator_id",
    "value",
    "fraction",
    "timestamp",
    "request_id",
    "surface",
    "position",
];

pub(crate) fn csv_events(mut r: Csv, now: Millis, out: &mut Batcher<'_>) -> anyhow::Result<()> {
    if let Some((_, name)) = r.others(&EVENT_COLUMNS).first() {
        bail!(
            "{}: unknown column `{name}` (known: {})",
            r.file.display(),
            EVENT_COLUMNS.join(", ")
        );
    }
    r.require(&["type"])?;
    r.require(&["user_id"])?;
    let [
        kind_col,
        user,
        item,
        creator,
        value,
        fraction,
        ts,
        request,
        surface,
        position,
    ] = EVENT_COLUMNS.map(|c| r.column(&[c]));
    while let Some(line) = r.next_record()? {
        let kind_s = r.cell(kind_col);
        if kind_s.is_empty() {
            return Err(bad_field(&r.file, line, "type", "is empty"));
        }
        let kind: EventKind = serde_json::from_value(Value::String(kind_s.to_string()))
            .map_err(|e| bad_field(&r.file, line, "type", e))?;
        let e = EventIn {
            kind,
            user_id: r.cell(user).to_string(),
            item_id: r.opt(item),
            creator_id: r.opt(creator),
            value: r.parse::<f64>(value, line, "value")?,
            fraction: r.parse::<f64>(fraction, line, "fraction")?,
            timestamp: r.time(ts, line, "timestamp")?,
            request_id: r.opt(request),
            surface: r.opt(surface),
            position: r.parse::<u32>(position, line, "position")?,
            propensity: None,
            experiment: None,
        };
        let event = e.into_event(now).map_err(|e| invalid(&r.file, line, &e))?;
        out.event(event)?;
    }
    Ok(())
}
