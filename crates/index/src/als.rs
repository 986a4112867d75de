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
    /// Confidence of an observed interaction is `1 + alpha · weight`.
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embeddings {
    pub dim: usize,
    pub users: Vec<f32>,
    pub items: Vec<f32>,
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

/// One half-iteration: re-solves every row of `x` against fixed `y`.
fn solve_side(x: &mut [f32], y: &[f32], data: &Interactions, cfg: &AlsConfig) {
    let f = cfg.factors;
    let yty = gram(y, f);
    x.par_chunks_mut(f).enumerate().for_each_init(
        || (vec![0f32; f], vec![0f32; f], vec![0f32; f]),
        |(r, p, ap), (row, xu)| {
            let (cols, ws) = data.row(row);
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
    Embeddings {
        dim: f,
        users,
        items,
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
