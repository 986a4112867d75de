//! Implicit-feedback matrix factorisation (ALS with confidence weighting, Hu, Koren & Volinsky
//! 2008), solved with a few conjugate-gradient steps per row (Takács et al. 2011), as the
//! `implicit` library does: each half-iteration fixes one side and solves
//! `(YᵀY + Yᵀ(Cᵤ − I)Y + λI) xᵤ = YᵀCᵤp(u)` for every row in parallel, warm-started.

use cascade_core::Idx;
use faer::MatRef;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Training parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlsConfig {
    pub factors: usize,
    pub regularization: f32,
    /// Confidence of an observed interaction is `1 + alpha · weight` (implicit's `alpha · r`
    /// with its alpha = 1 is `alpha = 0` here).
    pub alpha: f32,
    pub iterations: usize,
    pub cg_steps: usize,
    pub seed: u64,
}

impl Default for AlsConfig {
    fn default() -> Self {
        Self {
            factors: 64,
            regularization: 1.0,
            alpha: 1.0,
            iterations: 15,
            cg_steps: 3,
            seed: 42,
        }
    }
}

/// Sparse interactions in compressed rows: `cols[offsets[r]..offsets[r+1]]` with weights.
#[derive(Debug, Clone, Default)]
pub struct Interactions {
    pub offsets: Vec<usize>,
    pub cols: Vec<Idx>,
    pub weights: Vec<f32>,
}

impl Interactions {
    /// Builds rows from (row, col, weight) triples; duplicates are summed.
    pub fn from_triples(rows: usize, mut t: Vec<(Idx, Idx, f32)>) -> Self {
        t.sort_unstable_by_key(|&(r, c, _)| (r, c));
        let mut out = Interactions {
            offsets: vec![0; rows + 1],
            cols: Vec::with_capacity(t.len()),
            weights: Vec::new(),
        };
        let mut last: Option<(Idx, Idx)> = None;
        for (r, c, w) in t {
            if last == Some((r, c)) {
                if let Some(x) = out.weights.last_mut() {
                    *x += w;
                }
                continue;
            }
            last = Some((r, c));
            out.cols.push(c);
            out.weights.push(w);
            out.offsets[r as usize + 1] += 1;
        }
        for r in 0..rows {
            out.offsets[r + 1] += out.offsets[r];
        }
        out
    }

    /// Every user's positive engagements in the state as `(user, item, 1)`: what the
    /// embeddings learn from (skips and hides are not taste).
    pub fn engaged(g: &cascade_features::Inner) -> impl Iterator<Item = (Idx, Idx, f32)> + '_ {
        g.user_states
            .iter()
            .enumerate()
            .flat_map(|(u, s)| s.engaged.iter().map(move |&(i, _)| (u as Idx, i, 1.0)))
    }

    pub fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    fn row(&self, r: usize) -> (&[Idx], &[f32]) {
        let (s, e) = (self.offsets[r], self.offsets[r + 1]);
        (&self.cols[s..e], &self.weights[s..e])
    }

    /// The same interactions by column.
    pub fn transpose(&self, cols: usize) -> Self {
        let mut t = Vec::with_capacity(self.cols.len());
        for r in 0..self.rows() {
            let (c, w) = self.row(r);
            t.extend(c.iter().zip(w).map(|(&c, &w)| (c, r as Idx, w)));
        }
        Self::from_triples(cols, t)
    }
}

/// Learned user and item vectors, row-major.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    pub dim: usize,
    pub users: Vec<f32>,
    pub items: Vec<f32>,
    /// `XᵀX` of the user vectors, kept so new items can be folded in without a retrain.
    #[serde(default)]
    pub user_gram: Vec<f32>,
    /// The solver's settings, which a fold-in must share.
    #[serde(default)]
    pub als: AlsConfig,
}

impl Embeddings {
    pub fn user(&self, u: Idx) -> Option<&[f32]> {
        let s = u as usize * self.dim;
        self.users.get(s..s + self.dim)
    }

