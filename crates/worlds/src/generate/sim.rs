//! The users and their sessions: taste profiles, session starts, continuations and fresh
//! picks, and each exposure turned into events by the affinity.

use super::catalog::*;
use super::draw::*;
use super::params::*;
use cascade_core::{Event, EventKind, Millis, Target, User};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use serde_json::{Map, Value};
use std::collections::VecDeque;

/// A user's hidden preferences, derived from hash(seed, user).
pub(crate) struct Profile {
    /// Favourite categories with weights summing to 1.
    pub(crate) favs: Vec<(u32, f64)>,
    pub(crate) taste: [f32; DIM],
    /// Creator indexes followed at the start.
    pub(crate) follows: Vec<u32>,
    pub(crate) locale: &'static str,
    pub(crate) age_band: &'static str,
    /// Hour of day (UTC) around which the user's sessions start.
    pub(crate) pref_hour: f64,
}

/// One event, compact until materialized: 32 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ev {
    pub(crate) ts: Millis,
    pub(crate) user: u32,
    /// Item index, or creator index for `follow`.
    pub(crate) target: u32,
    pub(crate) value: f32,
    /// Negative when absent.
    pub(crate) fraction: f32,
    pub(crate) kind: EventKind,
}

impl Ev {
    pub(crate) fn materialize(&self) -> Event {
        let target = if self.kind == EventKind::Follow {
            Target::Creator(format!("c{}", self.target))
        } else {
            Target::Item(format!("i{}", self.target))
        };
        Event {
            kind: self.kind,
            user_id: format!("u{}", self.user),
            target,
            value: self.value,
            fraction: (self.fraction >= 0.0).then_some(self.fraction),
            ts: self.ts,
            request_id: None,
            surface: None,
            position: None,
            propensity: None,
            experiment: None,
        }
    }
}

/// The mutable side of one user's simulation.
pub(crate) struct UserState {
    pub(crate) user: u32,
    pub(crate) budget: usize,
    pub(crate) end_ms: Millis,
    /// The time of the next event; only ever moves forward.
    pub(crate) t: Millis,
    /// Multiplies every time step: below 1 for users with more events than the period holds at
    /// a human pace, so that their events still fit.
    pub(crate) pace: f64,
    pub(crate) out: Vec<Ev>,
    pub(crate) followed: Vec<u32>,
    pub(crate) recent: VecDeque<u32>,
}

impl UserState {
    pub(crate) fn full(&self) -> bool {
        self.out.len() >= self.budget || self.t >= self.end_ms
    }

    pub(crate) fn emit(&mut self, kind: EventKind, target: u32, value: f32, fraction: Option<f32>) {
        if self.full() {
            return;
        }
        self.out.push(Ev {
            ts: self.t,
            user: self.user,
            target,
            value,
            fraction: fraction.unwrap_or(-1.0),
            kind,
        });
        // Strictly increasing timestamps per user make (ts, user) a unique sort key.
        self.t += 1;
    }

    pub(crate) fn advance(&mut self, ms: f64) {
        self.t += (ms * self.pace) as i64;
    }

    pub(crate) fn wait<R: Rng + ?Sized>(&mut self, rng: &mut R, min_ms: i64, spread_ms: i64) {
        let ms = min_ms + rng.random_range(0..spread_ms.max(1));
        self.advance(ms as f64);
    }
}

pub(crate) struct Sim<'a> {
    pub(crate) base: &'a Base,
    pub(crate) cat: &'a Catalog,
}

