//! Business rules: per-surface blocklists, boosts and demotions by attribute, pinned
//! editorial slots and sponsored-slot limits.

use cascade_core::Idx;
use cascade_features::Inner;
use cascade_pipeline::{
    Candidate, Candidates, ComponentError, FailMode, Filter, Placement, Removal, RequestCtx,
    Scorer, Selector,
};
use serde::{Deserialize, Serialize};

/// Items, creators, categories and tags a surface never shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlocklistConfig {
    pub items: Vec<String>,
    pub creators: Vec<String>,
    pub categories: Vec<String>,
    pub tags: Vec<String>,
}

impl BlocklistConfig {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
            && self.creators.is_empty()
            && self.categories.is_empty()
            && self.tags.is_empty()
    }
}

/// The surface's blocklist (reason `blocked`). Fails closed, like the safety filter. Ids are
/// resolved per request, so a blocked creator's items added later are blocked too.
#[derive(Debug)]
pub struct Blocklist {
    pub config: BlocklistConfig,
}

fn resolve(ids: &[String], map: &cascade_core::IdMap) -> Vec<Idx> {
    let mut v: Vec<Idx> = ids.iter().filter_map(|id| map.get(id)).collect();
    v.sort_unstable();
    v
}

impl Filter for Blocklist {
    fn name(&self) -> &str {
        "blocklist"
    }

    fn fail_mode(&self) -> FailMode {
        FailMode::Closed
    }

    fn filter(&self, ctx: &RequestCtx, cands: &Candidates) -> Result<Vec<Removal>, ComponentError> {
        if self.config.is_empty() {
            return Ok(Vec::new());
        }
        let g = ctx.state.read();
        let items = resolve(&self.config.items, &g.items);
        let creators = resolve(&self.config.creators, &g.creators);
        let cats = resolve(&self.config.categories, &g.categories);
        let tags = resolve(&self.config.tags, &g.tags);
        let has = |v: &[Idx], x: Idx| v.binary_search(&x).is_ok();
        let mut out = Vec::new();
        for (index, c) in cands.items.iter().enumerate() {
            let blocked = has(&items, c.item)
                || has(&creators, g.hot(c.item).creator)
                || ((!cats.is_empty() || !tags.is_empty())
                    && g.item(c.item).is_some_and(|r| {
                        r.categories.iter().any(|&x| has(&cats, x))
                            || r.tags.iter().any(|&x| has(&tags, x))
                    }));
            if blocked {
                out.push(Removal {
                    index,
                    reason: "blocked",
                });
            }
        }
        Ok(out)
    }
}

/// One boost (positive `add`) or demotion (negative) of items matching every given field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoostRule {
    /// Named in the `explain` trace.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    /// An item attribute that must be `true` (e.g. `original`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// `true`: only items by a creator the requesting user follows; `false`: only others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed: Option<bool>,
    /// Added to the ranker's score (its scale: a LambdaMART margin, where one unit is a
    /// large move).
    pub add: f32,
}

impl BoostRule {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        if self.category.is_none()
            && self.tag.is_none()
            && self.creator.is_none()
            && self.attribute.is_none()
            && self.followed.is_none()
        {
            return Err(format!(
                "rule `{}` needs category, tag, creator, attribute or followed",
                self.name
            ));
        }
        if !self.add.is_finite() {
            return Err(format!("rule `{}`: add must be finite", self.name));
        }
        Ok(())
    }

    /// Whether `item` matches for a user following `follows` (sorted creator indexes).
    fn matches(&self, g: &Inner, item: Idx, follows: &[Idx]) -> bool {
        let Some(r) = g.item(item) else {
            return false;
        };
        if let Some(want) = self.followed
            && (r.creator != cascade_core::NONE_IDX && follows.binary_search(&r.creator).is_ok())
                != want
        {
            return false;
        }
        let named = |want: &Option<String>, map: &cascade_core::IdMap, have: &[Idx]| {
            want.as_deref()
                .is_none_or(|w| map.get(w).is_some_and(|x| have.contains(&x)))
        };
        named(&self.category, &g.categories, &r.categories)
            && named(&self.tag, &g.tags, &r.tags)
            && named(&self.creator, &g.creators, std::slice::from_ref(&r.creator))
            && self.attribute.as_deref().is_none_or(|a| {
                r.attributes
                    .as_ref()
                    .and_then(|m| m.get(a))
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false)
            })
    }

    /// Whether the rule applies to `item`, for traces.
    pub fn applies(&self, ctx: &RequestCtx, item: Idx) -> bool {
        self.matches(&ctx.state.read(), item, &ctx.user.follows)
    }
}

