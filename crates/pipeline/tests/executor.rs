//! The executor's guarantees: concurrent sources under deadlines, merge and budget,
//! fail-open / fail-closed, and the popular fallback. One file: the executor's contract, read
//! rung by rung, over one small world.

use async_trait::async_trait;
use cascade_core::{Event, EventKind, Item, Mutation, Target, TimeInput};
use cascade_features::{FeatureDef, FeatureSchema, State, state::StateConfig};
use cascade_index::{ModelStore, Models, PopularLists};
use cascade_pipeline::{
    Candidate, CandidateSource, Candidates, ComponentError, CpuPool, Env, Explainer, FailMode,
    Filter, Hit, Pipeline, Query, Reason, Removal, RequestCtx, Scorer, Selector, SourceSlot,
    StageBudgets,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(items: usize) -> Env {
    let state = Arc::new(State::new(StateConfig::default()));
    let items: Vec<Item> = (0..items)
        .map(|i| Item {
            id: format!("i{i}"),
            title: format!("t{i}"),
            categories: vec!["C".into()],
            tags: vec![],
            creator_id: None,
            created_at: Some(TimeInput(0)),
            attributes: Default::default(),
            hidden: false,
            mature: false,
        })
        .collect();
    state.apply(&Mutation::UpsertItems(items));
    // Popularity: i0 most clicked.
    let clicks: Vec<Event> = (0..10)
        .flat_map(|i| {
            (0..(10 - i)).map(move |k| Event {
                kind: EventKind::Click,
                user_id: format!("x{k}"),
                target: Target::Item(format!("i{i}")),
                value: 1.0,
                fraction: None,
                ts: 1000,
                request_id: None,
                surface: None,
                position: None,
                propensity: None,
                experiment: None,
            })
        })
        .collect();
    state.apply(&Mutation::Events(clicks));
    let popular = PopularLists::build_live(&state.read(), 100, 10);
    let models = ModelStore::new(Models {
        version: "test".into(),
        popular: Arc::new(popular),
        covis: Default::default(),
        embeddings: None,
        ann: None,
        item_neighbors: Default::default(),
        ranker: None,
    });
    Env::new(
        state,
        Arc::new(models),
        Arc::new(CpuPool::new(2).expect("pool")),
    )
}

struct Fixed(&'static str, Vec<u32>);
#[async_trait]
impl CandidateSource for Fixed {
    fn name(&self) -> &str {
        self.0
    }
    fn reason_code(&self) -> &'static str {
        "popular"
    }
    async fn retrieve(&self, _: &RequestCtx, limit: usize) -> Result<Vec<Hit>, ComponentError> {
        Ok(self
            .1
            .iter()
            .take(limit)
            .enumerate()
            .map(|(r, &i)| Hit::new(i, 100.0 - r as f32))
            .collect())
    }
}

struct Slow;
#[async_trait]
impl CandidateSource for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    fn reason_code(&self) -> &'static str {
        "popular"
    }
    async fn retrieve(&self, _: &RequestCtx, _: usize) -> Result<Vec<Hit>, ComponentError> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(vec![Hit::new(9, 1.0)])
    }
}

struct Broken;
#[async_trait]
impl CandidateSource for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn reason_code(&self) -> &'static str {
        "popular"
    }
    async fn retrieve(&self, _: &RequestCtx, _: usize) -> Result<Vec<Hit>, ComponentError> {
        Err(ComponentError::Unavailable("index".into()))
    }
}

/// Errors every time, with the given failure mode.
struct FailingFilter(FailMode);
impl Filter for FailingFilter {
    fn name(&self) -> &str {
        "failing"
    }
    fn fail_mode(&self) -> FailMode {
        self.0
    }
    fn filter(&self, _: &RequestCtx, _: &Candidates) -> Result<Vec<Removal>, ComponentError> {
        Err(ComponentError::Failed("store down".into()))
    }
}

