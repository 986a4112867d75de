//! Popular lists: time-decayed engagement, global and per category, padded with new items.

use cascade_core::{Idx, Millis};
use cascade_features::Inner;

/// Ranked popular items with decayed scores, as of one point in time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PopularLists {
    /// The time the scores are decayed to.
    pub as_of: Millis,
    /// Best first. Never empty while the catalog has a servable item.
    pub global: Vec<(Idx, f32)>,
    /// By category index, best first.
    pub by_category: Vec<Vec<(Idx, f32)>>,
}

impl PopularLists {
    /// From the live decayed counters (the normal case: `now` at or after every event).
    pub fn build_live(g: &Inner, size: usize, per_category: usize) -> Self {
        let as_of = g.watermark;
        let scores = g
            .popularity
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s > f64::NEG_INFINITY)
            .map(|(i, &s)| (i as Idx, g.decay.value_at(s, as_of) as f32));
        Self::from_scores(g, as_of, scores, size, per_category)
    }

    /// Point in time: only engagements strictly before `now` count, decayed to `now`. Used
    /// when a request replays the past (`context.time` before the newest event).
    pub fn build_at(g: &Inner, now: Millis, size: usize, per_category: usize) -> Self {
        let mut acc = vec![0f64; g.item_recs.len()];
        for &(ts, item, w) in &g.time_log {
            if ts < now {
                acc[item as usize] += f64::from(w) * g.decay.factor(now - ts);
            }
        }
        let scores = acc
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s > 0.0)
            .map(|(i, &s)| (i as Idx, s as f32));
        Self::from_scores(g, now, scores, size, per_category)
    }

    fn from_scores(
        g: &Inner,
        as_of: Millis,
        scores: impl Iterator<Item = (Idx, f32)>,
        size: usize,
        per_category: usize,
    ) -> Self {
        let mut all: Vec<(Idx, f32)> = scores.filter(|&(i, _)| g.is_servable(i)).collect();
        let by_score = |a: &(Idx, f32), b: &(Idx, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let mut by_category: Vec<Vec<(Idx, f32)>> = vec![Vec::new(); g.categories.len()];
        for &(i, s) in &all {
            if let Some(rec) = g.item(i) {
                for &c in rec.categories.iter() {
                    by_category[c as usize].push((i, s));
                }
            }
        }
        for list in &mut by_category {
            top_k(list, per_category, by_score);
        }
        top_k(&mut all, size, by_score);
        if all.len() < size {
            // Pad with the newest servable items without engagement, so that a catalog with
            // items always yields a non-empty fallback list.
            let mut fresh: Vec<(Millis, Idx)> = g
                .item_recs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    r.as_ref()
                        .filter(|r| !r.hidden)
                        .map(|r| (r.created_at, i as Idx))
                })
                .filter(|&(_, i)| g.engagements[i as usize] == 0)
                .collect();
            let need = size - all.len();
            top_k(&mut fresh, need, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            all.extend(fresh.into_iter().map(|(_, i)| (i, 0.0)));
        }
        Self {
            as_of,
            global: all,
            by_category,
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
