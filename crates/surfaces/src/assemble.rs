//! Assembly: a surface's configuration becomes its pipeline, component by component, in the
//! order the configuration lists them.

use crate::config::{
    FilterKind, HydratorKind, SelectorKind, SideEffectKind, SourceKind, SurfaceConfig,
};
use crate::impressions::{ImpressionLogger, MutationQueue, ServedObserver, ServedTap};
use cascade_pipeline::{
    CandidateSource, ComponentError, CpuPool, Filter, Hydrator, Pipeline, Scorer, Selector,
    SideEffect, SourceSlot, StageBudgets,
};
use cascade_policy::{
    Blocklist, Boosts, Exploration, FrequencyCap, Mmr, PinnedSlots, SafetyFilter, SeenFilter,
    SponsoredLimit, TemplateExplainer, TopScore, WindowDiversity,
};
use cascade_ranking::{
    BlendScorer, ContextHydrator, GbdtScorer, ItemHydrator, RetrievalHydrator, UserHydrator,
    UserItemHydrator, schema_for,
};
use cascade_sources::{
    EditorialSource, EmbeddingSource, FollowsSource, FreshSource, ItemSimilaritySource,
    PopularSource, TrendingSource,
};
use std::sync::Arc;
use std::time::Duration;

/// Builds surface `surface`'s pipeline from its declarative configuration `s`.
/// Without a `queue`, side effects that log are left out (ranker training runs pipelines
/// over a past state and must not write). The error names the offending key.
pub fn build_pipeline(
    s: &SurfaceConfig,
    surface: &str,
    queue: Option<&Arc<dyn MutationQueue>>,
    observer: Option<&Arc<dyn ServedObserver>>,
    pool: &Arc<CpuPool>,
) -> Result<Pipeline, String> {
    let sources: Vec<SourceSlot> = s
        .sources
        .iter()
        .map(|sc| {
            let source: Arc<dyn CandidateSource> = match sc.kind {
                SourceKind::Popular => Arc::new(PopularSource),
                SourceKind::Similar => Arc::new(ItemSimilaritySource {
                    config: sc.similar.unwrap_or_default(),
                    pool: pool.clone(),
                }),
                SourceKind::Trending => Arc::new(TrendingSource),
                SourceKind::Fresh => Arc::new(FreshSource {
                    config: sc.fresh.unwrap_or_default(),
                }),
                SourceKind::Follows => Arc::new(FollowsSource { pool: pool.clone() }),
                SourceKind::Editorial => Arc::new(EditorialSource),
                SourceKind::Embedding => Arc::new(EmbeddingSource {
                    config: sc.embedding.unwrap_or_default(),
                    pool: pool.clone(),
                }),
            };
            SourceSlot {
                source,
                limit: sc.limit,
                timeout: Duration::from_millis(sc.timeout_ms),
                protected: sc
                    .protected
                    .unwrap_or(matches!(sc.kind, SourceKind::Editorial | SourceKind::Fresh)),
            }
        })
        .collect();
    let names: Vec<String> = sources
        .iter()
        .map(|s| s.source.name().to_string())
        .collect();
    let schema = schema_for(&names);
    let hydrators: Vec<Arc<dyn Hydrator>> = s
        .hydrators
        .iter()
        .map(|h| -> Result<Arc<dyn Hydrator>, ComponentError> {
            Ok(match h {
                HydratorKind::Retrieval => Arc::new(RetrievalHydrator::new(&schema, &names)?),
                HydratorKind::Item => Arc::new(ItemHydrator::new(&schema)?),
                HydratorKind::User => Arc::new(UserHydrator::new(&schema)?),
                HydratorKind::UserItem => Arc::new(UserItemHydrator::new(&schema)?),
                HydratorKind::Context => Arc::new(ContextHydrator::new(&schema)?),
            })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("surfaces.{surface}.hydrators: {e}"))?;
    let filters: Vec<Arc<dyn Filter>> = s
        .filters
        .iter()
        .map(|f| -> Arc<dyn Filter> {
            match f {
                FilterKind::Safety => Arc::new(SafetyFilter),
                FilterKind::Seen => Arc::new(SeenFilter),
                FilterKind::FrequencyCap => Arc::new(FrequencyCap {
                    config: s.frequency_cap,
                }),
                FilterKind::Blocklist => Arc::new(Blocklist {
                    config: s.blocklist.clone(),
                }),
            }
        })
        .collect();
    // Diversity and MMR keep the sponsored limits while they fill, when the surface has them.
    let sponsored = s
        .selectors
        .contains(&SelectorKind::Sponsored)
        .then_some(s.sponsored);
    let selectors: Vec<Arc<dyn Selector>> = s
        .selectors
        .iter()
        .map(|k| -> Arc<dyn Selector> {
            match k {
                SelectorKind::TopScore => Arc::new(TopScore),
                SelectorKind::Diversity => Arc::new(WindowDiversity {
                    config: s.diversity,
                    sponsored,
                }),
                SelectorKind::Mmr => Arc::new(Mmr {
                    config: s.mmr,
                    sponsored,
                }),
                SelectorKind::Exploration => Arc::new(Exploration {
                    config: s.exploration,
                }),
                SelectorKind::Pinned => Arc::new(PinnedSlots),
                SelectorKind::Sponsored => Arc::new(SponsoredLimit {
                    config: s.sponsored,
                }),
            }
        })
        .collect();
    let side_effects: Vec<Arc<dyn SideEffect>> = s
        .side_effects
        .iter()
        .filter_map(|k| -> Option<Arc<dyn SideEffect>> {
            match k {
                SideEffectKind::Impressions => Some(Arc::new(ImpressionLogger {
                    queue: queue?.clone(),
                })),
                SideEffectKind::Drift => Some(Arc::new(ServedTap {
                    observer: observer?.clone(),
                })),
            }
        })
        .collect();
    let mut scorers: Vec<Arc<dyn Scorer>> = Vec::new();
    if s.heavy_ranker {
        scorers.push(Arc::new(GbdtScorer::default()));
    }
    if !s.boosts.is_empty() {
        scorers.push(Arc::new(Boosts {
            rules: s.boosts.clone(),
        }));
    }
    Ok(Pipeline {
        surface: surface.to_string(),
        prerank: Some(Arc::new(BlendScorer::new(s.scorer.clone(), &names))),
        prerank_keep: s.prerank_keep,
        scorers,
        sources,
        candidate_budget: s.candidate_budget,
        schema: Arc::new(schema),
        hydrators,
        filters,
        selectors,
        explainer: Arc::new(TemplateExplainer {
            templates: s.reasons.clone(),
        }),
        side_effects,
        fallback: s.fallback,
        budgets: StageBudgets {
            total: Duration::from_millis(s.budget_ms),
            hydrate: Duration::from_millis(s.hydrate_ms),
            rank: Duration::from_millis(s.rank_ms),
        },
    })
}
