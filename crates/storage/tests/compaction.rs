//! Log compaction on real segment files: what survives (the catalog, users and lists at their
//! latest state, events within retention, hides and follows at any age), what goes (erased
//! users' and deleted feedback's records, expired events), that sequence numbers after the
//! compacted range are unchanged, and that a compaction cut short at any step leaves a log
//! that opens to the same records.

use cascade_core::{
    EditorialList, Event, EventKind, Item, ItemPatch, Mutation, Target, TimeInput, User,
};
use cascade_storage::{EventLog, LogOptions, Retention, StorageError, compact};
use std::path::Path;

const DAY: i64 = 86_400_000;
const NOW: i64 = 1_800_000_000_000;

fn ev(kind: EventKind, user: &str, item: &str, ts: i64) -> Event {
    Event {
        kind,
        user_id: user.into(),
        target: Target::Item(item.into()),
        value: 1.0,
        fraction: None,
        ts,
        request_id: None,
        surface: None,
        position: None,
        propensity: None,
        experiment: None,
    }
}

fn item(id: &str) -> Item {
    Item {
        id: id.into(),
        title: format!("Title {id}"),
        categories: vec!["Drama".into()],
        tags: vec![],
        creator_id: Some("c1".into()),
        created_at: Some(TimeInput(NOW - 100 * DAY)),
        attributes: Default::default(),
        hidden: false,
        mature: false,
    }
}

