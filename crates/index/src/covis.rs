//! Co-visitation neighbours: items that users interact with close together, directed.
//!
//! For every pair of items within `window` positions of each other in a user's history, the
//! later item gains `forward / distance` as a neighbour of the earlier one, and the earlier
//! gains `backward / distance` as a neighbour of the later, damped when the two fall in
//! different sessions. Order matters: what people watch *next* is the strongest signal of
//! what they will want next. Built with one dense accumulator per thread (no pair arrays), so
//! memory is O(items) per thread plus the output.

use cascade_core::Idx;
use cascade_features::Inner;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Build parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoVisConfig {
    /// Positions apart that still count as co-visited.
    pub window: usize,
    /// Most recent items per user that are used.
    pub max_history: usize,
    pub forward_weight: f32,
    pub backward_weight: f32,
    /// Gap (seconds) beyond which two interactions count as different sessions.
    pub session_gap_s: u32,
    /// Multiplier for pairs across sessions.
    pub cross_session: f32,
    /// Neighbour weights are divided by `count(b)^popularity_exponent` so that
    /// ubiquitous items do not dominate every list (0 = raw counts).
    pub popularity_exponent: f32,
    /// Neighbours kept per item.
    pub top_k: usize,
}

impl Default for CoVisConfig {
    fn default() -> Self {
        Self {
            window: 50,
            max_history: 500,
            forward_weight: 1.0,
            backward_weight: 0.2,
            session_gap_s: 3 * 3600,
            cross_session: 0.5,
            popularity_exponent: 0.3,
            top_k: 100,
        }
    }
}

/// Neighbour lists in compressed rows: `neighbors[offsets[a]..offsets[a+1]]`, best first.
/// Also holds the embedding-neighbour lists, which have the same shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoVisitation {
    offsets: Vec<u32>,
    neighbors: Vec<Idx>,
    weights: Vec<f32>,
}

/// A user's history as (item, unix seconds), oldest first.
pub type Sequence = Vec<(Idx, u32)>;

impl CoVisitation {
    /// Copies every user's positive-engagement sequence out of the state (under the caller's read
    /// lock), ordered by time then item, truncated to the most recent `max_history`.
    pub fn sequences(g: &Inner, max_history: usize) -> Vec<Sequence> {
        g.user_states
            .iter()
            .filter(|u| u.engaged.len() >= 2)
            .map(|u| {
                let mut s: Sequence = u.engaged.clone();
                s.sort_unstable_by_key(|&(i, t)| (t, i));
                if s.len() > max_history {
                    s.drain(..s.len() - max_history);
                }
                s
            })
            .collect()
    }