/// Removes odd items.
struct NoOdd;
impl Filter for NoOdd {
    fn name(&self) -> &str {
        "no_odd"
    }
    fn filter(&self, _: &RequestCtx, c: &Candidates) -> Result<Vec<Removal>, ComponentError> {
        Ok(c.items
            .iter()
            .enumerate()
            .filter(|(_, c)| c.item % 2 == 1)
            .map(|(index, _)| Removal {
                index,
                reason: "odd",
            })
            .collect())
    }
}

/// Scores by the best source score.
struct SourceScore;
impl Scorer for SourceScore {
    fn name(&self) -> &str {
        "source_score"
    }
    fn score(&self, _: &RequestCtx, c: &Candidates, out: &mut [f32]) -> Result<(), ComponentError> {
        for (o, c) in out.iter_mut().zip(&c.items) {
            *o = c.source_scores.iter().copied().fold(0.0, f32::max);
        }
        Ok(())
    }
}

struct Sort;
impl Selector for Sort {
    fn name(&self) -> &str {
        "sort"
    }
    fn select(&self, _: &RequestCtx, c: &mut Candidates) -> Result<(), ComponentError> {
        c.items
            .sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        Ok(())
    }
}

struct Plain;
impl Explainer for Plain {
    fn explain(&self, _: &RequestCtx, c: &Candidate, _: &[SourceSlot]) -> Reason {
        Reason {
            code: "test",
            text: format!("item {}", c.item),
        }
    }
}

fn pipeline(
    sources: Vec<Arc<dyn CandidateSource>>,
    filters: Vec<Arc<dyn Filter>>,
    budget_ms: u64,
    candidates: usize,
) -> Arc<Pipeline> {
    Arc::new(Pipeline {
        surface: "test".into(),
        sources: sources
            .into_iter()
            .map(|source| SourceSlot {
                source,
                limit: 100,
                timeout: Duration::from_millis(30),
                protected: false,
            })
            .collect(),
        candidate_budget: candidates,
        schema: Arc::new(FeatureSchema::new(vec![FeatureDef::new("f", 0.5)])),
        hydrators: vec![],
        filters,
        prerank: None,
        prerank_keep: 1000,
        scorers: vec![Arc::new(SourceScore)],
        selectors: vec![Arc::new(Sort)],
        explainer: Arc::new(Plain),
        side_effects: vec![],
        fallback: true,
        budgets: StageBudgets {
            total: Duration::from_millis(budget_ms),
            hydrate: Duration::from_millis(20),
            rank: Duration::from_millis(20),
        },
    })
}