/// Adds each matching rule's `add` to the score. Runs after the heavy ranker; a scorer, so
/// it cannot drop or reorder.
#[derive(Debug)]
pub struct Boosts {
    pub rules: Vec<BoostRule>,
}

impl Scorer for Boosts {
    fn name(&self) -> &str {
        "boosts"
    }

    fn score(
        &self,
        ctx: &RequestCtx,
        cands: &Candidates,
        scores: &mut [f32],
    ) -> Result<(), ComponentError> {
        let g = ctx.state.read();
        for (s, c) in scores.iter_mut().zip(&cands.items) {
            for r in &self.rules {
                if r.matches(&g, c.item, &ctx.user.follows) {
                    *s += r.add;
                }
            }
        }
        Ok(())
    }
}

/// Pins editorial items: each active list of the surface with a `pin` position puts its first
/// qualifying item there (qualifying: among the candidates, so it passed every filter).
#[derive(Debug, Default)]
pub struct PinnedSlots;

impl Selector for PinnedSlots {
    fn name(&self) -> &str {
        "pinned"
    }

    fn select(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let n = ctx.query.n;
        let g = ctx.state.read();
        let mut pins: Vec<(usize, Idx)> = Vec::new();
        let mut lists: Vec<_> = g
            .editorial
            .values()
            .filter(|l| l.is_active(&ctx.query.surface, ctx.query.now))
            .filter_map(|l| l.pin.map(|p| (p as usize, l)))
            .filter(|(p, _)| *p < n)
            .collect();
        lists.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
        for (pos, list) in lists {
            let pinned_already = cands
                .items
                .iter()
                .any(|c| c.placed == Placement::Pinned && usize::from(c.slot) == pos);
            if pinned_already || pins.iter().any(|&(p, _)| p == pos) {
                continue;
            }
            let found = list.items.iter().find_map(|id| {
                let item = g.items.get(id)?;
                // An item the exploration rule placed may still be pinned (pins outrank it).
                let here = cands
                    .items
                    .iter()
                    .any(|c| c.item == item && c.placed != Placement::Pinned);
                (here && !pins.iter().any(|&(_, i)| i == item)).then_some(item)
            });
            if let Some(item) = found {
                pins.push((pos, item));
            }
        }
        drop(g);
        if pins.is_empty() {
            return Ok(());
        }
        pins.sort_unstable();
        for (pos, item) in pins {
            let Some(from) = cands.items.iter().position(|c| c.item == item) else {
                continue;
            };
            // A pin outranks an exploration slot at the same position: that item falls back
            // into the ranked order.
            for c in cands.items.iter_mut() {
                if c.placed.locked() && c.placed != Placement::Pinned && usize::from(c.slot) == pos
                {
                    c.placed = Placement::Ranked;
                    c.propensity = 1.0;
                }
            }
            let mut c = cands.items.remove(from);
            c.placed = Placement::Pinned;
            c.propensity = 1.0;
            move_to(&mut cands.items, c, pos);
        }
        Ok(())
    }
}

/// Puts `c` at slot `pos`; locked items keep their slots and free items flow around them.
pub(crate) fn move_to(items: &mut Vec<Candidate>, c: Candidate, pos: usize) {
    let old = std::mem::take(items);
    let mut locked: Vec<(usize, Candidate)> = Vec::new();
    let mut free = Vec::with_capacity(old.len());
    for x in old {
        if x.placed.locked() {
            locked.push((usize::from(x.slot), x));
        } else {
            free.push(x);
        }
    }
    let mut c = c;
    c.slot = u16::try_from(pos).unwrap_or(u16::MAX);
    locked.push((pos, c));
    locked.sort_by_key(|&(p, x)| (p, x.placed != Placement::Pinned, x.item));
    *items = relayout(locked, free);
}

