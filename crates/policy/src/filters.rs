//! Filters: safety (fail closed) and already-seen / excluded items.

use cascade_pipeline::{Candidates, ComponentError, FailMode, Filter, Removal, RequestCtx};

/// Removes items that must never be shown: unknown, deleted or hidden items, items the user
/// hid and items by creators the user hid (by name, or by hiding one of their items), and
/// mature items for users who have not opted in (`attributes.allow_mature = true`).
/// Fails closed: if it cannot decide, the executor removes everything it was asked about.
#[derive(Debug, Default)]
pub struct SafetyFilter;

impl Filter for SafetyFilter {
    fn name(&self) -> &str {
        "safety"
    }

    fn fail_mode(&self) -> FailMode {
        FailMode::Closed
    }

    fn filter(&self, ctx: &RequestCtx, cands: &Candidates) -> Result<Vec<Removal>, ComponentError> {
        let g = ctx.state.read();
        let allow_mature = ctx
            .user
            .attributes
            .as_ref()
            .and_then(|a| a.get("allow_mature"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let user = ctx.user_state(&g);
        let hidden_by_user = user.map(|u| u.hidden_items.as_slice());
        let creators_hidden = user.map_or(&[][..], |u| u.hidden_creators.as_slice());
        let mut out = Vec::new();
        for (index, c) in cands.items.iter().enumerate() {
            let h = g.hot(c.item);
            let reason = if !h.exists() {
                Some("unknown_or_deleted")
            } else if h.hidden() {
                Some("hidden")
            } else if h.mature() && !allow_mature {
                Some("mature")
            } else if hidden_by_user.is_some_and(|v| v.binary_search(&c.item).is_ok()) {
                Some("hidden_by_user")
            } else if !creators_hidden.is_empty()
                && creators_hidden.binary_search(&h.creator).is_ok()
            {
                Some("creator_hidden_by_user")
            } else {
                None
            };
            if let Some(reason) = reason {
                out.push(Removal { index, reason });
            }
        }
        Ok(out)
    }
}

/// Removes what the user already interacted with before `now`, this session's items, and the
/// request's `exclude` list.
#[derive(Debug, Default)]
pub struct SeenFilter;

impl Filter for SeenFilter {
    fn name(&self) -> &str {
        "seen"
    }

    fn filter(&self, ctx: &RequestCtx, cands: &Candidates) -> Result<Vec<Removal>, ComponentError> {
        let g = ctx.state.read();
        let user = ctx.user_state(&g);
        // Live: everything applied counts (even an event stamped a moment ahead); replay:
        // only what happened strictly before `now` (second resolution, as histories keep).
        let until = if ctx.live {
            u32::MAX
        } else {
            (ctx.query.now.max(0) / 1000).min(i64::from(u32::MAX)) as u32
        };
        let mut out = Vec::new();
        for (index, c) in cands.items.iter().enumerate() {
            let reason = if ctx.excluded(c.item) {
                Some("excluded")
            } else if ctx.session.contains(&c.item) {
                Some("in_session")
            } else if user.is_some_and(|u| u.has_seen(c.item, until)) {
                Some("already_seen")
            } else {
                None
            };
            if let Some(reason) = reason {
                out.push(Removal { index, reason });
            }
        }
        Ok(out)
    }
}

/// At most `max_impressions` impressions of an item per user within `window_s` without the
/// user engaging with it in between (impressions the server logs for every response).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrequencyCapConfig {
    pub max_impressions: u32,
    pub window_s: u32,
}

impl Default for FrequencyCapConfig {
    fn default() -> Self {
        Self {
            max_impressions: 3,
            window_s: 86_400,
        }
    }
}

/// Removes items the user was already shown `max_impressions` times within the window since
/// their last interaction with the item (reason `frequency_cap`). Counts only impressions
/// before `now`.
#[derive(Debug)]
pub struct FrequencyCap {
    pub config: FrequencyCapConfig,
}

impl Filter for FrequencyCap {
    fn name(&self) -> &str {
        "frequency_cap"
    }

    fn filter(&self, ctx: &RequestCtx, cands: &Candidates) -> Result<Vec<Removal>, ComponentError> {
        let g = ctx.state.read();
        let Some(u) = ctx.user_state(&g) else {
            return Ok(Vec::new());
        };
        let now_s = u32::try_from((ctx.query.now / 1000).max(0)).unwrap_or(u32::MAX);
        let from = now_s.saturating_sub(self.config.window_s);
        // Latest interaction per item, then impressions since it, inside the window.
        let mut last: Vec<(u32, u32)> = u
            .history
            .iter()
            .filter(|i| i.ts_s < now_s)
            .map(|i| (i.item, i.ts_s))
            .collect();
        last.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        last.dedup_by_key(|x| x.0);
        let mut counts: Vec<u32> = u
            .shown
            .iter()
            .filter(|&&(item, t)| {
                t >= from
                    && t < now_s
                    && last
                        .binary_search_by_key(&item, |x| x.0)
                        .map_or(true, |p| last[p].1 < t)
            })
            .map(|&(item, _)| item)
            .collect();
        counts.sort_unstable();
        let shown_times = |item: u32| {
            let a = counts.partition_point(|&x| x < item);
            let b = counts.partition_point(|&x| x <= item);
            (b - a) as u32
        };
        Ok(cands
            .items
            .iter()
            .enumerate()
            .filter(|(_, c)| shown_times(c.item) >= self.config.max_impressions)
            .map(|(index, _)| Removal {
                index,
                reason: "frequency_cap",
            })
            .collect())
    }
}
