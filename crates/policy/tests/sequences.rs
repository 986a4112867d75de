//! Property tests of the whole policy stage over random catalogs and sequences of requests,
//! run through the real executor: safety and blocklists always hold, impression caps hold
//! across requests, pinned slots hold their items, sponsored limits and diversity hold, and
//! the list is never empty while eligible items exist.

use cascade_core::{EditorialList, Event, EventKind, Item, Mutation, User};
use cascade_pipeline::testkit::{event, world};
use cascade_pipeline::{
    Candidates, ComponentError, Env, Filter, Pipeline, Placement, Query, RequestCtx, Scorer,
    Selector, SourceSlot, StageBudgets,
};
use cascade_policy::{
    Blocklist, BlocklistConfig, DiversityConfig, Exploration, ExplorationConfig, FrequencyCap,
    FrequencyCapConfig, PinnedSlots, SafetyFilter, SeenFilter, SponsoredConfig, SponsoredLimit,
    TemplateExplainer, TopScore, WindowDiversity,
};
use cascade_sources::{EditorialSource, FreshSource, PopularSource};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Scores by the sum of the sources' scores: the ranking itself is not under test here.
struct RetrievalSum;

impl Scorer for RetrievalSum {
    fn name(&self) -> &str {
        "retrieval_sum"
    }
    fn score(&self, _: &RequestCtx, c: &Candidates, out: &mut [f32]) -> Result<(), ComponentError> {
        for (o, x) in out.iter_mut().zip(&c.items) {
            *o = x.source_scores.iter().sum();
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Spec {
    cat: u8,
    creator: u8,
    hidden: bool,
    mature: bool,
    sponsored: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u8..4, 0u8..6, 0u8..10, 0u8..10, 0u8..7).prop_map(|(cat, creator, h, m, s)| Spec {
        cat,
        creator,
        hidden: h == 0,
        mature: m == 0,
        sponsored: s == 0,
    })
}

const CAP: FrequencyCapConfig = FrequencyCapConfig {
    max_impressions: 2,
    window_s: 86_400,
};
const SPONSORED: SponsoredConfig = SponsoredConfig {
    max_items: 1,
    min_position: 2,
};
const DIVERSITY: DiversityConfig = DiversityConfig {
    window: 3,
    max_per_category: 2,
    max_per_creator: 1,
};
const USERS: [&str; 3] = ["kid", "adult", "newbie"];

fn pipeline(diverse: bool) -> Pipeline {
    let slot = |source: Arc<dyn cascade_pipeline::CandidateSource>, protected| SourceSlot {
        source,
        limit: 100,
        timeout: Duration::from_secs(1),
        protected,
    };
    let mut selectors: Vec<Arc<dyn Selector>> = vec![
        Arc::new(TopScore),
        Arc::new(Exploration {
            config: ExplorationConfig {
                share: 0.2,
                first_slot: 1,
                ..Default::default()
            },
        }),
        Arc::new(PinnedSlots),
    ];
    if diverse {
        selectors.push(Arc::new(WindowDiversity {
            config: DIVERSITY,
            sponsored: Some(SPONSORED),
        }));
    }
    selectors.push(Arc::new(SponsoredLimit { config: SPONSORED }));
    let filters: Vec<Arc<dyn Filter>> = vec![
        Arc::new(SafetyFilter),
        Arc::new(Blocklist {
            config: BlocklistConfig {
                creators: vec!["k5".into()],
                items: vec!["i0".into()],
                ..Default::default()
            },
        }),
        Arc::new(SeenFilter),
        Arc::new(FrequencyCap { config: CAP }),
    ];
    Pipeline {
        surface: "test".into(),
        sources: vec![
            slot(Arc::new(PopularSource), false),
            slot(
                Arc::new(FreshSource {
                    config: Default::default(),
                }),
                true,
            ),
            slot(Arc::new(EditorialSource), true),
        ],
        candidate_budget: 1000,
        schema: Arc::new(cascade_features::FeatureSchema::new(vec![])),
        hydrators: vec![],
        filters,
        prerank: None,
        prerank_keep: 300,
        scorers: vec![Arc::new(RetrievalSum)],
        selectors,
        explainer: Arc::new(TemplateExplainer::default()),
        side_effects: vec![],
        budgets: StageBudgets {
            total: Duration::from_secs(5),
            hydrate: Duration::from_secs(1),
            rank: Duration::from_secs(1),
        },
        fallback: true,
    }
}

fn build(specs: &[Spec], likes: &[(u8, u8)], pin: u32, list: &[u8]) -> Env {
    let items: Vec<Item> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut it = cascade_pipeline::testkit::item(
                i as u32,
                &format!("c{}", s.cat),
                &format!("k{}", s.creator),
            );
            it.hidden = s.hidden;
            it.mature = s.mature;
            if s.sponsored {
                it.attributes = serde_json::from_str(r#"{"sponsored": true}"#).expect("attrs");
            }
            it
        })
        .collect();
    let n = specs.len() as u8;
    let users = vec![
        User {
            id: "kid".into(),
            attributes: Default::default(),
            follows: vec![],
        },
        User {
            id: "adult".into(),
            attributes: serde_json::from_str(r#"{"allow_mature": true}"#).expect("attrs"),
            follows: vec![],
        },
    ];
    let mut events: Vec<Event> = likes
        .iter()
        .map(|&(u, i)| event(EventKind::Like, &format!("crowd{u}"), u32::from(i % n), 100))
        .collect();
    // The kid consumed item 1 and hid item 2 (and with it, its creator).
    events.push(event(EventKind::Like, "kid", 1 % u32::from(n), 200));
    events.push(event(EventKind::Hide, "kid", 2 % u32::from(n), 200));
    let env = world(items, users, events);
    env.state.apply(&Mutation::UpsertEditorial(EditorialList {
        id: "pins".into(),
        title: "Pins".into(),
        items: list.iter().map(|&i| format!("i{}", i % n)).collect(),
        surfaces: vec![],
        starts_at: None,
        ends_at: None,
        boost: 1.0,
        pin: Some(pin),
    }));
    env
}

/// What a user may be shown at all (before caps): the oracle, written from the rules.
fn allowed(specs: &[Spec], user: &str, item: usize) -> bool {
    let s = &specs[item];
    let n = specs.len();
    !s.hidden
        && (!s.mature || user == "adult")
        && s.creator != 5
        && item != 0
        && !(user == "kid" && (item == 1 % n || item == 2 % n || s.creator == specs[2 % n].creator))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn policy_invariants_hold_across_request_sequences(
        specs in prop::collection::vec(spec(), 8..40),
        likes in prop::collection::vec((0u8..10, 0u8..40), 0..80),
        pin in 0u32..4,
        list in prop::collection::vec(0u8..40, 1..6),
        requests in prop::collection::vec((0usize..3, 3usize..9), 1..12),
        diverse in any::<bool>(),
    ) {
        let env = build(&specs, &likes, pin, &list);
        let p = Arc::new(pipeline(diverse));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let mut shown: HashMap<(String, u32), u32> = HashMap::new();
        for (k, &(u, n)) in requests.iter().enumerate() {
            let user = USERS[u];
            let now = 10_000 + k as i64 * 60;
            let mut q = Query::new("test", user, n, now * 1000);
            q.request_id = format!("r{k}");
            q.explain = true;
            let r = rt.block_on(p.execute(&env, q));
            let items: Vec<u32> = r.items.iter().map(|c| c.item).collect();
            prop_assert!(items.len() <= n);
            // Safety, blocklists, the user's own hides and consumption: never shown.
            for &i in &items {
                prop_assert!(allowed(&specs, user, i as usize), "item {} shown to {}", i, user);
            }
            // Caps across the sequence: what was shown to this user twice never returns.
            for &i in &items {
                let c = shown.entry((user.to_string(), i)).or_default();
                *c += 1;
                prop_assert!(*c <= CAP.max_impressions, "item {} shown {}× to {}", i, c, user);
            }
            // Never empty while an eligible item exists (sponsored items alone cannot open
            // a list: they may not take its first slots).
            let eligible = (0..specs.len()).any(|i| {
                allowed(&specs, user, i)
                    && !specs[i].sponsored
                    && shown.get(&(user.to_string(), i as u32)).copied().unwrap_or(0)
                        < CAP.max_impressions
            });
            if eligible {
                prop_assert!(!items.is_empty(), "empty list while items are eligible");
            }
            // Pinned slot: the first list item that passed every filter.
            let removed: Vec<u32> = r.removed.iter().map(|x| x.0).collect();
            let g = env.state.read();
            let first_ok = list
                .iter()
                .map(|&i| u32::from(i) % specs.len() as u32)
                .find(|i| !removed.contains(i) && g.item(*i).is_some());
            drop(g);
            // When diversity cannot fill the slots before it, the list ends early and the pin
            // follows what could be placed: then only rule-placed items come after it.
            if let Some(want) = first_ok
                && (pin as usize) < items.len()
            {
                let at = items.iter().position(|&i| i == want);
                prop_assert!(at.is_some(), "pinned item {} missing from {:?}", want, items);
                let at = at.unwrap_or_default();
                prop_assert_eq!(r.items[at].placed, Placement::Pinned);
                if at != pin as usize {
                    prop_assert!(diverse && at < pin as usize, "pin at {} of {:?}", at, items);
                    prop_assert!(
                        r.items[at..].iter().all(|c| c.placed.locked()),
                        "pin pulled forward by a short list only: {:?}", items
                    );
                }
            }
            // Sponsored limits (pinned editorial items are the editors' call).
            let ranked_sponsored: Vec<usize> = r
                .items
                .iter()
                .enumerate()
                .filter(|(_, c)| specs[c.item as usize].sponsored && c.placed != Placement::Pinned)
                .map(|(pos, _)| pos)
                .collect();
            prop_assert!(ranked_sponsored.len() <= SPONSORED.max_items, "{:?}", ranked_sponsored);
            prop_assert!(ranked_sponsored.iter().all(|&pos| pos >= SPONSORED.min_position));
            // Diversity in every window of rule-free slots.
            if diverse {
                for w in r.items.windows(DIVERSITY.window.min(r.items.len()).max(1)) {
                    if w.iter().any(|c| c.placed != Placement::Ranked) {
                        continue;
                    }
                    for cat in 0..4u8 {
                        let k = w.iter().filter(|c| specs[c.item as usize].cat == cat).count();
                        prop_assert!(k <= DIVERSITY.max_per_category);
                    }
                    for cr in 0..6u8 {
                        let k = w.iter().filter(|c| specs[c.item as usize].creator == cr).count();
                        prop_assert!(k <= DIVERSITY.max_per_creator);
                    }
                }
            }
            // Every item explained; explored items carry a propensity in (0, 1].
            prop_assert_eq!(r.reasons.len(), r.items.len());
            for (c, why) in r.items.iter().zip(&r.reasons) {
                prop_assert!(!why.code.is_empty() && !why.text.is_empty());
                prop_assert!(c.propensity > 0.0 && c.propensity <= 1.0);
                if c.placed == Placement::Exploring {
                    prop_assert_eq!(why.code, "exploring");
                }
            }
            // The impressions the server would log for this response.
            let imps: Vec<Event> = items
                .iter()
                .map(|&i| event(EventKind::Impression, user, i, now))
                .collect();
            env.state.apply(&Mutation::Events(imps));
        }
    }
}