fn user(id: &str, locale: &str) -> User {
    User {
        id: id.into(),
        attributes: serde_json::from_str(&format!(r#"{{"locale":"{locale}"}}"#)).expect("json"),
        follows: vec![],
    }
}

fn opts(dir: &Path) -> LogOptions {
    let mut o = LogOptions::new(dir);
    o.fsync = false;
    o
}

/// A log of two closed segments and an open one, with something of every kind.
fn history(dir: &Path) -> (EventLog, Vec<Mutation>) {
    let (mut log, _) = EventLog::open(opts(dir), &mut |_| {}).expect("open");
    let records = vec![
        Mutation::UpsertItems(vec![item("a"), item("b"), item("c")]),
        Mutation::UpsertUsers(vec![user("ana", "pt"), user("bo", "fr")]),
        Mutation::Events(vec![
            ev(EventKind::Like, "ana", "a", NOW - 40 * DAY),
            ev(EventKind::Hide, "bo", "c", NOW - 40 * DAY),
            ev(EventKind::Click, "bo", "a", NOW - 2 * DAY),
        ]),
        Mutation::PatchItem {
            id: "a".into(),
            patch: ItemPatch {
                title: Some("A, retitled".into()),
                ..Default::default()
            },
        },
        Mutation::UpsertEditorial(EditorialList {
            id: "picks".into(),
            title: "Picks".into(),
            items: vec!["a".into()],
            surfaces: vec![],
            starts_at: None,
            ends_at: None,
            boost: 1.0,
            pin: None,
        }),
        Mutation::Events(vec![
            ev(EventKind::Like, "ana", "b", NOW - DAY),
            ev(EventKind::Like, "bo", "b", NOW - DAY),
            ev(EventKind::Watch, "bo", "c", NOW - DAY),
        ]),
        Mutation::DeleteItem { id: "c".into() },
        Mutation::UpsertUsers(vec![user("bo", "de")]),
        Mutation::EraseUser { id: "ana".into() },
        Mutation::DeleteFeedback {
            user_id: "bo".into(),
            item_id: "b".into(),
            kind: None,
        },
        // Only bo's watch of c goes; the hide of c stays.
        Mutation::DeleteFeedback {
            user_id: "bo".into(),
            item_id: "c".into(),
            kind: Some(EventKind::Watch),
        },
        // After the erasure, the id is a new user whose data stays.
        Mutation::Events(vec![ev(EventKind::Click, "ana", "a", NOW)]),
    ];
    for (i, m) in records.iter().enumerate() {
        log.append(m).expect("append");
        if i == 4 {
            log.roll_now().expect("roll");
        }
    }
    log.sync().expect("sync");
    (log, records)
}

fn events_of(all: &[Mutation]) -> Vec<(String, String, EventKind)> {
    all.iter()
        .flat_map(|m| match m {
            Mutation::Events(v) => v.clone(),
            _ => vec![],
        })
        .map(|e| {
            let t = match e.target {
                Target::Item(i) | Target::Creator(i) => i,
            };
            (e.user_id, t, e.kind)
        })
        .collect()
}

fn seg_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

#[test]
fn compaction_keeps_the_latest_state_and_live_events_and_drops_erased_and_expired_ones() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut log, records) = history(tmp.path());
    let cut = log.roll_now().expect("roll");
    assert_eq!(cut.records, records.len() as u64);
    let retention = Retention {
        max_age_ms: Some(30 * DAY),
        max_bytes: None,
    };
    let stats = compact(tmp.path(), cut.closed, NOW, &retention).expect("compact");
    assert_eq!(stats.segments, 2);
    assert_eq!(stats.covers, records.len() as u64);
    assert_eq!(stats.erased_users, 1);
    // Written while compacting: after the compacted range, numbered as before.
    let after = Mutation::Events(vec![ev(EventKind::Like, "bo", "a", NOW)]);
    assert_eq!(log.append(&after).expect("append"), records.len() as u64);
    log.sync().expect("sync");
    drop(log);

    let all = EventLog::read_all(tmp.path()).expect("read");
    let text = format!("{all:?}");
    // Nothing of the erased user before their erasure, nor the erasure itself.
    assert!(!text.contains("\"pt\""), "ana's upsert is gone");
    assert!(!all.iter().any(|m| matches!(m, Mutation::EraseUser { .. })));
    let evs = events_of(&all);
    assert_eq!(
        evs,
        [
            // Bo's hide is 40 days old but is state; bo's like of b was deleted.
            ("bo".to_string(), "c".to_string(), EventKind::Hide),
            ("bo".into(), "a".into(), EventKind::Click),
            ("ana".into(), "a".into(), EventKind::Click),
            ("bo".into(), "a".into(), EventKind::Like),
        ]
    );
    // Items at their latest state, the deleted one gone; bo at their latest upsert.
    let Mutation::UpsertItems(items) = &all[0] else {
        panic!("items first: {:?}", all[0]);
    };
    let titles: Vec<_> = items
        .iter()
        .map(|i| (i.id.as_str(), i.title.as_str()))
        .collect();
    assert_eq!(titles, [("a", "A, retitled"), ("b", "Title b")]);
    let Mutation::UpsertUsers(users) = &all[1] else {
        panic!("users second");
    };
    assert_eq!(users, &vec![user("bo", "de")]);
    assert!(matches!(&all[2], Mutation::UpsertEditorial(l) if l.id == "picks"));

    // Reopening numbers the records after the compacted range as before.
    let mut seqs = Vec::new();
    let (log, stats) =
        EventLog::open_from(opts(tmp.path()), 0, &mut |_, seq| seqs.push(seq)).expect("reopen");
    assert_eq!(log.records(), records.len() as u64 + 1);
    assert_eq!(stats.compacted, records.len() as u64);
    assert_eq!(seqs.last(), Some(&(records.len() as u64)));
    drop(log);
    // A snapshot at or past the compacted range resumes; one inside it cannot.
    let mut applied = 0;
    EventLog::open_from(opts(tmp.path()), records.len() as u64, &mut |_, _| {
        applied += 1
    })
    .expect("resume");
    assert_eq!(applied, 1);
    let err = EventLog::open_from(opts(tmp.path()), 3, &mut |_, _| {}).expect_err("inside");
    assert!(
        matches!(err, StorageError::SnapshotCompacted { .. }),
        "{err}"
    );
}

#[test]
fn a_size_budget_drops_the_oldest_events_first() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut log, _) = EventLog::open(opts(tmp.path()), &mut |_| {}).expect("open");
    for i in 0..100 {
        log.append(&Mutation::Events(vec![ev(
            EventKind::Click,
            &format!("u{i}"),
            "a",
            NOW + i,
        )]))
        .expect("append");
    }
    let cut = log.roll_now().expect("roll");
    let whole = std::fs::metadata(tmp.path().join("00000001.seg"))
        .expect("meta")
        .len();
    let retention = Retention {
        max_age_ms: None,
        max_bytes: Some(whole / 4),
    };
    let stats = compact(tmp.path(), cut.closed, NOW, &retention).expect("compact");
    assert!(stats.events_out > 10 && stats.events_out < 30, "{stats:?}");
    let users: Vec<String> = events_of(&EventLog::read_all(tmp.path()).expect("read"))
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        users.last().map(String::as_str),
        Some("u99"),
        "the newest stay"
    );
    assert!(!users.contains(&"u0".to_string()), "the oldest go");
}

