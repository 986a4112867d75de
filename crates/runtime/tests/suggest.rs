//! Suggestions through the runtime over a real catalog, MovieLens 1M's titles (when
//! `CASCADE_TEST_MOVIELENS` names the directory `get-movielens` wrote; `.ci/run` sets it):
//! what the feed would not show a user (hidden, deleted, mature without opt-in, hidden by the
//! user, by item or creator) is never suggested, even for queries made of those very titles,
//! whether the answer comes from the full index, the delta or the newest edits; a renamed
//! title is found by its new words and no longer by its old ones.

use cascade_core::{Event, EventKind, Item, ItemPatch, Mutation, Target, User};
use cascade_features::State;
use cascade_features::state::StateConfig;
use cascade_runtime::suggest::{SuggestQuery, Suggestions};
use cascade_suggest::Kind;
use std::collections::HashSet;

fn movielens() -> Option<Vec<Item>> {
    let Ok(dir) = std::env::var("CASCADE_TEST_MOVIELENS") else {
        eprintln!("CASCADE_TEST_MOVIELENS not set: skipping the MovieLens suggestion tests");
        return None;
    };
    let text =
        std::fs::read_to_string(std::path::Path::new(&dir).join("items.csv")).expect("items.csv");
    let items = text
        .lines()
        .skip(1)
        .map(|line| {
            let (id, rest) = line.split_once(',').expect("id");
            let (title, genres) = rest.rsplit_once(',').expect("genres");
            Item {
                id: id.to_string(),
                title: title.trim_matches('"').to_string(),
                categories: genres.split('|').map(str::to_string).collect(),
                tags: Vec::new(),
                creator_id: Some(format!("studio{}", mix(id) % 40)),
                created_at: None,
                attributes: Default::default(),
                hidden: false,
                mature: false,
            }
        })
        .collect();
    Some(items)
}

fn mix(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3)
    })
}

fn event(kind: EventKind, user: &str, target: Target) -> Event {
    Event {
        kind,
        user_id: user.into(),
        target,
        value: 1.0,
        fraction: None,
        ts: 1_000_000,
        request_id: None,
        surface: None,
        position: None,
        propensity: None,
        experiment: None,
    }
}

/// Queries a user might type for `title`: from a word on, cut inside a later word.
fn queries(title: &str, seed: u64) -> Vec<String> {
    let words: Vec<&str> = title.split_whitespace().collect();
    let from = (seed as usize) % words.len().max(1);
    let rest = words[from.min(words.len().saturating_sub(1))..].join(" ");
    let chars: Vec<char> = rest.chars().collect();
    let cut = 1 + (seed as usize / 7) % chars.len().max(1);
    vec![rest.clone(), chars[..cut.min(chars.len())].iter().collect()]
}

struct World {
    state: State,
    /// Items no one may be suggested, mature items, what user `u` hid (items and creators).
    gone: HashSet<String>,
    mature: HashSet<String>,
    hidden_by_u: HashSet<String>,
    titles: Vec<(String, String)>,
}