impl Sim<'_> {
    pub(crate) fn profile(&self, u: u32) -> Profile {
        let b = self.base;
        let mut rng = SmallRng::seed_from_u64(hash(b.seed, S_USER, u64::from(u)));
        let r: f64 = rng.random();
        let want = if r < 0.4 {
            1
        } else if r < 0.8 {
            2
        } else {
            3
        };
        let mut favs: Vec<(u32, f64)> = Vec::with_capacity(want);
        for _ in 0..want * 8 {
            if favs.len() == want {
                break;
            }
            let c = cum_draw(&self.cat.live_cum, rng.random()) as u32;
            if favs.iter().all(|&(f, _)| f != c) {
                // The first favourite dominates.
                let lead = if favs.is_empty() { 2.0 } else { 1.0 };
                favs.push((c, lead * (0.5 + rng.random::<f64>())));
            }
        }
        let total: f64 = favs.iter().map(|&(_, w)| w).sum();
        for f in &mut favs {
            f.1 /= total;
        }
        let mut taste = [0f32; DIM];
        for &(c, w) in &favs {
            for (t, x) in taste.iter_mut().zip(&b.centroids[c as usize]) {
                *t += w as f32 * x;
            }
        }
        for t in &mut taste {
            *t += TASTE_NOISE * gauss(&mut rng) as f32;
        }
        normalize(&mut taste);
        let locale = weighted(&mut rng, &LOCALES);
        let age_band = weighted(&mut rng, &AGE_BANDS);
        let pref_hour = (20.0 + 3.0 * gauss(&mut rng)).rem_euclid(24.0);
        // Follows: creators of popular items in the favourite categories, i.e. mostly creators
        // whose items the user will meet and like.
        let n_follows = if rng.random::<f64>() < 0.35 {
            0
        } else {
            1 + rng.random_range(0..5usize)
        };
        let mut follows = Vec::with_capacity(n_follows);
        for _ in 0..n_follows {
            let c = pick_fav(&mut rng, &favs);
            if let Some(i) = self.cat.pop_draw(c, rng.random()) {
                let k = b.item_core(i).creator;
                if !follows.contains(&k) {
                    follows.push(k);
                }
            }
        }
        Profile {
            favs,
            taste,
            follows,
            locale,
            age_band,
            pref_hour,
        }
    }

    pub(crate) fn make_user(&self, u: u32, prof: &Profile) -> User {
        let mut attributes = Map::new();
        attributes.insert("locale".to_string(), Value::from(prof.locale));
        attributes.insert("age_band".to_string(), Value::from(prof.age_band));
        User {
            id: format!("u{u}"),
            attributes,
            follows: prof.follows.iter().map(|k| format!("c{k}")).collect(),
        }
    }

    /// All events of one user, in time order, at most `budget` of them.
    pub(crate) fn simulate(&self, u: u32, budget: usize) -> Vec<Ev> {
        if budget == 0 {
            return Vec::new();
        }
        let b = self.base;
        let prof = self.profile(u);
        let mut rng = SmallRng::seed_from_u64(hash(b.seed, S_SIM, u64::from(u)));
        let taste_cum = cumulative((0..b.n_cats).map(|c| {
            if self.cat.is_live(c) {
                let d = f64::from(dot(&prof.taste, &b.centroids[c]));
                (CATEGORY_BETA * (d - 1.0)).exp()
            } else {
                0.0
            }
        }));
        // About four minutes per event at a human pace; compress time when that would fill
        // more than 40% of the period.
        let needed = budget as f64 * 4.0 * MINUTE_MS as f64;
        let stay = self.stay(u);
        let pace =
            (0.4 * stay.map_or(b.end_ms - b.start_ms, |(a, l)| l - a) as f64 / needed).min(1.0);
        let mut st = UserState {
            user: u,
            budget,
            end_ms: stay.map_or(b.end_ms, |(_, l)| l.min(b.end_ms)),
            t: 0,
            pace,
            out: Vec::with_capacity(budget),
            followed: prof.follows.clone(),
            recent: VecDeque::with_capacity(RECENT),
        };
        let starts = self.session_starts(&mut rng, &prof, budget, stay);
        // Guards against users whose picks keep failing (e.g. a catalog of future items).
        let mut exposures_left = budget * 8 + 64;
        for (s, &start) in starts.iter().enumerate() {
            let remaining = budget - st.out.len();
            if remaining == 0 || exposures_left == 0 || st.t >= st.end_ms {
                break;
            }
            let sessions_left = starts.len() - s;
            let target = if sessions_left == 1 {
                remaining
            } else {
                let share = remaining as f64 / sessions_left as f64;
                ((share * (0.4 + 1.2 * rng.random::<f64>())).ceil() as usize).clamp(1, remaining)
            };
            let goal = st.out.len() + target;
            // Sessions never overlap: a planned start inside the previous session moves past it.
            let pause = (MINUTE_MS + rng.random_range(0..10 * MINUTE_MS)) as f64 * pace;
            st.t = start.max(st.t + pause as i64);
            let mut prev: Option<(u32, ItemCore)> = None;
            while st.out.len() < goal && exposures_left > 0 && !st.full() {
                exposures_left -= 1;
                match self.pick(&mut rng, &prof, &taste_cum, &st, prev) {
                    Some((item, core)) => {
                        self.expose(&mut rng, &prof, &mut st, item, &core);
                        if st.recent.len() == RECENT {
                            st.recent.pop_front();
                        }
                        st.recent.push_back(item);
                        prev = Some((item, core));
                    }
                    None => prev = None,
                }
                // Seconds to a few minutes between items.
                st.advance(3_000.0 + exp1(&mut rng) * 40_000.0);
            }
        }
        // A user who arrived before the period: what they did before it is not in the log.
        st.out.retain(|e| e.ts >= b.start_ms);
        st.out
    }

    /// When users arrive and leave: the user's stay `[arrival, departure)`, the arrival
    /// uniform over `[start - lifetime, end)` so that as many users are active, and of the
    /// same account ages, at every instant of the period.
    pub(crate) fn stay(&self, u: u32) -> Option<(Millis, Millis)> {
        let b = self.base;
        let life = b.lifetime_ms?;
        let h = hash(b.seed, S_ARRIVAL, u64::from(u));
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        let arrival = b.start_ms - life + (unit * (b.end_ms - b.start_ms + life) as f64) as i64;
        Some((arrival, arrival + life))
    }

    /// Session start times: bursts on random days near the user's usual hour, with follow-up
    /// sessions minutes to hours later.
    pub(crate) fn session_starts(
        &self,
        rng: &mut SmallRng,
        prof: &Profile,
        budget: usize,
        stay: Option<(Millis, Millis)>,
    ) -> Vec<Millis> {
        let b = self.base;
        let per_session = EVENTS_PER_SESSION * (0.6 + 0.8 * rng.random::<f64>());
        let n = ((budget as f64 / per_session).round() as usize).clamp(1, budget);
        let period = b.end_ms - b.start_ms;
        let (first, until) = match stay {
            // The whole stay, past the period's end too: the simulation stops at the end.
            Some(stay) => stay,
            // Some light users join during the period instead of being there from its start.
            None if budget < 200 && rng.random::<f64>() < 0.3 => (
                b.start_ms + (rng.random::<f64>() * 0.8 * period as f64) as i64,
                b.end_ms,
            ),
            None => (b.start_ms, b.end_ms),
        };
        // Keep starts away from the very end so sessions are not cut off.
        let last = (until - 2 * HOUR_MS).max(first);
        let span = (until - first).max(1);
        let mut starts = Vec::with_capacity(n);
        let mut anchor = first;
        for s in 0..n {
            if s == 0 || rng.random::<f64>() < 0.35 {
                let at = first + rng.random_range(0..span);
                let day0 = at - at.rem_euclid(DAY_MS);
                let hour = (prof.pref_hour + 2.0 * gauss(rng)).rem_euclid(24.0);
                anchor = day0 + (hour * HOUR_MS as f64) as i64;
            } else {
                anchor += 5 * MINUTE_MS + (exp1(rng) * 90.0 * MINUTE_MS as f64) as i64;
            }
            starts.push(anchor.clamp(first, last));
        }
        starts.sort_unstable();
        starts
    }

    /// The next item to show: a proposal, then fresh picks if it is not yet released or was
    /// just seen. Gives up after a few tries (the exposure is then lost).
    pub(crate) fn pick(
        &self,
        rng: &mut SmallRng,
        prof: &Profile,
        taste_cum: &[f64],
        st: &UserState,
        prev: Option<(u32, ItemCore)>,
    ) -> Option<(u32, ItemCore)> {
        for attempt in 0..4 {
            let cand = if attempt == 0 {
                self.propose(rng, prof, taste_cum, &st.followed, prev)
            } else {
                self.fresh(rng, prof, taste_cum)
            };
            let Some(i) = cand else { continue };
            let core = self.base.item_core(i);
            if core.created_at > st.t {
                continue;
            }
            // The last attempt accepts a repeat: people do rewatch.
            if attempt < 3 && st.recent.contains(&i) {
                continue;
            }
            return Some((i, core));
        }
        None
    }

    pub(crate) fn propose(
        &self,
        rng: &mut SmallRng,
        prof: &Profile,
        taste_cum: &[f64],
        followed: &[u32],
        prev: Option<(u32, ItemCore)>,
    ) -> Option<u32> {
        if let Some((p, core)) = prev
            && rng.random::<f64>() < P_CONTINUE
        {
            return self.continuation(rng, p, &core);
        }
        if !followed.is_empty() && rng.random::<f64>() < P_FOLLOWED {
            let k = followed[rng.random_range(0..followed.len())];
            let items = self.cat.creator_slice(k);
            if !items.is_empty() {
                return Some(items[rng.random_range(0..items.len())]);
            }
        }
        self.fresh(rng, prof, taste_cum)
    }

    /// What follows item `p` in a session. The related items are fixed per item (the same for
    /// every user), which is the item-to-item signal sequence models can learn.
    pub(crate) fn continuation(&self, rng: &mut SmallRng, p: u32, core: &ItemCore) -> Option<u32> {
        let r: f64 = rng.random();
        if r < 0.5 {
            let k = if rng.random::<f64>() < 0.7 {
                0
            } else {
                1 + rng.random_range(0..2u64)
            };
            let u = to_unit(hash(self.base.seed, S_RELATED, u64::from(p) * 4 + k));
            self.cat.uniform_in_cat(core.cat, u)
        } else if r < 0.75 {
            let items = self.cat.creator_slice(core.creator);
            if items.is_empty() {
                return None;
            }
            if rng.random::<f64>() < 0.6 {
                // The creator's next item, like the next episode of a series.
                let pos = items.binary_search(&p).unwrap_or(0);
                Some(items[(pos + 1) % items.len()])
            } else {
                Some(items[rng.random_range(0..items.len())])
            }
        } else {
            self.cat.pop_draw(core.cat, rng.random())
        }
    }

    /// A fresh pick: a category by favourites or taste, then an item by popularity.
    pub(crate) fn fresh(
        &self,
        rng: &mut SmallRng,
        prof: &Profile,
        taste_cum: &[f64],
    ) -> Option<u32> {
        let c = if rng.random::<f64>() < P_FAVOURITE {
            pick_fav(rng, &prof.favs)
        } else {
            cum_draw(taste_cum, rng.random()) as u32
        };
        self.cat.pop_draw(c, rng.random())
    }

    /// Turns one exposure into events according to the user's affinity for the item.
    pub(crate) fn expose(
        &self,
        rng: &mut SmallRng,
        prof: &Profile,
        st: &mut UserState,
        item: u32,
        core: &ItemCore,
    ) {
        let v = self.base.item_vec(item, core);
        let follows_creator = st.followed.contains(&core.creator);
        let logit = 5.0 * f64::from(dot(&prof.taste, &v)) - 2.0
            + f64::from(core.quality)
            + if follows_creator { 0.5 } else { 0.0 };
        let p = 1.0 / (1.0 + (-logit).exp());

        if rng.random::<f64>() < 0.35 {
            st.emit(EventKind::Impression, item, 1.0, None);
            st.wait(rng, 500, 2_500);
        }
        if rng.random::<f64>() < 0.08 + 0.84 * p {
            let kind = if rng.random::<f64>() < 0.6 {
                EventKind::Click
            } else {
                EventKind::View
            };
            st.emit(kind, item, 1.0, None);
            st.wait(rng, 1_000, 4_000);
            if p > 0.4 && rng.random::<f64>() < p {
                // Better matches are watched further.
                let fraction = (0.1 + 0.8 * p + 0.15 * gauss(rng)).clamp(0.02, 1.0);
                let fraction = (fraction * 1000.0).round() / 1000.0;
                let secs = (fraction * f64::from(core.duration_s)).round().max(1.0);
                // Logged when the watching ends.
                st.advance(secs * 1000.0);
                st.emit(EventKind::Watch, item, secs as f32, Some(fraction as f32));
            }
            if p > 0.6 && rng.random::<f64>() < (p - 0.45) * 1.5 {
                st.wait(rng, 500, 3_000);
                st.emit(EventKind::Like, item, 1.0, None);
            }
            if rng.random::<f64>() < 0.03 * p {
                st.wait(rng, 1_000, 5_000);
                st.emit(EventKind::Share, item, 1.0, None);
            }
            if rng.random::<f64>() < 0.008 * p {
                st.wait(rng, 2_000, 20_000);
                st.emit(EventKind::Purchase, item, 1.0, None);
            }
            if p > 0.7 && !follows_creator && rng.random::<f64>() < 0.015 {
                st.wait(rng, 500, 3_000);
                st.emit(EventKind::Follow, core.creator, 1.0, None);
                st.followed.push(core.creator);
            }
        } else if p < 0.4 && rng.random::<f64>() < 0.55 {
            st.wait(rng, 300, 2_000);
            st.emit(EventKind::Skip, item, 1.0, None);
        } else if rng.random::<f64>() < 0.02 {
            st.wait(rng, 500, 2_000);
            st.emit(EventKind::Hide, item, 1.0, None);
        }
    }
}

pub(crate) fn pick_fav<R: Rng + ?Sized>(rng: &mut R, favs: &[(u32, f64)]) -> u32 {
    let mut x = rng.random::<f64>();
    for &(c, w) in favs {
        if x < w {
            return c;
        }
        x -= w;
    }
    favs.last().map_or(0, |&(c, _)| c)
}

// ---------------------------------------------------------------------------------------------
// JSONL output
