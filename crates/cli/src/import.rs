//! `cascade import`: reads MovieLens, CSV or JSONL directories into a world sink, in batches.
//!
//! PATH is always a directory. Files are streamed (memory stays bounded by one batch of 10,000
//! records per kind), items first, then users, then events, and every record is validated like
//! the HTTP API does (`Item::validate`, `User::validate`, `EventIn::into_event`). A bad record
//! stops the import with an error naming the file, the line and the field.
//!
//! - `movielens`: `items.csv` (`item_id,title,genres`, genres `|`-separated), `ratings.csv`
//!   (`user_id,item_id,rating,timestamp`, Unix seconds) and optionally `users.csv`
//!   (`user_id,gender,age,occupation,zip`); `movieId`/`userId` headers are accepted too. Ids are
//!   kept as written. Genres become categories, a trailing `(YYYY)` in the title becomes the
//!   `year` attribute, and the users' columns become attributes (`age` as a number).
//!   Ratings map to events as follows:
//!   - rating ≥ 4 → `like`, rating < 4 → `view` (every rating is an implicit positive; the
//!     rating separates strong from weak ones);
//!   - `value` = the rating, usable as a weight;
//!   - timestamp = the rating's Unix seconds × 1000; target = the item.
//!
//!   Items get `created_at` = 978300760000 (2000-12-31T22:12:40Z, the first rating of ML-1M):
//!   MovieLens has no release instant, and leaving it empty would stamp the import time, which
//!   would make every movie appear newer than all of its ratings.
//! - `csv`: any of `items.csv` (`id,title,categories,tags,creator_id,created_at,hidden,mature`;
//!   categories and tags `|`-separated; `created_at` RFC 3339, Unix seconds or empty),
//!   `users.csv` (`id,follows`, follows `|`-separated) and `events.csv`
//!   (`type,user_id,item_id,creator_id,value,fraction,timestamp`, plus optional `request_id`,
//!   `surface`, `position`; empty cells are absent). Only `id` (items, users) and `type`,
//!   `user_id` (events) are required columns. Other columns of items.csv and users.csv become
//!   string attributes; an unknown column in events.csv is an error.
//! - `jsonl`: any of `items.jsonl`, `users.jsonl`, `events.jsonl`, one JSON object per line
//!   (the API bodies; exactly what `cascade generate --out` writes).
//!
//! Events are passed on in file order; nothing is sorted (that would need the whole file).

use crate::world::{Counts, WorldSink};
use anyhow::{Context, anyhow, bail};
use cascade_core::time::now_millis;
use cascade_core::{Event, EventIn, EventKind, FieldError, Item, Millis, TimeInput, User};
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt::Display;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Records per sink call.
const BATCH: usize = 10_000;
/// `created_at` of MovieLens items: the first rating of ML-1M (see the module doc).
const MOVIELENS_START: Millis = 978_300_760_000;

/// Input layout of `cascade import`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// MovieLens as CSV: items.csv, ratings.csv, optional users.csv.
    Movielens,
    /// items.csv, users.csv, events.csv with Cascade's columns.
    Csv,
    /// items.jsonl, users.jsonl, events.jsonl with the API's JSON bodies.
    Jsonl,
}

