//! Popular, trending and fresh lists as of one point in time.
//!
//! Popular: time-decayed engagement, global and per category, padded with new items so a
//! non-empty catalog always has a fallback. Trending: the short-window engagement rate over the
//! long-window rate (both decayed), for items with enough short-window support. Fresh: the
//! newest servable items created before `as_of`, for cold start.

use cascade_core::{Idx, Millis};
use cascade_features::Inner;

/// Least decayed short-window engagement for an item to count as trending.
pub const TRENDING_MIN_SUPPORT: f32 = 2.0;

/// Ranked lists with scores, as of one point in time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PopularLists {
    /// The time the scores are decayed to.
    pub as_of: Millis,
    /// Best first. Never empty while the catalog has a servable item.
    pub global: Vec<(Idx, f32)>,
    /// By category index, best first.
    pub by_category: Vec<Vec<(Idx, f32)>>,
    /// Accelerating items, best first; the score is short rate / long rate (1 = steady).
    pub trending: Vec<(Idx, f32)>,
    /// Newest servable items first, with their `created_at`.
    pub fresh: Vec<(Idx, Millis)>,
    /// By segment (`Inner::segments`: user attributes such as `locale=fr`, and the surface
    /// an engagement came from, `surface=home`), best first; empty for point-in-time lists.
    pub by_segment: Vec<Vec<(Idx, f32)>>,
    /// Surface name → its segment in `by_segment`.
    pub surface_segment: std::collections::HashMap<String, Idx>,
}

