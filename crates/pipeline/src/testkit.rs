//! Small real worlds for component tests (enabled by the `testkit` feature).

use crate::{CpuPool, Env, Query, RequestCtx};
use cascade_core::{Event, EventKind, Item, Millis, Mutation, Target, TimeInput, User};
use cascade_features::{State, state::StateConfig};
use cascade_index::{
    AlsConfig, CoVisConfig, CoVisitation, Interactions, ModelStore, Models, PopularLists,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An item `i{n}` in category `cat`, by creator `creator`.
pub fn item(n: u32, cat: &str, creator: &str) -> Item {
    Item {
        id: format!("i{n}"),
        title: format!("Title {n}"),
        categories: vec![cat.to_string()],
        tags: vec![],
        creator_id: Some(creator.to_string()),
        created_at: Some(TimeInput(0)),
        attributes: Default::default(),
        hidden: false,
        mature: false,
    }
}

/// An event of `user` on item `i{n}` at `ts_s` seconds.
pub fn event(kind: EventKind, user: &str, n: u32, ts_s: i64) -> Event {
    Event {
        kind,
        user_id: user.to_string(),
        target: Target::Item(format!("i{n}")),
        value: 1.0,
        fraction: None,
        ts: ts_s * 1000,
        request_id: None,
        surface: None,
        position: None,
        propensity: None,
        experiment: None,
    }
}

/// Applies the mutations, builds popular lists and co-visitation, and wires an [`Env`].
pub fn world(items: Vec<Item>, users: Vec<User>, events: Vec<Event>) -> Env {
    let state = Arc::new(State::with_segments(
        StateConfig::default(),
        vec!["locale".into(), "age_band".into()],
    ));
    state.apply(&Mutation::UpsertItems(items));
    if !users.is_empty() {
        state.apply(&Mutation::UpsertUsers(users));
    }
    if !events.is_empty() {
        state.apply(&Mutation::Events(events));
    }
    let (popular, covis, embeddings) = {
        let g = state.read();
        let seqs = CoVisitation::sequences(&g, 500);
        let cfg = CoVisConfig {
            popularity_exponent: 0.0,
            ..Default::default()
        };
        let triples = Interactions::engaged(&g).collect();
        let data = Interactions::from_triples(g.users.len(), triples);
        let als = AlsConfig {
            factors: 8,
            iterations: 10,
            ..Default::default()
        };
        (
            PopularLists::build_live(&g, 100, 20),
            CoVisitation::build(&seqs, g.items.len(), &cfg),
            cascade_index::als::train(&data, g.items.len(), &als, |_| {}),
        )
    };
    let ann = cascade_index::AnnIndex::build(
        &embeddings.items,
        embeddings.dim,
        cascade_index::AnnConfig::default(),
        |_| true,
        |_| {},
    )
    .unwrap_or_else(|e| panic!("ann: {e}"));
    let models = Models {
        version: "test".into(),
        popular: Arc::new(popular),
        covis: Arc::new(covis),
        embeddings: Some(Arc::new(embeddings)),
        ann: Some(Arc::new(ann)),
        item_neighbors: Default::default(),
        ranker: None,
    };
    let pool = CpuPool::new(1).unwrap_or_else(|e| panic!("pool: {e}"));
    Env::new(state, Arc::new(ModelStore::new(models)), Arc::new(pool))
}

/// A request context for `query` with a generous deadline.
pub fn ctx(env: &Env, query: Query) -> RequestCtx {
    let now = Instant::now();
    RequestCtx::build(env, query, now, now + Duration::from_secs(5))
}

/// A query at `now_s` seconds.
pub fn query(user: &str, n: usize, now_s: Millis) -> Query {
    Query::new("test", user, n, now_s * 1000)
}
