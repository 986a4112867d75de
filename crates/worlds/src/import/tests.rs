//! The importers' tests: every format, bad records named by file, line and field.

use super::*;
use crate::generate::{GenerateParams, JsonlDirSink, generate};
use crate::world::VecSink;
use cascade_core::Target;
use cascade_core::{EventKind, Millis, TimeInput};

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
