//! Plain-language reasons built from the pipeline's own trace, with rewordable templates.

use cascade_core::{EventKind, NONE_IDX};
use cascade_pipeline::{Candidate, Explainer, Placement, Reason, RequestCtx, SourceSlot};
use serde::{Deserialize, Serialize};

/// Sentence templates; `{title}` is the seed item's title, `{category}` the item's first
/// category, `{creator}` its creator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReasonTemplates {
    pub because_you_liked: String,
    pub similar_to_recent: String,
    pub popular_in_category: String,
    pub popular: String,
    /// `{creator}` is the creator's id.
    pub from_followed_creator: String,
    pub trending: String,
    pub trending_plain: String,
    pub new_for_you: String,
    pub new_plain: String,
    pub picked_for_you: String,
    pub editorial: String,
    /// `{title}` is the editorial list's title.
    pub editorial_titled: String,
    /// An exploration slot.
    pub exploring: String,
}

impl Default for ReasonTemplates {
    fn default() -> Self {
        Self {
            because_you_liked: "Because you liked {title}".into(),
            similar_to_recent: "Because you recently watched {title}".into(),
            popular_in_category: "Popular this week in {category}".into(),
            popular: "Popular right now".into(),
            from_followed_creator: "New from {creator}, a creator you follow".into(),
            trending: "Trending in {category} today".into(),
            trending_plain: "Trending today".into(),
            new_for_you: "New in {category}".into(),
            new_plain: "Just added".into(),
            picked_for_you: "Picked for you from what you watch".into(),
            editorial: "Picked by our editors".into(),
            editorial_titled: "From our editors: {title}".into(),
            exploring: "Something different we think you might like".into(),
        }
    }
}

/// Picks the source that contributed most and phrases it.
#[derive(Debug, Default)]
pub struct TemplateExplainer {
    pub templates: ReasonTemplates,
}

impl TemplateExplainer {
    fn category(g: &cascade_features::Inner, item: u32) -> Option<&str> {
        g.item(item)
            .and_then(|r| r.categories.first())
            .and_then(|&c| g.categories.name(c))
    }
}

impl TemplateExplainer {
    /// An editorial pick, titled by the active list that holds it.
    fn editorial(&self, g: &cascade_features::Inner, ctx: &RequestCtx, cand: &Candidate) -> Reason {
        let t = &self.templates;
        let now = ctx.query.now;
        let id = g.item_id(cand.item);
        let title = g
            .editorial
            .values()
            .filter(|l| l.is_active(&ctx.query.surface, now))
            .find(|l| !l.title.is_empty() && l.items.iter().any(|i| i == id))
            .map(|l| l.title.as_str());
        Reason {
            code: "editorial_pick",
            text: match title {
                Some(title) => t.editorial_titled.replace("{title}", title),
                None => t.editorial.clone(),
            },
        }
    }
}

impl Explainer for TemplateExplainer {
    fn explain(&self, ctx: &RequestCtx, cand: &Candidate, sources: &[SourceSlot]) -> Reason {
        let g = ctx.state.read();
        let from = |code: &str| {
            cand.source_slots().any(|s| {
                sources
                    .get(s)
                    .is_some_and(|x| x.source.reason_code() == code)
            })
        };
        let t = &self.templates;
        // A policy rule that placed the item explains it first.
        match cand.placed {
            Placement::Exploring => {
                return Reason {
                    code: "exploring",
                    text: t.exploring.clone(),
                };
            }
            Placement::NewItem => {
                let text = match Self::category(&g, cand.item) {
                    Some(cat) => t.new_for_you.replace("{category}", cat),
                    None => t.new_plain.clone(),
                };
                return Reason {
                    code: "new_for_you",
                    text,
                };
            }
            Placement::Pinned => return self.editorial(&g, ctx, cand),
            _ => {}
        }
        // Personal reasons next: a followed creator, then the user's own history.
        if from("from_followed_creator") {
            let creator = g.hot(cand.item).creator;
            if let Some(name) = g.creators.name(creator) {
                return Reason {
                    code: "from_followed_creator",
                    text: t.from_followed_creator.replace("{creator}", name),
                };
            }
        }
        if cand.seed != NONE_IDX
            && from("similar_to_recent")
            && let Some(seed) = g.item(cand.seed)
        {
            let liked = ctx.user.recent.iter().any(|i| {
                i.item == cand.seed
                    && matches!(
                        i.kind,
                        EventKind::Like | EventKind::Share | EventKind::Purchase
                    )
            });
            let (code, tpl) = if liked {
                ("because_you_liked", &t.because_you_liked)
            } else {
                ("similar_to_recent", &t.similar_to_recent)
            };
            return Reason {
                code,
                text: tpl.replace("{title}", &seed.title),
            };
        }
        if from("editorial_pick") {
            return self.editorial(&g, ctx, cand);
        }
        if from("picked_for_you") {
            return Reason {
                code: "picked_for_you",
                text: t.picked_for_you.clone(),
            };
        }
        let category = Self::category(&g, cand.item);
        let with_category = |code: &'static str, tpl: &str, plain: &str| match category {
            Some(cat) => Reason {
                code,
                text: tpl.replace("{category}", cat),
            },
            None => Reason {
                code,
                text: plain.to_string(),
            },
        };
        if from("trending") {
            return with_category("trending", &t.trending, &t.trending_plain);
        }
        if from("new_for_you") {
            return with_category("new_for_you", &t.new_for_you, &t.new_plain);
        }
        match category {
            Some(cat) => Reason {
                code: "popular_in_category",
                text: t.popular_in_category.replace("{category}", cat),
            },
            None => Reason {
                code: "popular",
                text: t.popular.clone(),
            },
        }
    }
}