/// Imports the directory `path` in `format` into `sink`.
pub fn import(
    format: Format,
    path: &Path,
    sink: &mut dyn WorldSink,
    show_progress: bool,
) -> anyhow::Result<Counts> {
    if !path.is_dir() {
        bail!(
            "{} is not a directory (import reads a directory of files)",
            path.display()
        );
    }
    let names: [&str; 3] = match format {
        Format::Movielens => ["items.csv", "users.csv", "ratings.csv"],
        Format::Csv => ["items.csv", "users.csv", "events.csv"],
        Format::Jsonl => ["items.jsonl", "users.jsonl", "events.jsonl"],
    };
    let files: Vec<Option<PathBuf>> = names
        .iter()
        .map(|n| {
            let f = path.join(n);
            f.is_file().then_some(f)
        })
        .collect();
    if format == Format::Movielens {
        for (i, n) in [(0, "items.csv"), (2, "ratings.csv")] {
            if files[i].is_none() {
                bail!(
                    "{} has no {n} (MovieLens needs items.csv and ratings.csv)",
                    path.display()
                );
            }
        }
    }
    if files.iter().all(Option::is_none) {
        bail!("{} holds none of {}", path.display(), names.join(", "));
    }
    let mut total_bytes = 0u64;
    for f in files.iter().flatten() {
        total_bytes += std::fs::metadata(f)
            .with_context(|| format!("reading {}", f.display()))?
            .len();
    }
    let pb = bytes_bar(show_progress, total_bytes);
    let now = now_millis();
    let mut out = Batcher::new(sink);
    for (kind, file) in files.iter().enumerate() {
        let Some(file) = file else { continue };
        match (format, kind) {
            (Format::Movielens, 0) => movielens_items(file, &pb, now, &mut out)?,
            (Format::Movielens, 1) => movielens_users(file, &pb, &mut out)?,
            (Format::Movielens, _) => movielens_ratings(file, &pb, now, &mut out)?,
            (Format::Csv, 0) => csv_items(file, &pb, now, &mut out)?,
            (Format::Csv, 1) => csv_users(file, &pb, &mut out)?,
            (Format::Csv, _) => csv_events(file, &pb, now, &mut out)?,
            (Format::Jsonl, 0) => read_jsonl(file, &pb, |mut item: Item, line| {
                item.validate(now).map_err(|e| invalid(file, line, &e))?;
                out.item(item)
            })?,
            (Format::Jsonl, 1) => read_jsonl(file, &pb, |user: User, line| {
                user.validate().map_err(|e| invalid(file, line, &e))?;
                out.user(user)
            })?,
            (Format::Jsonl, _) => read_jsonl(file, &pb, |e: EventIn, line| {
                let ev = e.into_event(now).map_err(|e| invalid(file, line, &e))?;
                out.event(ev)
            })?,
        }
        // Everything of one kind reaches the sink before the next kind starts.
        out.flush()?;
    }
    pb.finish_and_clear();
    Ok(out.counts)
}

// ---------------------------------------------------------------------------------------------
// Plumbing

/// Accumulates records and hands them to the sink in batches.
struct Batcher<'a> {
    sink: &'a mut dyn WorldSink,
    items: Vec<Item>,
    users: Vec<User>,
    events: Vec<Event>,
    counts: Counts,
}

impl<'a> Batcher<'a> {
    fn new(sink: &'a mut dyn WorldSink) -> Self {
        Self {
            sink,
            items: Vec::new(),
            users: Vec::new(),
            events: Vec::new(),
            counts: Counts::default(),
        }
    }

    fn item(&mut self, item: Item) -> anyhow::Result<()> {
        self.items.push(item);
        self.counts.items += 1;
        if self.items.len() >= BATCH {
            self.sink.items(std::mem::take(&mut self.items))?;
        }
        Ok(())
    }

    fn user(&mut self, user: User) -> anyhow::Result<()> {
        self.users.push(user);
        self.counts.users += 1;
        if self.users.len() >= BATCH {
            self.sink.users(std::mem::take(&mut self.users))?;
        }
        Ok(())
    }

    fn event(&mut self, event: Event) -> anyhow::Result<()> {
        self.events.push(event);
        self.counts.events += 1;
        if self.events.len() >= BATCH {
            self.sink.events(std::mem::take(&mut self.events))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if !self.items.is_empty() {
            self.sink.items(std::mem::take(&mut self.items))?;
        }
        if !self.users.is_empty() {
            self.sink.users(std::mem::take(&mut self.users))?;
        }
        if !self.events.is_empty() {
            self.sink.events(std::mem::take(&mut self.events))?;
        }
        Ok(())
    }
}

/// Counts bytes read into the progress bar.
struct Counting<R> {
    inner: R,
    pb: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pb.inc(n as u64);
        Ok(n)
    }
}

fn open(path: &Path, pb: &ProgressBar) -> anyhow::Result<Counting<File>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Counting {
        inner: f,
        pb: pb.clone(),
    })
}

fn bytes_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "importing [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// A validation error at `file:line`.
fn invalid(file: &Path, line: u64, e: &FieldError) -> anyhow::Error {
    bad_field(file, line, &e.field, &e.message)
}