fn items(r: &cascade_pipeline::PipelineResult) -> Vec<u32> {
    r.items.iter().map(|c| c.item).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_dedupes_and_keeps_every_source_score() {
    let env = env(40);
    let p = pipeline(
        vec![
            Arc::new(Fixed("a", vec![2, 4, 6])),
            Arc::new(Fixed("b", vec![6, 8])),
        ],
        vec![],
        200,
        100,
    );
    let r = p.execute(&env, Query::new("test", "u", 10, 10_000)).await;
    assert_eq!(r.degraded, Vec::<String>::new());
    let six = r.items.iter().find(|c| c.item == 6).expect("6 merged");
    assert!(six.has_source(0) && six.has_source(1));
    assert_eq!((six.source_ranks[0], six.source_ranks[1]), (2, 0));
    assert_eq!(r.items.iter().filter(|c| c.item == 6).count(), 1, "deduped");
    assert_eq!(items(&r)[..4], [2, 6, 4, 8]);
    assert_eq!(r.reasons.len(), r.items.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_budget_keeps_each_sources_best() {
    let env = env(40);
    let a: Vec<u32> = (0..10).collect();
    let b: Vec<u32> = (20..30).collect();
    let p = pipeline(
        vec![Arc::new(Fixed("a", a)), Arc::new(Fixed("b", b))],
        vec![],
        200,
        6,
    );
    let r = p.execute(&env, Query::new("test", "u", 40, 10_000)).await;
    let got: Vec<u32> = r
        .items
        .iter()
        .filter(|c| c.sources != 0)
        .map(|c| c.item)
        .collect();
    assert_eq!(got.len(), 6);
    for top in [0, 1, 2, 20, 21, 22] {
        assert!(got.contains(&top), "{top} missing from {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_broken_sources_are_dropped_and_named() {
    let env = env(40);
    let p = pipeline(
        vec![
            Arc::new(Fixed("ok", vec![4, 6])),
            Arc::new(Slow),
            Arc::new(Broken),
        ],
        vec![],
        200,
        100,
    );
    let t = Instant::now();
    let r = p.execute(&env, Query::new("test", "u", 2, 10_000)).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the slow source was awaited"
    );
    assert_eq!(items(&r), vec![4, 6]);
    assert!(
        r.degraded.contains(&"source:slow:timeout".to_string()),
        "{:?}",
        r.degraded
    );
    assert!(
        r.degraded.contains(&"source:broken:error".to_string()),
        "{:?}",
        r.degraded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_deadline_bounds_the_request() {
    let env = env(40);
    let mut p = pipeline(
        vec![Arc::new(Slow), Arc::new(Fixed("ok", vec![2]))],
        vec![],
        40,
        100,
    );
    Arc::get_mut(&mut p).expect("unique").sources[0].timeout = Duration::from_secs(10);
    let t = Instant::now();
    let r = p.execute(&env, Query::new("test", "u", 3, 10_000)).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(r.degraded.contains(&"source:slow:timeout".to_string()));
    assert_eq!(r.items.len(), 3, "padded to n from the popular list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_filters_remove_everything_fail_open_skip() {
    let env = env(40);
    let closed = pipeline(
        vec![Arc::new(Fixed("a", vec![2, 4]))],
        vec![Arc::new(FailingFilter(FailMode::Closed))],
        200,
        100,
    );
    let r = closed
        .execute(&env, Query::new("test", "u", 5, 10_000))
        .await;
    assert!(
        r.items.is_empty(),
        "nothing unverified may be shown: {:?}",
        items(&r)
    );
    assert!(r.degraded.contains(&"filter:failing:error".to_string()));
    let open = pipeline(
        vec![Arc::new(Fixed("a", vec![2, 4]))],
        vec![Arc::new(FailingFilter(FailMode::Open))],
        200,
        100,
    );
    let r = open.execute(&env, Query::new("test", "u", 2, 10_000)).await;
    assert_eq!(items(&r), vec![2, 4]);
    assert!(r.degraded.contains(&"filter:failing:error".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_sources_fall_back_to_popular_through_the_filters() {
    let env = env(40);
    let p = pipeline(
        vec![Arc::new(Fixed("none", vec![]))],
        vec![Arc::new(NoOdd)],
        200,
        100,
    );
    let mut q = Query::new("test", "u", 4, 10_000);
    q.explain = true;
    let r = p.execute(&env, q).await;
    // Popular order is i0 > i1 > ... ; odd ones are filtered out on the fallback too.
    assert_eq!(items(&r), vec![0, 2, 4, 6]);
    assert!(r.items.iter().all(|c| c.sources == 0));
    assert!(r.degraded.contains(&"fallback:popular".to_string()));
    assert!(
        r.removed
            .iter()
            .any(|(i, by, why)| *i == 1 && by == "no_odd" && *why == "odd")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_candidate_budget_is_spent_after_the_filters() {
    let env = env(40);
    let all: Vec<u32> = (0..20).collect();
    let p = pipeline(
        vec![Arc::new(Fixed("a", all))],
        vec![Arc::new(NoOdd)],
        200,
        5,
    );
    let mut q = Query::new("test", "u", 10, 10_000);
    q.n = 10;
    let r = p.execute(&env, q).await;
    let from_source: Vec<u32> = r
        .items
        .iter()
        .filter(|c| c.sources != 0)
        .map(|c| c.item)
        .collect();
    assert_eq!(
        from_source,
        vec![0, 2, 4, 6, 8],
        "five showable candidates, not five minus the filtered"
    );
}

/// Reverses the order it is given (the heavy stage), or fails.
struct Reverse(bool);
impl Scorer for Reverse {
    fn name(&self) -> &str {
        "reverse"
    }
    fn score(&self, _: &RequestCtx, c: &Candidates, out: &mut [f32]) -> Result<(), ComponentError> {
        if self.0 {
            return Err(ComponentError::Unavailable("ranker".into()));
        }
        assert!(
            c.items.len() <= 3,
            "the heavy stage sees only the pre-ranker's survivors"
        );
        for (o, c) in out.iter_mut().zip(&c.items) {
            *o = -c.score;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_ranker_cuts_and_a_failing_heavy_ranker_leaves_its_order() {
    let env = env(40);
    let build = |fail: bool| {
        let mut p = Arc::try_unwrap(pipeline(
            vec![Arc::new(Fixed("a", vec![1, 2, 3, 4, 5, 6]))],
            vec![],
            200,
            100,
        ))
        .expect("sole owner");
        p.prerank = Some(Arc::new(SourceScore));
        p.prerank_keep = 3;
        p.scorers = vec![Arc::new(Reverse(fail))];
        Arc::new(p)
    };
    let r = build(false)
        .execute(&env, Query::new("test", "u", 10, 10_000))
        .await;
    // Pre-ranker keeps 1, 2, 3 (best source scores); the heavy stage reverses them.
    assert_eq!(items(&r)[..3], [3, 2, 1]);
    assert!(r.degraded.is_empty(), "{:?}", r.degraded);
    let r = build(true)
        .execute(&env, Query::new("test", "u", 10, 10_000))
        .await;
    assert_eq!(items(&r)[..3], [1, 2, 3], "pre-ranker order stands");
    assert_eq!(r.degraded, vec!["scorer:reverse:unavailable".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_ranker_leaves_retrieval_score_order() {
    let env = env(40);
    let mut p = Arc::try_unwrap(pipeline(
        vec![Arc::new(Fixed("a", vec![7, 3, 9, 1]))],
        vec![],
        200,
        100,
    ))
    .expect("sole owner");
    p.prerank = Some(Arc::new(Reverse(true)));
    p.scorers = vec![Arc::new(Reverse(true))];
    let r = Arc::new(p)
        .execute(&env, Query::new("test", "u", 4, 10_000))
        .await;
    // Every ranking rung failed: the order is the source's own (its scores 100, 99, ...).
    assert_eq!(items(&r), [7, 3, 9, 1]);
    assert!(
        r.degraded.iter().all(|d| d.starts_with("scorer:reverse")),
        "{:?}",
        r.degraded
    );
}

/// A scorer that holds its CPU thread far past any deadline.
struct Stuck;
impl Scorer for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }
    fn score(&self, _: &RequestCtx, _: &Candidates, _: &mut [f32]) -> Result<(), ComponentError> {
        std::thread::sleep(Duration::from_millis(400));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_stage_past_its_deadline_answers_with_the_popular_list_in_time() {
    let env = env(40);
    let mut p = Arc::try_unwrap(pipeline(
        vec![Arc::new(Fixed("a", vec![2, 4, 6]))],
        vec![],
        100,
        100,
    ))
    .expect("sole owner");
    p.scorers = vec![Arc::new(Stuck)];
    let t = Instant::now();
    let r = Arc::new(p)
        .execute(&env, Query::new("test", "u", 5, 10_000))
        .await;
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "inside the 100 ms deadline: {:?}",
        t.elapsed()
    );
    assert_eq!(r.items.len(), 5, "the popular list, filtered");
    assert!(
        r.degraded.contains(&"stage:rank:timeout".to_string()),
        "{:?}",
        r.degraded
    );
    assert!(
        r.degraded.contains(&"fallback:popular".to_string()),
        "{:?}",
        r.degraded
    );
    assert!(
        r.items
            .iter()
            .all(|c| c.placed == cascade_pipeline::Placement::Fallback)
    );
}

/// A remote feature store: answers with `hidden` as the user's hidden items, fails, or hangs.
#[derive(Debug)]
struct Remote {
    mode: &'static str,
    hidden: Vec<u32>,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl cascade_features::FeatureStore for Remote {
    fn backend(&self) -> &'static str {
        "remote"
    }
    async fn user(
        &self,
        _: &str,
    ) -> Result<Option<cascade_features::UserState>, cascade_features::StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.mode {
            "error" => Err(cascade_features::StoreError::Unavailable("down".into())),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(None)
            }
            _ => Ok(Some(cascade_features::UserState {
                hidden_items: self.hidden.clone(),
                ..Default::default()
            })),
        }
    }
    async fn apply(&self, _: u64, _: &[Event]) -> Result<(), cascade_features::StoreError> {
        Ok(())
    }
    async fn forget(
        &self,
        _: u64,
        _: &cascade_core::Mutation,
    ) -> Result<(), cascade_features::StoreError> {
        Ok(())
    }
}

/// Removes the user's hidden items, read through `RequestCtx::user_state` as policy does.
struct UserHidden;
impl Filter for UserHidden {
    fn name(&self) -> &str {
        "user_hidden"
    }
    fn filter(&self, ctx: &RequestCtx, c: &Candidates) -> Result<Vec<Removal>, ComponentError> {
        let g = ctx.state.read();
        let hidden = ctx.user_state(&g).map(|u| u.hidden_items.clone());
        Ok(c.items
            .iter()
            .enumerate()
            .filter(|(_, c)| hidden.as_ref().is_some_and(|h| h.contains(&c.item)))
            .map(|(index, _)| Removal {
                index,
                reason: "hidden_by_user",
            })
            .collect())
    }
}

fn with_store(mode: &'static str) -> (Env, Arc<Remote>) {
    let mut env = env(40);
    let store = Arc::new(Remote {
        mode,
        hidden: vec![2, 4],
        calls: Default::default(),
    });
    env.store = Some(store.clone());
    (env, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_features_come_from_the_remote_store_or_degrade_to_the_local_view() {
    let p = pipeline(
        vec![Arc::new(Fixed("a", (0..10).collect()))],
        vec![Arc::new(UserHidden)],
        200,
        100,
    );
    // The store answers: what it holds (the local state knows nothing of it) is applied.
    let (env, store) = with_store("ok");
    let r = p.execute(&env, Query::new("test", "u", 10, 10_000)).await;
    assert_eq!(r.degraded, Vec::<String>::new());
    assert!(
        !items(&r).contains(&2) && !items(&r).contains(&4),
        "{:?}",
        items(&r)
    );
    assert_eq!(store.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // It fails, or is slower than the hydration budget (20 ms): the local view serves and the
    // response names the store.
    for (mode, why) in [
        ("error", "features:remote:error"),
        ("slow", "features:remote:timeout"),
    ] {
        let (env, _) = with_store(mode);
        let t = Instant::now();
        let r = p.execute(&env, Query::new("test", "u", 10, 10_000)).await;
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{mode}: {:?}",
            t.elapsed()
        );
        assert!(
            r.degraded.iter().any(|d| d == why),
            "{mode}: {:?}",
            r.degraded
        );
        assert_eq!(
            items(&r).len(),
            10,
            "{mode}: a full list from the local view"
        );
        assert!(items(&r).contains(&2), "{mode}: nothing hidden locally");
    }
}
