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

/// Account age in days (since the user's first event) of each event in `[lo, hi)`, and the
/// oldest age over the whole log.
fn account_ages(w: &VecSink, lo: Millis, hi: Millis) -> (Vec<f64>, Millis) {
    let mut first: HashMap<&str, Millis> = HashMap::new();
    for e in &w.events {
        first.entry(&e.user_id).or_insert(e.ts);
    }
    let age = |e: &cascade_core::Event| e.ts - first[e.user_id.as_str()];
    let oldest = w.events.iter().map(age).max().unwrap_or(0);
    let ages = w
        .events
        .iter()
        .filter(|e| e.ts >= lo && e.ts < hi)
        .map(|e| age(e) as f64 / 86_400_000.0)
        .collect();
    (ages, oldest)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[test]
fn with_arrivals_and_departures_account_ages_hold_still() {
    let p = GenerateParams {
        lifetime_days: Some(10),
        ..GenerateParams::new(2_000, 3_000, 60_000, 42, END)
    };
    let w = run(&p);
    let start = p.start_ms();
    let period = END - start;
    // Fewer events than asked: the parts of stays outside the period are not in the log.
    let expect = 60_000.0 * 42.0 / 52.0;
    let n = w.events.len() as f64;
    assert!(
        (n - expect).abs() < 0.25 * expect,
        "{n} events, about {expect}"
    );
    // No one is older than their stay, and the mean age does not grow with the period (it
    // wobbles with a few heavy users: loosely).
    let (q3, q4) = (start + period / 2, start + period * 3 / 4);
    let (mid, oldest) = account_ages(&w, q3, q4);
    let (late, _) = account_ages(&w, q4, END);
    assert!(oldest <= 10 * 86_400_000, "{oldest} ms");
    let (mid, late) = (mean(&mid), mean(&late));
    assert!(
        late < 1.2 * mid && late > 0.5 * mid,
        "account age {mid:.2} days mid-period, {late:.2} late"
    );
    // The default world ages with its users.
    let d = run(&GenerateParams::new(2_000, 3_000, 60_000, 42, END));
    let late_default = mean(&account_ages(&d, q4, END).0);
    assert!(late_default > 2.0 * late, "{late_default:.2} vs {late:.2}");
}
