//! What every component sees of a request, built once per request.

use cascade_core::{Idx, Millis};
use cascade_features::{FeatureStore, Inner, State, UserState, UserView};
use cascade_index::{ModelStore, Models, PopularLists};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::breaker::Breakers;
use crate::cpu::CpuPool;
use crate::faults::Faults;

/// The request's context as sent by the client.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RequestContext {
    pub device: Option<String>,
    pub locale: Option<String>,
}

/// A validated recommendation request.
#[derive(Debug, Clone)]
pub struct Query {
    pub request_id: String,
    pub surface: String,
    pub user_id: String,
    pub n: usize,
    /// "Now" for the whole pipeline: features read only what happened before it.
    pub now: Millis,
    /// Whether `now` came from the client (replay) rather than the wall clock.
    pub now_from_client: bool,
    pub context: RequestContext,
    pub session_item_ids: Vec<String>,
    pub exclude: Vec<String>,
    pub explain: bool,
    /// The experiment arm serving this request, `name:arm` (logged with its impressions).
    pub experiment: Option<String>,
}

impl Query {
    /// A request with defaults for everything but who, where, how many and when.
    pub fn new(surface: &str, user_id: &str, n: usize, now: Millis) -> Self {
        Self {
            request_id: String::new(),
            surface: surface.to_string(),
            user_id: user_id.to_string(),
            n,
            now,
            now_from_client: true,
            context: RequestContext::default(),
            session_item_ids: Vec::new(),
            exclude: Vec::new(),
            explain: false,
            experiment: None,
        }
    }
}

/// Shared, long-lived dependencies of every pipeline.
#[derive(Debug)]
pub struct Env {
    pub state: Arc<State>,
    pub models: Arc<ModelStore>,
    pub pool: Arc<CpuPool>,
    /// How many items popular lists hold.
    pub popular_size: usize,
    pub popular_per_category: usize,
    /// Injected dependency faults (chaos tests, game days).
    pub faults: Arc<Faults>,
    /// Circuit breakers of the dependencies, shared by every request.
    pub breakers: Arc<Breakers>,
    /// The remote online feature store the user's features are read from (one round trip per
    /// request); `None` reads this replica's own state under its lock.
    pub store: Option<Arc<dyn FeatureStore>>,
}

impl Env {
    /// The same environment serving `models` instead (an experiment arm's pinned bundle, a
    /// bundle under validation); state, pool, faults and breakers are shared.
    pub fn with_models(&self, models: Arc<ModelStore>) -> Self {
        Self {
            state: self.state.clone(),
            models,
            pool: self.pool.clone(),
            popular_size: self.popular_size,
            popular_per_category: self.popular_per_category,
            faults: self.faults.clone(),
            breakers: self.breakers.clone(),
            store: self.store.clone(),
        }
    }

    /// Wires an environment, building the first models from `state`.
    pub fn new(state: Arc<State>, models: Arc<ModelStore>, pool: Arc<CpuPool>) -> Self {
        Self {
            state,
            models,
            pool,
            popular_size: 1000,
            popular_per_category: 200,
            faults: Arc::default(),
            breakers: Arc::default(),
            store: None,
        }
    }
}

/// Everything a component may read about the current request.
#[derive(Debug)]
pub struct RequestCtx {
    pub query: Query,
    pub user: UserView,
    /// The user's features as the remote store returned them (with this replica's profile
    /// attributes and segments); `None` when they are read from the local state.
    pub remote: Option<Box<UserState>>,
    /// Resolved `session_item_ids` (unknown ids dropped), oldest first.
    pub session: Vec<Idx>,
    /// Resolved `exclude`, sorted.
    pub exclude: Vec<Idx>,
    pub state: Arc<State>,
    pub models: Arc<Models>,
    /// Popular lists as of `query.now` (point-in-time when replaying the past).
    pub popular: Arc<PopularLists>,
    /// Whether `now` is the present: at or after every engagement in the state, so live
    /// aggregates may be read. False when a client-supplied time replays the past.
    pub live: bool,
    pub started: Instant,
    pub deadline: Instant,
    pub faults: Arc<Faults>,
    /// Set when the feature store did not answer in time: store-backed hydrators are
    /// skipped (declared defaults) and so is the heavy ranker (pre-ranker only).
    pub features_down: AtomicBool,
    /// Set when the heavy ranker did not answer in time: the pre-ranker's order stands.
    pub ranker_down: AtomicBool,
}

