//! Plain-language reasons built from the pipeline's own trace, with rewordable templates.

use cascade_core::{EventKind, NONE_IDX};
use cascade_pipeline::{Candidate, Explainer, Reason, RequestCtx, SourceSlot};
use serde::{Deserialize, Serialize};

/// Sentence templates; `{title}` is the seed item's title, `{category}` the item's first
/// category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReasonTemplates {
    pub because_you_liked: String,
    pub similar_to_recent: String,
    pub popular_in_category: String,
    pub popular: String,
}

impl Default for ReasonTemplates {
    fn default() -> Self {
        Self {
            because_you_liked: "Because you liked {title}".into(),
            similar_to_recent: "Because you recently watched {title}".into(),
            popular_in_category: "Popular this week in {category}".into(),
            popular: "Popular right now".into(),
        }
    }
}

/// Picks the source that contributed most and phrases it.
#[derive(Debug, Default)]
pub struct TemplateExplainer {
    pub templates: ReasonTemplates,
}

impl Explainer for TemplateExplainer {
    fn explain(&self, ctx: &RequestCtx, cand: &Candidate, sources: &[SourceSlot]) -> Reason {
        let g = ctx.state.read();
        // A seeded source (the user's own history led here) is the most telling reason.
        let seeded = cand.seed != NONE_IDX
            && cand.source_slots().any(|s| {
                sources
                    .get(s)
                    .is_some_and(|x| x.source.reason_code() == "similar_to_recent")
            });
        if seeded && let Some(seed) = g.item(cand.seed) {
            let liked = ctx.user.recent.iter().any(|i| {
                i.item == cand.seed
                    && matches!(
                        i.kind,
                        EventKind::Like | EventKind::Share | EventKind::Purchase
                    )
            });
            let (code, t) = if liked {
                ("because_you_liked", &self.templates.because_you_liked)
            } else {
                ("similar_to_recent", &self.templates.similar_to_recent)
            };
            return Reason {
                code,
                text: t.replace("{title}", &seed.title),
            };
        }
        let category = g
            .item(cand.item)
            .and_then(|r| r.categories.first())
            .and_then(|&c| g.categories.name(c));
        match category {
            Some(cat) => Reason {
                code: "popular_in_category",
                text: self
                    .templates
                    .popular_in_category
                    .replace("{category}", cat),
            },
            None => Reason {
                code: "popular",
                text: self.templates.popular.clone(),
            },
        }
    }
}