fn bad_field(file: &Path, line: u64, field: &str, msg: impl Display) -> anyhow::Error {
    anyhow!("{}:{line}: field `{field}`: {msg}", file.display())
}

// ---------------------------------------------------------------------------------------------
// JSONL

/// Calls `each` with every non-blank line parsed as `T` and its 1-based line number.
fn read_jsonl<T: DeserializeOwned>(
    file: &Path,
    pb: &ProgressBar,
    mut each: impl FnMut(T, u64) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut reader = BufReader::with_capacity(1 << 16, open(file, pb)?);
    let mut buf = String::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        line += 1;
        let n = reader
            .read_line(&mut buf)
            .with_context(|| format!("{}:{line}: cannot read the line", file.display()))?;
        if n == 0 {
            return Ok(());
        }
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        let value: T =
            serde_json::from_str(text).map_err(|e| anyhow!("{}:{line}: {e}", file.display()))?;
        each(value, line)?;
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

struct Csv {
    file: PathBuf,
    reader: csv::Reader<Counting<File>>,
    headers: Vec<String>,
    record: csv::StringRecord,
}

impl Csv {
    fn open(file: &Path, pb: &ProgressBar) -> anyhow::Result<Self> {
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
    fn column(&self, names: &[&str]) -> Option<usize> {
        self.headers
            .iter()
            .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
    }

    fn require(&self, names: &[&str]) -> anyhow::Result<usize> {
        self.column(names).ok_or_else(|| {
            anyhow!(
                "{}: missing column `{}`",
                self.file.display(),
                names.join("` or `")
            )
        })
    }

    /// Columns not among `known`, with their names.
    fn others(&self, known: &[&str]) -> Vec<(usize, String)> {
        self.headers
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty() && !known.iter().any(|k| h.eq_ignore_ascii_case(k)))
            .map(|(i, h)| (i, h.clone()))
            .collect()
    }

    /// Reads the next record; returns its line number, or `None` at the end.
    fn next_record(&mut self) -> anyhow::Result<Option<u64>> {
        let more = self
            .reader
            .read_record(&mut self.record)
            .with_context(|| format!("reading {}", self.file.display()))?;
        Ok(more.then(|| self.record.position().map_or(0, csv::Position::line)))
    }

    fn cell(&self, col: Option<usize>) -> &str {
        col.and_then(|i| self.record.get(i)).unwrap_or("")
    }

    fn opt(&self, col: Option<usize>) -> Option<String> {
        let s = self.cell(col);
        (!s.is_empty()).then(|| s.to_string())
    }

    /// Non-empty cells of `cols` as string attributes.
    fn attributes(&self, cols: &[(usize, String)]) -> Map<String, Value> {
        let mut m = Map::new();
        for (i, name) in cols {
            let v = self.cell(Some(*i));
            if !v.is_empty() {
                m.insert(name.clone(), Value::from(v));
            }
        }
        m
    }

    fn parse<T: std::str::FromStr>(
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

    fn time(
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

    fn flag(&self, col: Option<usize>, line: u64, field: &str) -> anyhow::Result<bool> {
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
fn split_list(s: &str) -> Vec<String> {
    s.split('|')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// RFC 3339 or Unix seconds, with the API's rules (both go through `TimeInput`'s parser).
fn parse_time(s: &str) -> Result<TimeInput, String> {
    let v = match s.parse::<f64>() {
        Ok(x) => Value::from(x),
        Err(_) => Value::String(s.to_string()),
    };
    serde_json::from_value::<TimeInput>(v).map_err(|e| e.to_string())
}

const ITEM_COLUMNS: [&str; 8] = [
    "id",
    "title",
    "categories",
    "tags",
    "creator_id",
    "created_at",
    "hidden",
    "mature",
];

fn csv_items(
    file: &Path,
    pb: &ProgressBar,
    now: Millis,
    out: &mut Batcher<'_>,
) -> anyhow::Result<()> {
    let mut r = Csv::open(file, pb)?;
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
        item.validate(now).map_err(|e| invalid(file, line, &e))?;
        out.item(item)?;
    }
    Ok(())
}

fn csv_users(file: &Path, pb: &ProgressBar, out: &mut Batcher<'_>) -> anyhow::Result<()> {
    let mut r = Csv::open(file, pb)?;
    let id = Some(r.require(&["id"])?);
    let follows = r.column(&["follows"]);
    let extra = r.others(&["id", "follows"]);
    while let Some(line) = r.next_record()? {
        let user = User {
            id: r.cell(id).to_string(),
            attributes: r.attributes(&extra),
            follows: split_list(r.cell(follows)),
        };
        user.validate().map_err(|e| invalid(file, line, &e))?;
        out.user(user)?;
    }
    Ok(())
}

const EVENT_COLUMNS: [&str; 10] = [
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

fn csv_events(
    file: &Path,
    pb: &ProgressBar,
    now: Millis,
    out: &mut Batcher<'_>,
) -> anyhow::Result<()> {
    let mut r = Csv::open(file, pb)?;
    if let Some((_, name)) = r.others(&EVENT_COLUMNS).first() {
        bail!(
            "{}: unknown column `{name}` (known: {})",
            file.display(),
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
            return Err(bad_field(file, line, "type", "is empty"));
        }
        let kind: EventKind = serde_json::from_value(Value::String(kind_s.to_string()))
            .map_err(|e| bad_field(file, line, "type", e))?;
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
        let event = e.into_event(now).map_err(|e| invalid(file, line, &e))?;
        out.event(event)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// MovieLens

fn movielens_items(
    file: &Path,
    pb: &ProgressBar,
    now: Millis,
    out: &mut Batcher<'_>,
) -> anyhow::Result<()> {
    let mut r = Csv::open(file, pb)?;
    let id = Some(r.require(&["item_id", "movieId", "movie_id"])?);
    let title_col = r.column(&["title"]);
    let genres = r.column(&["genres", "genre"]);
    while let Some(line) = r.next_record()? {
        let mut item = movielens_item(r.cell(id), r.cell(title_col), r.cell(genres));
        item.validate(now).map_err(|e| invalid(file, line, &e))?;
        out.item(item)?;
    }
    Ok(())
}

/// The year in a MovieLens title such as "Heat (1995)".
fn title_year(title: &str) -> Option<i64> {
    let inner = title.trim_end().strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let year = &inner[open + 1..];
    if year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) {
        year.parse().ok()
    } else {
        None
    }
}

fn movielens_users(file: &Path, pb: &ProgressBar, out: &mut Batcher<'_>) -> anyhow::Result<()> {
    let mut r = Csv::open(file, pb)?;
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
        user.validate().map_err(|e| invalid(file, line, &e))?;
        out.user(user)?;
    }
    Ok(())
}

fn movielens_ratings(
    file: &Path,
    pb: &ProgressBar,
    now: Millis,
    out: &mut Batcher<'_>,
) -> anyhow::Result<()> {
    let mut r = Csv::open(file, pb)?;
    let user = Some(r.require(&["user_id", "userId"])?);
    let item = Some(r.require(&["item_id", "movieId", "movie_id"])?);
    let rating = Some(r.require(&["rating"])?);
    let ts = Some(r.require(&["timestamp"])?);
    while let Some(line) = r.next_record()? {
        let Some(stars) = r.parse::<f64>(rating, line, "rating")? else {
            return Err(bad_field(file, line, "rating", "is empty"));
        };
        let Some(at) = r.time(ts, line, "timestamp")? else {
            return Err(bad_field(file, line, "timestamp", "is empty"));
        };
        let e = rating_event(r.cell(user), r.cell(item), stars, at);
        let event = e.into_event(now).map_err(|e| invalid(file, line, &e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{GenerateParams, JsonlDirSink, generate};
    use crate::world::VecSink;
    use cascade_core::Target;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write test file");
    }

    fn err_text(r: anyhow::Result<Counts>) -> String {
        format!("{:#}", r.expect_err("import should fail"))
    }

    #[test]
    fn generate_jsonl_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = GenerateParams::new(400, 80, 4_000, 9, 1_700_000_000_000);
        let mut direct = VecSink::default();
        generate(&p, &mut direct, false).expect("generate");
        let mut files = JsonlDirSink::create(dir.path()).expect("create");
        generate(&p, &mut files, false).expect("generate to files");
        files.finish().expect("finish");

        let mut back = VecSink::default();
        let counts = import(Format::Jsonl, dir.path(), &mut back, false).expect("import");
        assert_eq!(counts.items as usize, direct.items.len());
        assert_eq!(counts.users as usize, direct.users.len());
        assert_eq!(counts.events as usize, direct.events.len());
        assert_eq!(back.items, direct.items);
        assert_eq!(back.users, direct.users);
        assert_eq!(back.events, direct.events);
    }

    #[test]
    fn movielens_ratings_become_likes_and_views() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(
            d,
            "items.csv",
            "item_id,title,genres\n\
             1,\"American President, The (1995)\",Comedy|Drama|Romance\n\
             2,Toy Story (1995),Animation|Children's|Comedy\n",
        );
        write(
            d,
            "ratings.csv",
            "user_id,item_id,rating,timestamp\n\
             1,1,5,978300760\n\
             1,2,3,978302109\n\
             2,1,4,978301968\n\
             2,2,1,978300275\n",
        );
        write(
            d,
            "users.csv",
            "user_id,gender,age,occupation,zip\n1,F,1,10,48067\n2,M,56,16,70072\n",
        );
        let mut sink = VecSink::default();
        let counts = import(Format::Movielens, d, &mut sink, false).expect("import");
        assert_eq!((counts.items, counts.users, counts.events), (2, 2, 4));

        assert_eq!(sink.items[0].title, "American President, The (1995)");
        assert_eq!(sink.items[0].categories, ["Comedy", "Drama", "Romance"]);
        assert_eq!(sink.items[0].created_at, Some(TimeInput(MOVIELENS_START)));
        assert_eq!(sink.items[0].attributes["year"], 1995);
        assert_eq!(sink.users[1].attributes["gender"], "M");
        assert_eq!(sink.users[1].attributes["age"], 56);
        assert_eq!(sink.users[1].attributes["zip"], "70072");

        let got: Vec<(EventKind, &str, Target, f32, Millis)> = sink
            .events
            .iter()
            .map(|e| (e.kind, e.user_id.as_str(), e.target.clone(), e.value, e.ts))
            .collect();
        let item = |i: &str| Target::Item(i.to_string());
        assert_eq!(
            got,
            vec![
                (EventKind::Like, "1", item("1"), 5.0, 978_300_760_000),
                (EventKind::View, "1", item("2"), 3.0, 978_302_109_000),
                (EventKind::Like, "2", item("1"), 4.0, 978_301_968_000),
                (EventKind::View, "2", item("2"), 1.0, 978_300_275_000),
            ]
        );
    }

    #[test]
    fn movielens_needs_ratings() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "items.csv", "item_id,title,genres\n1,A,Drama\n");
        let msg = err_text(import(
            Format::Movielens,
            dir.path(),
            &mut VecSink::default(),
            false,
        ));
        assert!(msg.contains("ratings.csv"), "{msg}");
    }

    #[test]
    fn csv_import_builds_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(
            d,
            "items.csv",
            "id,title,categories,tags,creator_id,created_at,hidden,mature,language\n\
             a,Alpha,Comedy|Drama,fun,c1,2024-01-01T00:00:00Z,false,true,en\n\
             b,Beta,,,,1700000000,,,\n",
        );
        write(d, "users.csv", "id,follows\nu1,c1|c2\nu2,\n");
        write(
            d,
            "events.csv",
            "type,user_id,item_id,creator_id,value,fraction,timestamp\n\
             watch,u1,a,,30,0.5,1700000100\n\
             follow,u1,,c1,,,1700000200\n",
        );
        let mut sink = VecSink::default();
        let counts = import(Format::Csv, d, &mut sink, false).expect("import");
        assert_eq!((counts.items, counts.users, counts.events), (2, 2, 2));
        let a = &sink.items[0];
        assert_eq!(a.categories, ["Comedy", "Drama"]);
        assert_eq!(a.tags, ["fun"]);
        assert_eq!(a.creator_id.as_deref(), Some("c1"));
        assert_eq!(a.created_at, Some(TimeInput(1_704_067_200_000)));
        assert!(a.mature && !a.hidden);
        assert_eq!(a.attributes["language"], "en");
        assert_eq!(sink.items[1].created_at, Some(TimeInput(1_700_000_000_000)));
        assert!(sink.items[1].attributes.is_empty());
        assert_eq!(sink.users[0].follows, ["c1", "c2"]);
        assert!(sink.users[1].follows.is_empty());
        let w = &sink.events[0];
        assert_eq!(
            (w.kind, w.value, w.fraction, w.ts),
            (EventKind::Watch, 30.0, Some(0.5), 1_700_000_100_000)
        );
        assert_eq!(sink.events[1].target, Target::Creator("c1".to_string()));
    }

    #[test]
    fn bad_csv_rows_name_file_line_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(
            d,
            "events.csv",
            "type,user_id,item_id,creator_id,value,fraction,timestamp\n\
             click,u1,i1,,,,1700000000\n\
             watch,u1,i2,,30,abc,1700000010\n",
        );
        let msg = err_text(import(Format::Csv, d, &mut VecSink::default(), false));
        assert!(msg.contains("events.csv:3"), "{msg}");
        assert!(msg.contains("fraction"), "{msg}");

        write(
            d,
            "events.csv",
            "type,user_id,item_id,creator_id,value,fraction,timestamp\n\
             click,u1,i1,,,,1700000000\n\
             click,u1,i1,,,,1700000000\n\
             follow,u1,i1,,,,1700000000\n",
        );
        let msg = err_text(import(Format::Csv, d, &mut VecSink::default(), false));
        assert!(msg.contains("events.csv:4"), "{msg}");
        assert!(msg.contains("creator_id"), "{msg}");

        std::fs::remove_file(d.join("events.csv")).expect("remove");
        write(d, "items.csv", "id,title,created_at\na,A,\nb,B,yesterday\n");
        let msg = err_text(import(Format::Csv, d, &mut VecSink::default(), false));
        assert!(msg.contains("items.csv:3"), "{msg}");
        assert!(msg.contains("created_at"), "{msg}");

        write(d, "items.csv", "id,title\n,Nameless\n");
        let msg = err_text(import(Format::Csv, d, &mut VecSink::default(), false));
        assert!(msg.contains("items.csv:2"), "{msg}");
        assert!(msg.contains("`id`"), "{msg}");
    }

    #[test]
    fn bad_jsonl_lines_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write(
            d,
            "items.jsonl",
            "{\"id\":\"a\"}\n\n{\"id\":\"b\",\"colour\":\"red\"}\n",
        );
        let msg = err_text(import(Format::Jsonl, d, &mut VecSink::default(), false));
        assert!(msg.contains("items.jsonl:3"), "{msg}");
        assert!(msg.contains("colour"), "{msg}");

        std::fs::remove_file(d.join("items.jsonl")).expect("remove");
        write(
            d,
            "events.jsonl",
            "{\"type\":\"click\",\"user_id\":\"u\"}\n",
        );
        let msg = err_text(import(Format::Jsonl, d, &mut VecSink::default(), false));
        assert!(msg.contains("events.jsonl:1"), "{msg}");
        assert!(msg.contains("item_id"), "{msg}");
    }

    #[test]
    fn empty_or_missing_directories_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let msg = err_text(import(
            Format::Jsonl,
            dir.path(),
            &mut VecSink::default(),
            false,
        ));
        assert!(msg.contains("items.jsonl"), "{msg}");
        let msg = err_text(import(
            Format::Csv,
            &dir.path().join("nope"),
            &mut VecSink::default(),
            false,
        ));
        assert!(msg.contains("not a directory"), "{msg}");
    }

    #[test]
    fn title_years() {
        assert_eq!(title_year("Heat (1995)"), Some(1995));
        assert_eq!(title_year("Heat"), None);
        assert_eq!(
            title_year("City of Lost Children, The (Cité des enfants perdus, La) (1995)"),
            Some(1995)
        );
        assert_eq!(title_year("Alien (Director's cut)"), None);
    }
}