    pub fn item(&self, i: Idx) -> Option<&[f32]> {
        let s = i as usize * self.dim;
        self.items.get(s..s + self.dim)
    }

    pub fn n_items(&self) -> usize {
        self.items.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn n_users(&self) -> usize {
        self.users.len().checked_div(self.dim).unwrap_or(0)
    }

    /// A vector for an item the model was not trained on, from the users who engaged with
    /// it (`(user, weight)`): the exact ALS item update against the fixed user vectors (the
    /// same normal equations as training), so it lands where a retrain would put it. `None`
    /// when none of those users has a vector.
    pub fn fold_in_item(&self, engaged: &[(Idx, f32)]) -> Option<Vec<f32>> {
        let f = self.dim;
        let mut cols = Vec::with_capacity(engaged.len());
        let mut ws = Vec::with_capacity(engaged.len());
        for &(u, w) in engaged {
            if (u as usize) < self.n_users() {
                cols.push(u);
                ws.push(w);
            }
        }
        if cols.is_empty() || self.user_gram.len() != f * f {
            return None;
        }
        let mut x = vec![0f32; f];
        let cfg = AlsConfig {
            cg_steps: f.min(32),
            factors: f,
            ..self.als
        };
        cg_row(
            &mut x,
            &self.users,
            &self.user_gram,
            &cols,
            &ws,
            &cfg,
            &mut Scratch::new(f),
        );
        x.iter().all(|v| v.is_finite()).then_some(x)
    }
}

/// Per-thread CG work vectors.
struct Scratch {
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
}

impl Scratch {
    fn new(f: usize) -> Self {
        Self {
            r: vec![0f32; f],
            p: vec![0f32; f],
            ap: vec![0f32; f],
        }
    }
}

/// Dot product with eight independent accumulators, which the compiler vectorises.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `YᵀY` of a row-major `n × f` matrix, through faer's matrix product.
fn gram(y: &[f32], f: usize) -> Vec<f32> {
    let n = y.len() / f;
    let m = MatRef::from_row_major_slice(y, n, f);
    let g = m.transpose() * m;
    let mut out = vec![0f32; f * f];
    for r in 0..f {
        for c in 0..f {
            out[r * f + c] = g[(r, c)];
        }
    }
    out
}

/// Conjugate-gradient steps on one row's normal equations, warm-started from `xu`:
/// `(YᵀY + Yᵀ(Cᵤ − I)Y + λI) xᵤ = YᵀCᵤp(u)`.
fn cg_row(
    xu: &mut [f32],
    y: &[f32],
    yty: &[f32],
    cols: &[Idx],
    ws: &[f32],
    cfg: &AlsConfig,
    s: &mut Scratch,
) {
    let f = cfg.factors;
    let (r, p, ap) = (&mut s.r, &mut s.p, &mut s.ap);
    // r = b − A x, with b = Σ cᵢ yᵢ and A x = YᵀY x + Σ (cᵢ − 1)(yᵢ·x) yᵢ + λ x.
    for k in 0..f {
        r[k] = -cfg.regularization * xu[k] - dot(&yty[k * f..(k + 1) * f], xu);
    }
    for (&i, &w) in cols.iter().zip(ws) {
        let yi = &y[i as usize * f..(i as usize + 1) * f];
        let c = 1.0 + cfg.alpha * w;
        axpy(r, c - (c - 1.0) * dot(yi, xu), yi);
    }
    p.copy_from_slice(r);
    let mut rsold = dot(r, r);
    for _ in 0..cfg.cg_steps {
        if rsold < 1e-20 {
            break;
        }
        for k in 0..f {
            ap[k] = cfg.regularization * p[k] + dot(&yty[k * f..(k + 1) * f], p);
        }
        for (&i, &w) in cols.iter().zip(ws) {
            let yi = &y[i as usize * f..(i as usize + 1) * f];
            axpy(ap, cfg.alpha * w * dot(yi, p), yi);
        }
        let alpha = rsold / dot(p, ap);
        axpy(xu, alpha, p);
        axpy(r, -alpha, ap);
        let rsnew = dot(r, r);
        let beta = rsnew / rsold;
        for k in 0..f {
            p[k] = r[k] + beta * p[k];
        }
        rsold = rsnew;
    }
}

/// One half-iteration: re-solves every row of `x` against fixed `y`.
fn solve_side(x: &mut [f32], y: &[f32], data: &Interactions, cfg: &AlsConfig) {
    let f = cfg.factors;
    let yty = gram(y, f);
    x.par_chunks_mut(f).enumerate().for_each_init(
        || Scratch::new(f),
        |s, (row, xu)| {
            let (cols, ws) = data.row(row);
            cg_row(xu, y, &yty, cols, ws, cfg, s);
        },
    );
}

/// Trains user and item vectors from user → item interactions.
pub fn train(
    data: &Interactions,
    n_items: usize,
    cfg: &AlsConfig,
    mut progress: impl FnMut(usize),
) -> Embeddings {
    let f = cfg.factors.max(1);
    let cfg = AlsConfig { factors: f, ..*cfg };
    let n_users = data.rows();
    let by_item = data.transpose(n_items);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(cfg.seed);
    let scale = 0.01;
    let mut users: Vec<f32> = (0..n_users * f)
        .map(|_| rng.random_range(-scale..scale))
        .collect();
    let mut items: Vec<f32> = (0..n_items * f)
        .map(|_| rng.random_range(-scale..scale))
        .collect();
    for it in 0..cfg.iterations {
        solve_side(&mut users, &items, data, &cfg);
        solve_side(&mut items, &users, &by_item, &cfg);
        progress(it + 1);
    }
    let user_gram = gram(&users, f);
    Embeddings {
        dim: f,
        users,
        items,
        user_gram,
        als: cfg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..67).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..67).map(|i| 1.0 - i as f32 * 0.01).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }

    #[test]
    fn folded_in_item_lands_with_its_taste_group() {
        let mut t = Vec::new();
        for u in 0..40u32 {
            let base = if u < 20 { 0 } else { 10 };
            for i in 0..10u32 {
                t.push((u, base + i, 1.0));
            }
        }
        let data = Interactions::from_triples(40, t);
        let cfg = AlsConfig {
            factors: 8,
            iterations: 10,
            ..Default::default()
        };
        let e = train(&data, 20, &cfg, |_| {});
        // A new item engaged by five users of the first group.
        let v = e
            .fold_in_item(&[(1, 1.0), (3, 1.0), (5, 1.0), (8, 1.0), (13, 1.0)])
            .expect("fold-in");
        let group_a = dot(e.user(2).expect("u"), &v);
        let group_b = dot(e.user(25).expect("u"), &v);
        assert!(group_a > group_b + 0.1, "{group_a} vs {group_b}");
        assert!(
            e.fold_in_item(&[(999, 1.0)]).is_none(),
            "no known user, no vector"
        );
    }

    #[test]
    fn learns_two_taste_groups() {
        // Users 0..20 consume items 0..10, users 20..40 items 10..20, each missing one item.
        let mut t = Vec::new();
        for u in 0..40u32 {
            let base = if u < 20 { 0 } else { 10 };
            for i in 0..10u32 {
                if i != u % 10 {
                    t.push((u, base + i, 1.0));
                }
            }
        }
        let data = Interactions::from_triples(40, t);
        let e = train(
            &data,
            20,
            &AlsConfig {
                factors: 8,
                iterations: 10,
                ..Default::default()
            },
            |_| {},
        );
        for u in [0u32, 7, 21, 33] {
            let mine = if u < 20 { 0 } else { 10 };
            let other = 10 - mine;
            let uv = e.user(u).expect("user");
            let held_out = mine + u % 10;
            let s_held = dot(uv, e.item(held_out).expect("item"));
            let s_other = dot(uv, e.item(other + 3).expect("item"));
            assert!(
                s_held > s_other + 0.1,
                "user {u}: held-out {s_held} vs other group {s_other}"
            );
        }
    }
}
