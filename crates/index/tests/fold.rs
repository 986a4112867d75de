//! The item folder keeps the ANN index current between trainings.

use cascade_core::{Event, EventKind, Item, Mutation, Target, TimeInput};
use cascade_features::State;
use cascade_features::state::StateConfig;
use cascade_index::{AlsConfig, AnnConfig, AnnIndex, Interactions, ItemFolder, Models};
use std::sync::Arc;

fn item(n: u32, creator: &str) -> Item {
    Item {
        id: format!("i{n}"),
        title: String::new(),
        categories: vec![],
        tags: vec![],
        creator_id: Some(creator.into()),
        created_at: Some(TimeInput(n as i64)),
        attributes: Default::default(),
        hidden: false,
        mature: false,
    }
}

fn click(user: &str, n: u32) -> Event {
    Event {
        kind: EventKind::Click,
        user_id: user.into(),
        target: Target::Item(format!("i{n}")),
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

/// Two taste groups: users a* click items 0..10 (creator ca), users b* items 10..20 (cb).
fn world() -> (Arc<State>, Models) {
    let state = Arc::new(State::new(StateConfig::default()));
    let items = (0..20)
        .map(|n| item(n, if n < 10 { "ca" } else { "cb" }))
        .collect();
    state.apply(&Mutation::UpsertItems(items));
    let mut events = Vec::new();
    for u in 0..15 {
        for n in 0..10 {
            events.push(click(&format!("a{u}"), n));
            events.push(click(&format!("b{u}"), 10 + n));
        }
    }
    state.apply(&Mutation::Events(events));
    let trained = state.start_fold_log(None);
    assert_eq!(trained, 20);
    let emb = {
        let g = state.read();
        let t = Interactions::engaged(&g).collect();
        let data = Interactions::from_triples(g.users.len(), t);
        let cfg = AlsConfig {
            factors: 8,
            iterations: 8,
            ..Default::default()
        };
        cascade_index::als::train(&data, g.items.len(), &cfg, |_| {})
    };
    let ann =
        AnnIndex::build(&emb.items, emb.dim, AnnConfig::default(), |_| true, |_| {}).expect("ann");
    let models = Models {
        embeddings: Some(Arc::new(emb)),
        ann: Some(Arc::new(ann)),
        ..Default::default()
    };
    (state, models)
}

fn top(models: &Models, user: u32, k: usize) -> Vec<u32> {
    let emb = models.embeddings.as_ref().expect("emb");
    let q = emb.user(user).expect("user vector");
    let ann = models.ann.as_ref().expect("ann");
    ann.search(q, k)
        .expect("search")
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn engaged_new_items_fold_in_cold_ones_borrow_their_creator_and_deleted_ones_leave() {
    let (state, models) = world();
    let mut folder = ItemFolder::new();
    assert_eq!(folder.step(&state, &models).upserted, 0, "nothing new yet");

    // i20: new, engaged by group a. i21: new, by creator cb, engaged by nobody yet.
    state.apply(&Mutation::UpsertItems(vec![item(20, "cx"), item(21, "cb")]));
    let events = (0..15).map(|u| click(&format!("a{u}"), 20)).collect();
    state.apply(&Mutation::Events(events));
    let stats = folder.step(&state, &models);
    assert_eq!(stats.upserted, 2, "{stats:?}");
    let a_user = state.read().users.get("a3").expect("a3");
    let b_user = state.read().users.get("b3").expect("b3");
    assert!(
        top(&models, a_user, 11).contains(&20),
        "folded in next to group a"
    );
    assert!(!top(&models, b_user, 5).contains(&20));
    assert!(
        top(&models, b_user, 11).contains(&21),
        "cold item sits with its creator's"
    );

    // A later engagement re-places i21; a delete takes i20 out of results.
    state.apply(&Mutation::Events(vec![click("b1", 21)]));
    state.apply(&Mutation::DeleteItem { id: "i20".into() });
    let stats = folder.step(&state, &models);
    assert_eq!((stats.upserted, stats.removed), (1, 1), "{stats:?}");
    assert!(!top(&models, a_user, 21).contains(&20));
    assert!(models.ann.as_ref().expect("ann").contains(21));

    // Nothing new: a no-op.
    assert_eq!(folder.step(&state, &models), Default::default());
}