fn ids(sg: &Suggestions, state: &State, q: &str, user: Option<&str>) -> Vec<String> {
    let query = SuggestQuery {
        q: q.to_string(),
        n: 50,
        kinds: vec![Kind::Item],
        user_id: user.map(str::to_string),
        blocklist: None,
    };
    sg.suggest(state, &query)
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// Every rule, for queries made of forbidden titles and of allowed ones.
fn check(sg: &Suggestions, w: &World, phase: &str) {
    let mut found_mature = 0;
    let mut asked = 0;
    for (n, (id, title)) in w.titles.iter().enumerate() {
        let forbidden = w.gone.contains(id) || w.mature.contains(id) || w.hidden_by_u.contains(id);
        if !forbidden && n % 25 != 0 {
            continue;
        }
        for q in queries(title, mix(id)) {
            asked += 1;
            for (user, bad) in [
                (None, vec![&w.gone, &w.mature]),
                (Some("u"), vec![&w.gone, &w.mature, &w.hidden_by_u]),
                (Some("adult"), vec![&w.gone]),
            ] {
                let got = ids(sg, &w.state, &q, user);
                for g in &got {
                    assert!(
                        !bad.iter().any(|set| set.contains(g)),
                        "{phase}: {q:?} for {user:?} suggested {g}"
                    );
                }
                if user == Some("adult") && w.mature.contains(id) && got.contains(id) {
                    found_mature += 1;
                }
            }
        }
        // An allowed title is found by its full text.
        if !forbidden {
            let got = ids(sg, &w.state, title, None);
            assert!(got.contains(id), "{phase}: {title:?} not found: {got:?}");
        }
    }
    assert!(asked > 1_000, "{phase}: only {asked} queries");
    // Mature titles do reach the user who opted in (the rules are per user, not global).
    assert!(
        found_mature > 50,
        "{phase}: {found_mature} mature titles for the adult"
    );
}

#[test]
fn the_feed_rules_hold_for_movielens_titles_through_every_path() {
    let Some(mut items) = movielens() else { return };
    let mut w = World {
        state: State::new(StateConfig::default()),
        gone: HashSet::new(),
        mature: HashSet::new(),
        hidden_by_u: HashSet::new(),
        titles: Vec::new(),
    };
    for it in &mut items {
        match mix(&it.id) % 13 {
            0 => {
                it.hidden = true;
                w.gone.insert(it.id.clone());
            }
            1 => {
                it.mature = true;
                w.mature.insert(it.id.clone());
            }
            _ => {}
        }
    }
    w.titles = items
        .iter()
        .map(|i| (i.id.clone(), i.title.clone()))
        .collect();
    let st = &w.state;
    st.apply(&Mutation::UpsertItems(items.clone()));
    let adult = User {
        id: "adult".into(),
        attributes: serde_json::json!({"allow_mature": true})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        follows: Vec::new(),
    };
    st.apply(&Mutation::UpsertUsers(vec![
        adult,
        User {
            id: "u".into(),
            attributes: Default::default(),
            follows: Vec::new(),
        },
    ]));
    // Deleted items; user `u` hides items and a studio.
    let mut hides = vec![event(
        EventKind::Hide,
        "u",
        Target::Creator("studio3".into()),
    )];
    for it in &items {
        match mix(&it.id) % 13 {
            2 => {
                st.apply(&Mutation::DeleteItem { id: it.id.clone() });
                w.gone.insert(it.id.clone());
            }
            3 => {
                hides.push(event(EventKind::Hide, "u", Target::Item(it.id.clone())));
                w.hidden_by_u.insert(it.id.clone());
            }
            _ => {}
        }
        if it.creator_id.as_deref() == Some("studio3") {
            w.hidden_by_u.insert(it.id.clone());
        }
    }
    st.apply(&Mutation::Events(hides));
    let sg = Suggestions::build(st);
    check(&sg, &w, "full index");

    // Edits after the build: more items hidden, some made mature, some renamed.
    let mut renamed = Vec::new();
    for (k, it) in items
        .iter()
        .enumerate()
        .filter(|(_, i)| mix(&i.id) % 13 == 4)
    {
        let patch = match k % 3 {
            0 => {
                w.gone.insert(it.id.clone());
                ItemPatch {
                    hidden: Some(true),
                    ..ItemPatch::default()
                }
            }
            1 => {
                w.mature.insert(it.id.clone());
                ItemPatch {
                    mature: Some(true),
                    ..ItemPatch::default()
                }
            }
            _ => {
                let title = format!("Zyzzogeton Chronicle {k}");
                renamed.push((it.id.clone(), it.title.clone(), title.clone()));
                ItemPatch {
                    title: Some(title),
                    ..ItemPatch::default()
                }
            }
        };
        st.apply(&Mutation::PatchItem {
            id: it.id.clone(),
            patch,
        });
    }
    assert!(renamed.len() > 20);
    for t in &mut w.titles {
        if let Some((_, _, new)) = renamed.iter().find(|r| r.0 == t.0) {
            t.1 = new.clone();
        }
    }
    let renames = |sg: &Suggestions, phase: &str| {
        for (id, old, new) in &renamed {
            assert!(
                ids(sg, st, new, None).contains(id),
                "{phase}: {new:?} not found"
            );
            assert!(
                !ids(sg, st, old, None).contains(id),
                "{phase}: {id} still found by its old title {old:?}"
            );
        }
    };
    // The newest edits, matched one by one.
    check(&sg, &w, "newest edits");
    renames(&sg, "newest edits");
    // The same from the delta index.
    assert!(sg.refresh_delta(st));
    assert!(sg.delta_items() > 20);
    check(&sg, &w, "delta");
    renames(&sg, "delta");
    // And from a rebuilt full index, which leaves the delta empty.
    sg.rebuild(st);
    assert_eq!(sg.delta_items(), 0);
    check(&sg, &w, "rebuilt");
    renames(&sg, "rebuilt");
}