    /// Builds neighbour lists for `n_items` items from user sequences.
    pub fn build(seqs: &[Sequence], n_items: usize, cfg: &CoVisConfig) -> Self {
        // Inverted index: item -> (sequence, position), in compressed rows.
        let mut counts = vec![0u32; n_items + 1];
        for s in seqs {
            for &(i, _) in s {
                counts[i as usize + 1] += 1;
            }
        }
        let mut starts = counts.clone();
        for k in 1..starts.len() {
            starts[k] += starts[k - 1];
        }
        let mut occ = vec![(0u32, 0u32); starts[n_items] as usize];
        let mut fill = starts.clone();
        for (si, s) in seqs.iter().enumerate() {
            for (p, &(i, _)) in s.iter().enumerate() {
                let slot = &mut fill[i as usize];
                occ[*slot as usize] = (si as u32, p as u32);
                *slot += 1;
            }
        }
        let norm: Vec<f32> = counts[1..]
            .iter()
            .map(|&c| (c.max(1) as f32).powf(cfg.popularity_exponent))
            .collect();
        let rows: Vec<Vec<(Idx, f32)>> = (0..n_items)
            .into_par_iter()
            .map_init(
                || (vec![0f32; n_items], Vec::<Idx>::new()),
                |(acc, touched), a| {
                    let occs = &occ[starts[a] as usize..starts[a + 1] as usize];
                    for &(si, p) in occs {
                        let s = &seqs[si as usize];
                        let p = p as usize;
                        let t_a = s[p].1;
                        let lo = p.saturating_sub(cfg.window);
                        let hi = (p + cfg.window + 1).min(s.len());
                        for (q, &(b, t_b)) in s.iter().enumerate().take(hi).skip(lo) {
                            if q == p || b as usize == a {
                                continue;
                            }
                            let dist = q.abs_diff(p) as f32;
                            let dir = if q > p {
                                cfg.forward_weight
                            } else {
                                cfg.backward_weight
                            };
                            let same_session = t_a.abs_diff(t_b) <= cfg.session_gap_s;
                            let w = dir / dist * if same_session { 1.0 } else { cfg.cross_session };
                            if acc[b as usize] == 0.0 {
                                touched.push(b);
                            }
                            acc[b as usize] += w;
                        }
                    }
                    let mut row: Vec<(Idx, f32)> = touched
                        .iter()
                        .map(|&b| (b, acc[b as usize] / norm[b as usize]))
                        .filter(|&(_, w)| w > 0.0)
                        .collect();
                    for &b in touched.iter() {
                        acc[b as usize] = 0.0;
                    }
                    touched.clear();
                    let by_w =
                        |x: &(Idx, f32), y: &(Idx, f32)| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0));
                    if row.len() > cfg.top_k && cfg.top_k > 0 {
                        row.select_nth_unstable_by(cfg.top_k - 1, by_w);
                        row.truncate(cfg.top_k);
                    }
                    row.sort_unstable_by(by_w);
                    row
                },
            )
            .collect();
        Self::from_rows(rows)
    }

    /// Packs per-item neighbour rows (each best first).
    pub fn from_rows(rows: Vec<Vec<(Idx, f32)>>) -> Self {
        let mut out = CoVisitation {
            offsets: Vec::with_capacity(rows.len() + 1),
            neighbors: Vec::with_capacity(rows.iter().map(Vec::len).sum()),
            weights: Vec::new(),
        };
        out.weights.reserve(out.neighbors.capacity());
        out.offsets.push(0);
        for row in rows {
            for (b, w) in row {
                out.neighbors.push(b);
                out.weights.push(w);
            }
            out.offsets.push(out.neighbors.len() as u32);
        }
        out
    }

    /// Neighbours of `item`, best first (empty for unknown items).
    pub fn neighbors(&self, item: Idx) -> (&[Idx], &[f32]) {
        let i = item as usize;
        if i + 1 >= self.offsets.len() {
            return (&[], &[]);
        }
        let (s, e) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        (&self.neighbors[s..e], &self.weights[s..e])
    }

    /// Items covered (rows).
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.neighbors.is_empty()
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.offsets.capacity() * 4 + self.neighbors.capacity() * 4 + self.weights.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_neighbours_prefer_what_comes_next() {
        // Users watch 0 then 1 then 2; one user watches 2 then 0.
        let seqs = vec![
            vec![(0, 10), (1, 20), (2, 30)],
            vec![(0, 10), (1, 20), (2, 30)],
            vec![(2, 10), (0, 20)],
        ];
        let cfg = CoVisConfig {
            popularity_exponent: 0.0,
            ..Default::default()
        };
        let cv = CoVisitation::build(&seqs, 4, &cfg);
        let (n, w) = cv.neighbors(0);
        assert_eq!(n[0], 1, "1 follows 0 directly in two sequences");
        assert!(w[0] > w[1]);
        let (n1, _) = cv.neighbors(1);
        assert_eq!(n1[0], 2, "forward beats backward");
        assert!(cv.neighbors(3).0.is_empty());
        assert!(cv.neighbors(99).0.is_empty());
    }

    #[test]
    fn window_and_sessions_limit_pairs() {
        let seqs = vec![vec![(0, 0), (1, 1), (2, 100_000)]];
        let cfg = CoVisConfig {
            window: 1,
            popularity_exponent: 0.0,
            session_gap_s: 10,
            cross_session: 0.25,
            backward_weight: 0.5,
            ..Default::default()
        };
        let cv = CoVisitation::build(&seqs, 3, &cfg);
        assert_eq!(cv.neighbors(0).0, &[1], "2 is outside the window of 0");
        let (n, w) = cv.neighbors(1);
        assert_eq!(n, &[0, 2]);
        // 1→2 forward (1.0) damped by session change (0.25) vs 1→0 backward (0.5).
        assert!(
            (w[0] - 0.5).abs() < 1e-6 && (w[1] - 0.25).abs() < 1e-6,
            "{w:?}"
        );
    }
}