/// A budget cuts inside an earlier compaction's output by position, not by sequence number
/// (all its records share one), and inside its records (each holds many events).
#[test]
fn a_size_budget_over_a_compacted_segment_drops_its_oldest_events() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut log, _) = EventLog::open(opts(tmp.path()), &mut |_| {}).expect("open");
    let click = |who: &str, i: i64| Mutation::Events(vec![ev(EventKind::Click, who, "a", NOW + i)]);
    for i in 0..100 {
        log.append(&click(&format!("u{i}"), i)).expect("append");
    }
    let first = log.roll_now().expect("roll");
    compact(tmp.path(), first.closed, NOW, &Retention::default()).expect("compact");
    let compacted = std::fs::metadata(tmp.path().join(format!("{:08}.seg", first.closed)))
        .expect("meta")
        .len();
    for i in 0..100 {
        log.append(&click(&format!("v{i}"), 100 + i))
            .expect("append");
    }
    let second = log.roll_now().expect("roll");
    let fresh = std::fs::metadata(tmp.path().join(format!("{:08}.seg", second.closed)))
        .expect("meta")
        .len();
    drop(log);
    // Room for every new event and about half of the compacted ones.
    let retention = Retention {
        max_age_ms: None,
        max_bytes: Some(fresh + compacted / 2),
    };
    let stats = compact(tmp.path(), second.closed, NOW, &retention).expect("again");
    let users: Vec<String> = events_of(&EventLog::read_all(tmp.path()).expect("read"))
        .into_iter()
        .map(|e| e.0)
        .collect();
    let old = users.iter().filter(|u| u.starts_with('u')).count();
    assert_eq!(
        users.iter().filter(|u| u.starts_with('v')).count(),
        100,
        "{stats:?}"
    );
    assert!(
        (25..=75).contains(&old),
        "{old} of the compacted events kept: {stats:?}"
    );
    assert!(users.contains(&"u99".to_string()), "the newest stay");
    assert!(!users.contains(&"u0".to_string()), "the oldest go");
}

#[test]
fn a_compaction_cut_short_at_any_step_opens_to_the_same_records() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut log, _) = history(tmp.path());
    let cut = log.roll_now().expect("roll");
    drop(log);
    let before = EventLog::read_all(tmp.path()).expect("read");
    // Cut short before the rename: its output is still a temporary file.
    std::fs::write(tmp.path().join("compact.tmp"), b"CSCLOG02 half written").expect("tmp");
    let (log, _) = EventLog::open(opts(tmp.path()), &mut |_| {}).expect("open");
    drop(log);
    assert_eq!(EventLog::read_all(tmp.path()).expect("read"), before);
    assert!(!tmp.path().join("compact.tmp").exists());

    // Cut short after the rename, before the older segments went: they are leftovers.
    let first = std::fs::read(tmp.path().join("00000001.seg")).expect("first");
    compact(tmp.path(), cut.closed, NOW, &Retention::default()).expect("compact");
    let compacted = EventLog::read_all(tmp.path()).expect("read");
    std::fs::write(tmp.path().join("00000001.seg"), first).expect("leftover");
    assert_eq!(EventLog::read_all(tmp.path()).expect("read"), compacted);
    let mut seen = Vec::new();
    let (log, _) = EventLog::open(opts(tmp.path()), &mut |m| seen.push(m)).expect("reopen");
    assert_eq!(seen, compacted);
    assert_eq!(log.records(), cut.records);
    drop(log);
    assert_eq!(
        seg_files(tmp.path()),
        ["00000002.seg", "00000003.seg"],
        "the leftover was removed"
    );
    // A second compaction over the first keeps what it kept.
    let (mut log, _) = EventLog::open(opts(tmp.path()), &mut |_| {}).expect("reopen");
    let cut2 = log.roll_now().expect("roll");
    drop(log);
    compact(tmp.path(), cut2.closed, NOW, &Retention::default()).expect("again");
    assert_eq!(EventLog::read_all(tmp.path()).expect("read"), compacted);
}