impl PopularLists {
    /// From the live decayed counters (the normal case: `now` at or after every event).
    pub fn build_live(g: &Inner, size: usize, per_category: usize) -> Self {
        let as_of = g.watermark;
        let value = |v: &[f64], d: &cascade_features::Decay| -> Vec<f32> {
            v.iter()
                .map(|&s| {
                    if s > f64::NEG_INFINITY {
                        d.value_at(s, as_of) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let long = value(&g.popularity, &g.decay);
        let short = value(&g.popularity_short, &g.decay_short);
        // Fresh items are listed whatever their creation time: the source compares with `now`.
        let mut lists = Self::from_dense(g, as_of, Millis::MAX, &long, &short, size, per_category);
        let by_score = |a: &(Idx, f32), b: &(Idx, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        lists.by_segment = g
            .segment_popularity
            .iter()
            .map(|m| {
                let mut l: Vec<(Idx, f32)> = m
                    .iter()
                    .filter(|&(&i, _)| g.is_servable(i))
                    .map(|(&i, &s)| (i, g.decay.value_at(s, as_of) as f32))
                    .filter(|&(_, s)| s > 0.0)
                    .collect();
                top_k(&mut l, per_category, by_score);
                l
            })
            .collect();
        lists.surface_segment = (0..g.segments.len() as Idx)
            .filter_map(|s| {
                let surface = g.segments.name(s)?.strip_prefix("surface=")?;
                Some((surface.to_string(), s))
            })
            .collect();
        lists
    }

    /// Point in time: only engagements strictly before `now` count, decayed to `now`. Used
    /// when a request replays the past (`context.time` before the newest event).
    pub fn build_at(g: &Inner, now: Millis, size: usize, per_category: usize) -> Self {
        let mut long = vec![0f32; g.item_recs.len()];
        let mut short = vec![0f32; g.item_recs.len()];
        for &(ts, item, w) in &g.time_log {
            if ts < now {
                long[item as usize] += w * g.decay.factor(now - ts) as f32;
                short[item as usize] += w * g.decay_short.factor(now - ts) as f32;
            }
        }
        Self::from_dense(g, now, now, &long, &short, size, per_category)
    }

    fn from_dense(
        g: &Inner,
        as_of: Millis,
        created_until: Millis,
        long: &[f32],
        short: &[f32],
        size: usize,
        per_category: usize,
    ) -> Self {
        let by_score = |a: &(Idx, f32), b: &(Idx, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let servable = |i: usize| g.is_servable(i as Idx);
        let mut all: Vec<(Idx, f32)> = long
            .iter()
            .enumerate()
            .filter(|&(i, &s)| s > 0.0 && servable(i))
            .map(|(i, &s)| (i as Idx, s))
            .collect();
        let mut by_category: Vec<Vec<(Idx, f32)>> = vec![Vec::new(); g.categories.len()];
        for &(i, s) in &all {
            for c in g
                .hot(i)
                .cats
                .into_iter()
                .filter(|&c| c != cascade_core::NONE_IDX)
            {
                by_category[c as usize].push((i, s));
            }
        }
        for list in &mut by_category {
            top_k(list, per_category, by_score);
        }
        // Rates: a decayed sum times its decay rate estimates events per unit time, so the
        // ratio is 1 for a steady item and grows when engagement accelerates.
        let (ls, ll) = (g.decay_short.lambda_per_ms(), g.decay.lambda_per_ms());
        let mut trending: Vec<(Idx, f32)> = short
            .iter()
            .enumerate()
            .filter(|&(i, &s)| s >= TRENDING_MIN_SUPPORT && servable(i))
            .map(|(i, &s)| {
                (
                    i as Idx,
                    ((f64::from(s) * ls) / (f64::from(long[i]) * ll).max(f64::MIN_POSITIVE)) as f32,
                )
            })
            .collect();
        top_k(&mut trending, size, by_score);
        let mut fresh: Vec<(Millis, Idx)> = g
            .item_recs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.as_ref()
                    .filter(|r| !r.hidden && r.created_at <= created_until)
                    .map(|r| (r.created_at, i as Idx))
            })
            .collect();
        top_k(&mut fresh, size, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        top_k(&mut all, size, by_score);
        if all.len() < size {
            // Pad with the newest items without engagement, so that a catalog with servable
            // items always yields a non-empty fallback list.
            let have: std::collections::HashSet<Idx> = all.iter().map(|&(i, _)| i).collect();
            let pad: Vec<(Idx, f32)> = fresh
                .iter()
                .filter(|&&(_, i)| !have.contains(&i))
                .take(size - all.len())
                .map(|&(_, i)| (i, 0.0))
                .collect();
            all.extend(pad);
        }
        Self {
            as_of,
            global: all,
            by_category,
            trending,
            fresh: fresh.into_iter().map(|(t, i)| (i, t)).collect(),
            by_segment: Vec::new(),
            surface_segment: Default::default(),
        }
    }
}

/// Keeps the best `k` of `v` (by `cmp`), sorted.
fn top_k<T>(v: &mut Vec<T>, k: usize, cmp: impl Fn(&T, &T) -> std::cmp::Ordering + Copy) {
    if v.len() > k && k > 0 {
        v.select_nth_unstable_by(k - 1, cmp);
        v.truncate(k);
    } else if k == 0 {
        v.clear();
    }
    v.sort_unstable_by(cmp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::{Event, EventKind, Item, Mutation, Target, TimeInput};
    use cascade_features::{State, state::StateConfig};

    fn item(id: &str, cat: &str, created: Millis, hidden: bool) -> Item {
        Item {
            id: id.into(),
            title: id.into(),
            categories: vec![cat.into()],
            tags: vec![],
            creator_id: None,
            created_at: Some(TimeInput(created)),
            attributes: Default::default(),
            hidden,
            mature: false,
        }
    }

    fn click(item: &str, ts: Millis) -> Event {
        Event {
            kind: EventKind::Click,
            user_id: "u".into(),
            target: Target::Item(item.into()),
            value: 1.0,
            fraction: None,
            ts,
            request_id: None,
            surface: None,
            position: None,
            propensity: None,
            experiment: None,
        }
    }

    #[test]
    fn ranks_by_decayed_engagement_and_pads_with_new_items() {
        let s = State::new(StateConfig::default());
        s.apply(&Mutation::UpsertItems(vec![
            item("a", "X", 0, false),
            item("b", "Y", 0, false),
            item("h", "X", 0, true),
            item("new", "Y", 50, false),
        ]));
        s.apply(&Mutation::Events(vec![
            click("a", 1000),
            click("b", 2000),
            click("b", 3000),
            click("h", 3000),
            click("h", 3000),
            click("h", 3000),
        ]));
        let g = s.read();
        let p = PopularLists::build_live(&g, 10, 10);
        let ids: Vec<&str> = p.global.iter().map(|&(i, _)| g.item_id(i)).collect();
        assert_eq!(
            ids,
            vec!["b", "a", "new"],
            "hidden item excluded, new item pads"
        );
        let x = g.categories.get("X").expect("X") as usize;
        assert_eq!(p.by_category[x].len(), 1);
        // Before b's clicks happened, only a counts.
        let past = PopularLists::build_at(&g, 1500, 1, 10);
        assert_eq!(g.item_id(past.global[0].0), "a");
    }
}