/// Locked items at their slots (in slot order), free items in order in between.
pub(crate) fn relayout(locked: Vec<(usize, Candidate)>, free: Vec<Candidate>) -> Vec<Candidate> {
    let mut out = Vec::with_capacity(locked.len() + free.len());
    let mut free = free.into_iter();
    let mut locked = locked.into_iter().peekable();
    loop {
        if let Some(&(p, c)) = locked.peek()
            && p <= out.len()
        {
            out.push(c);
            locked.next();
            continue;
        }
        match free.next() {
            Some(c) => out.push(c),
            None => break,
        }
    }
    out.extend(locked.map(|(_, c)| c));
    out
}

/// Sponsored items (`attributes.sponsored = true`): at most `max_items` per response and none
/// above `min_position`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SponsoredConfig {
    pub max_items: usize,
    pub min_position: usize,
}

impl Default for SponsoredConfig {
    fn default() -> Self {
        Self {
            max_items: 2,
            min_position: 2,
        }
    }
}

/// Whether an item is sponsored (`attributes.sponsored = true`, kept as a packed flag).
pub fn sponsored(g: &Inner, item: Idx) -> bool {
    g.hot(item).sponsored()
}

/// Enforces the sponsored limits: a sponsored item that would sit above `min_position` moves
/// down to the first allowed slot; past `max_items`, sponsored items are dropped. Runs last.
#[derive(Debug)]
pub struct SponsoredLimit {
    pub config: SponsoredConfig,
}

impl Selector for SponsoredLimit {
    fn name(&self) -> &str {
        "sponsored"
    }

    fn select(&self, ctx: &RequestCtx, cands: &mut Candidates) -> Result<(), ComponentError> {
        let g = ctx.state.read();
        let flags: Vec<bool> = cands.items.iter().map(|c| sponsored(&g, c.item)).collect();
        drop(g);
        if !flags.iter().any(|&f| f) {
            return Ok(());
        }
        // Locked items (pinned, exploration) keep their slots; the rule reorders the rest.
        let items = std::mem::take(&mut cands.items);
        let mut locked: Vec<(usize, Candidate)> = Vec::new();
        let mut free: Vec<(Candidate, bool)> = Vec::with_capacity(items.len());
        let mut locked_sponsored = 0;
        for (c, s) in items.into_iter().zip(flags) {
            if c.placed.locked() {
                locked_sponsored += usize::from(s);
                locked.push((usize::from(c.slot), c));
            } else {
                free.push((c, s));
            }
        }
        locked.sort_by_key(|&(p, x)| (p, x.placed != Placement::Pinned, x.item));
        let slot_of = |free_len: usize| {
            // The slot the next free item lands in, counting locked slots before it.
            let mut slot = free_len;
            for &(p, _) in &locked {
                if p <= slot {
                    slot += 1;
                }
            }
            slot
        };
        let min = self.config.min_position;
        let max = self.config.max_items.saturating_sub(locked_sponsored);
        let mut out: Vec<Candidate> = Vec::with_capacity(free.len());
        let mut waiting: std::collections::VecDeque<Candidate> = Default::default();
        let mut count = 0;
        for (c, s) in free {
            // Sponsored items held back take the first allowed slot.
            while slot_of(out.len()) >= min && count < max {
                let Some(w) = waiting.pop_front() else { break };
                out.push(w);
                count += 1;
            }
            if !s {
                out.push(c);
            } else if slot_of(out.len()) < min {
                waiting.push_back(c);
            } else if count < max {
                out.push(c);
                count += 1;
            }
        }
        while slot_of(out.len()) >= min && count < max {
            let Some(w) = waiting.pop_front() else { break };
            out.push(w);
            count += 1;
        }
        let out = relayout(locked, out);
        cands.items = out;
        Ok(())
    }
}