/// How many recent interactions are copied into the user view.
pub const RECENT_INTERACTIONS: usize = 50;

impl RequestCtx {
    /// Builds the context: one short read lock on the state, no `.await`.
    pub fn build(env: &Env, query: Query, started: Instant, deadline: Instant) -> Self {
        Self::build_with(env, query, None, started, deadline)
    }

    /// [`RequestCtx::build`] with the user's features as a remote store returned them.
    pub fn build_with(
        env: &Env,
        query: Query,
        mut remote: Option<Box<UserState>>,
        started: Instant,
        deadline: Instant,
    ) -> Self {
        let models = env.models.load();
        let (user, session, mut exclude, live) = {
            let g = env.state.read();
            // The server clock is the present by definition (events may carry a client clock a
            // little ahead, or fall in the same second): a live request sees everything applied.
            // Only a client-supplied time can ask for the past.
            let live = !query.now_from_client || query.now >= g.watermark;
            let view_until = if live { Millis::MAX } else { query.now };
            let mut user = match remote.as_deref_mut() {
                Some(r) => {
                    // Profile data (attributes, segments) is catalog, replicated to every
                    // replica; the store holds what events change.
                    let idx = g.users.get(&query.user_id);
                    if let Some(local) = idx.and_then(|u| g.user(u)) {
                        r.known = local.known;
                        r.attributes = local.attributes.clone();
                        r.segments = local.segments.clone();
                    }
                    r.view(idx, view_until, RECENT_INTERACTIONS)
                }
                None => g.user_view(&query.user_id, view_until, RECENT_INTERACTIONS),
            };
            // The request's locale counts as a segment too: a user without a profile (cold
            // start) still gets what is popular where they are.
            if let Some(locale) = query.context.locale.as_deref()
                && let Some(seg) = g.segments.get(&format!("locale={locale}"))
                && !user.segments.contains(&seg)
            {
                user.segments.push(seg);
            }
            let session: Vec<Idx> = query
                .session_item_ids
                .iter()
                .filter_map(|id| g.items.get(id))
                .collect();
            let exclude: Vec<Idx> = query
                .exclude
                .iter()
                .filter_map(|id| g.items.get(id))
                .collect();
            (user, session, exclude, live)
        };
        exclude.sort_unstable();
        exclude.dedup();
        let popular = if live || query.now >= models.popular.as_of {
            models.popular.clone()
        } else {
            // Replaying the past: only engagements before `now` may count. Rounded down to
            // the minute so replayed requests share one cached list.
            let key = query.now - query.now.rem_euclid(60_000);
            env.models.popular_at(key, || {
                let g = env.state.read();
                PopularLists::build_at(&g, key, env.popular_size, env.popular_per_category)
            })
        };
        Self {
            query,
            user,
            remote,
            session,
            exclude,
            state: env.state.clone(),
            models,
            popular,
            live,
            started,
            deadline,
            faults: env.faults.clone(),
            features_down: AtomicBool::new(false),
            ranker_down: AtomicBool::new(false),
        }
    }

    /// The user's features: the remote store's copy when the request read one, else the
    /// replica's own (from the guard the caller holds).
    pub fn user_state<'a>(&'a self, g: &'a Inner) -> Option<&'a UserState> {
        match &self.remote {
            Some(r) => Some(r),
            None => self.user.idx.and_then(|u| g.user(u)),
        }
    }

    /// Whether the request's deadline has passed; long loops check it.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Whether the item is in the request's `exclude` list.
    pub fn excluded(&self, item: Idx) -> bool {
        self.exclude.binary_search(&item).is_ok()
    }
}
