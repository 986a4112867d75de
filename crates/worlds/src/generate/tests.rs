//! The generator's tests: determinism, references and times, learnable structure.

use super::jsonl::exact_f64;
use super::*;
use crate::world::VecSink;
use cascade_core::{EventKind, Millis, Target};
use std::collections::{HashMap, HashSet};

const END: Millis = 1_700_000_000_000;

fn small() -> GenerateParams {
    GenerateParams::new(2_000, 300, 20_000, 42, END)
}

fn run(p: &GenerateParams) -> VecSink {
    let mut sink = VecSink::default();
    let counts = generate(p, &mut sink, false).expect("generate");
    assert_eq!(counts.items as usize, sink.items.len());
    assert_eq!(counts.users as usize, sink.users.len());
    assert_eq!(counts.events as usize, sink.events.len());
    sink
}

#[test]
fn same_seed_same_world() {
    let p = small();
    let a = run(&p);
    let b = run(&p);
    assert_eq!(a.items, b.items);
    assert_eq!(a.users, b.users);
    assert_eq!(a.events, b.events);
    let c = run(&GenerateParams {
        seed: 43,
        ..small()
    });
    assert_ne!(a.events, c.events);
}

#[test]
fn counts_references_and_times() {
    let p = small();
    let w = run(&p);
    assert_eq!(w.items.len(), p.items);
    assert_eq!(w.users.len(), p.users);
    let n = w.events.len() as f64;
    let want = p.events as f64;
    assert!(
        (n - want).abs() <= 0.1 * want,
        "{n} events for {want} asked"
    );

    let items: HashSet<&str> = w.items.iter().map(|i| i.id.as_str()).collect();
    let users: HashSet<&str> = w.users.iter().map(|u| u.id.as_str()).collect();
    let creators: HashSet<&str> = w
        .items
        .iter()
        .filter_map(|i| i.creator_id.as_deref())
        .collect();
    let start = p.end_ms - i64::from(p.days) * DAY_MS;
    let mut active = HashSet::new();
    let mut last = i64::MIN;
    for e in &w.events {
        assert!(
            users.contains(e.user_id.as_str()),
            "unknown user {}",
            e.user_id
        );
        match &e.target {
            Target::Item(i) => assert!(items.contains(i.as_str()), "unknown item {i}"),
            Target::Creator(c) => {
                assert_eq!(e.kind, EventKind::Follow);
                assert!(creators.contains(c.as_str()), "unknown creator {c}");
            }
        }
        assert!(e.ts >= start && e.ts < p.end_ms, "ts {} out of range", e.ts);
        assert!(e.ts >= last, "events not sorted by time");
        last = e.ts;
        if let Some(f) = e.fraction {
            assert!((0.0..=1.0).contains(&f));
        }
        active.insert(e.user_id.as_str());
    }
    for u in &w.users {
        for c in &u.follows {
            assert!(
                creators.contains(c.as_str()),
                "user follows unknown creator {c}"
            );
        }
    }
    assert!(active.len() < users.len(), "expected some cold-start users");
    for kind in [
        EventKind::Click,
        EventKind::Like,
        EventKind::Watch,
        EventKind::Skip,
    ] {
        assert!(
            w.events.iter().any(|e| e.kind == kind),
            "no {} events",
            kind.as_str()
        );
    }
    // Every event validates through the API form.
    for e in w.events.iter().take(2_000) {
        let back = event_to_input(e.clone())
            .into_event(e.ts)
            .expect("valid event");
        assert_eq!(&back, e);
    }
    for item in &w.items {
        item.clone().validate(0).expect("valid item");
    }
}

#[test]
fn engagement_concentrates_in_favourite_categories() {
    let p = small();
    let w = run(&p);
    let cat_of: HashMap<&str, &str> = w
        .items
        .iter()
        .map(|i| (i.id.as_str(), i.categories[0].as_str()))
        .collect();
    let mut per_user: HashMap<&str, HashMap<&str, usize>> = HashMap::new();
    for e in &w.events {
        if !matches!(e.kind, EventKind::Click | EventKind::Like) {
            continue;
        }
        if let Target::Item(i) = &e.target {
            let c = cat_of[i.as_str()];
            *per_user
                .entry(e.user_id.as_str())
                .or_default()
                .entry(c)
                .or_default() += 1;
        }
    }
    let shares: Vec<f64> = per_user
        .values()
        .filter_map(|m| {
            let total: usize = m.values().sum();
            let top = m.values().copied().max().unwrap_or(0);
            (total >= 10).then(|| top as f64 / total as f64)
        })
        .collect();
    assert!(
        shares.len() >= 20,
        "only {} users with 10+ clicks/likes",
        shares.len()
    );
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    let baseline = 2.0 / p.categories as f64;
    assert!(
        mean > baseline,
        "top-category share {mean:.3} not above {baseline:.3}"
    );
}

#[test]
fn sessions_repeat_item_transitions() {
    // The fixed related items make some (a → b) transitions recur across users.
    let w = run(&small());
    let mut last: HashMap<&str, &str> = HashMap::new();
    let mut pairs: HashMap<(&str, &str), HashSet<&str>> = HashMap::new();
    for e in &w.events {
        if e.kind != EventKind::Click && e.kind != EventKind::View {
            continue;
        }
        let Target::Item(i) = &e.target else { continue };
        if let Some(prev) = last.insert(e.user_id.as_str(), i.as_str())
            && prev != i.as_str()
        {
            pairs
                .entry((prev, i.as_str()))
                .or_default()
                .insert(e.user_id.as_str());
        }
    }
    let shared = pairs.values().filter(|users| users.len() >= 2).count();
    assert!(shared >= 20, "only {shared} transitions seen by 2+ users");
}

#[test]
fn bad_params_are_rejected() {
    let mut p = small();
    p.days = 0;
    assert!(generate(&p, &mut VecSink::default(), false).is_err());
    let p = GenerateParams::new(0, 10, 100, 1, END);
    assert!(generate(&p, &mut VecSink::default(), false).is_err());
    let p = GenerateParams::new(10, 10, 0, 1, END);
    let w = run(&p);
    assert_eq!(w.items.len(), 10);
    assert!(w.events.is_empty());
}

#[test]
fn category_names_cycle() {
    assert_eq!(category_name(0), "Comedy");
    assert_eq!(category_name(24), "Comedy 2");
    assert_eq!(category_name(25), "Drama 2");
}

#[test]
fn exact_f64_round_trips() {
    for v in [0.1f32, 0.123, 1.0, 37.0, 0.999, 1e-7, 12345.679] {
        let d = exact_f64(v);
        assert_eq!(d as f32, v);
    }
    assert_eq!(exact_f64(0.1), 0.1f64);
}
