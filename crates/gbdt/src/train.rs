//! Histogram GBDT training with the LambdaMART objective (LightGBM's lambdarank):
//! quantile bins per feature, leaf-wise growth, histogram subtraction, rayon over features
//! and lists. One file because binning, histograms, split search and the lambda gradients
//! share the training buffers and their layout; splitting them would only spread one loop.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::{FORMAT, Model, Node, Root};
use crate::{GbdtError, Lists, ndcg_at};

/// Training parameters; defaults follow LightGBM's lambdarank where they apply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Most trees (boosting rounds).
    pub trees: usize,
    pub learning_rate: f32,
    pub num_leaves: usize,
    pub min_data_in_leaf: usize,
    pub min_sum_hessian: f64,
    pub lambda_l2: f64,
    /// Bins per feature (at most 256).
    pub max_bins: usize,
    /// Pairs are formed with the top `truncation` positions of each list.
    pub truncation: usize,
    pub sigma: f64,
    /// Stop when validation NDCG@`eval_at` has not improved for this many rounds (0: never);
    /// the best round's trees are kept.
    pub early_stopping: usize,
    pub eval_at: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            trees: 150,
            learning_rate: 0.1,
            num_leaves: 31,
            min_data_in_leaf: 50,
            min_sum_hessian: 1e-3,
            lambda_l2: 1.0,
            max_bins: 255,
            truncation: 30,
            sigma: 1.0,
            early_stopping: 40,
            eval_at: 10,
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), GbdtError> {
        let bad = |m: &str| Err(GbdtError::Params(m.to_string()));
        if self.trees == 0 {
            return bad("trees must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return bad("learning_rate must be in (0, 1]");
        }
        if self.num_leaves < 2 {
            return bad("num_leaves must be at least 2");
        }
        if !(2..=256).contains(&self.max_bins) {
            return bad("max_bins must be in 2..=256");
        }
        if self.truncation == 0 || self.eval_at == 0 {
            return bad("truncation and eval_at must be at least 1");
        }
        if !(self.lambda_l2 >= 0.0 && self.sigma > 0.0) {
            return bad("lambda_l2 must be >= 0 and sigma > 0");
        }
        Ok(())
    }
}

/// What training did: rounds kept and validation NDCG per round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub rounds: usize,
    pub train_ndcg: f64,
    pub valid_ndcg: Option<f64>,
    pub valid_curve: Vec<f64>,
    pub seconds: f64,
}

/// Per-feature bin upper bounds: bin `b` holds values `<= bounds[b]` (and above `bounds[b-1]`).
struct Bins {
    bounds: Vec<Vec<f32>>,
}

impl Bins {
    fn fit(lists: &Lists, max_bins: usize) -> Self {
        let n = lists.rows();
        // A strided sample keeps fitting cheap on millions of rows.
        let step = (n / 200_000).max(1);
        let bounds = (0..lists.width)
            .into_par_iter()
            .map(|f| {
                let mut v: Vec<f32> = (0..n)
                    .step_by(step)
                    .map(|r| lists.value(r, f))
                    .filter(|x| !x.is_nan())
                    .collect();
                v.sort_unstable_by(f32::total_cmp);
                let mut distinct: Vec<(f32, usize)> = Vec::new();
                for x in v {
                    match distinct.last_mut() {
                        Some((y, c)) if *y == x => *c += 1,
                        _ => distinct.push((x, 1)),
                    }
                }
                let mut b = Vec::new();
                if distinct.len() <= max_bins {
                    for w in distinct.windows(2) {
                        b.push(mid(w[0].0, w[1].0));
                    }
                } else {
                    // Equal-count cuts between distinct values.
                    let total: usize = distinct.iter().map(|d| d.1).sum();
                    let per = total as f64 / max_bins as f64;
                    let mut acc = 0usize;
                    let mut next = per;
                    for w in distinct.windows(2) {
                        acc += w[0].1;
                        if acc as f64 >= next && b.len() + 1 < max_bins {
                            b.push(mid(w[0].0, w[1].0));
                            while next <= acc as f64 {
                                next += per;
                            }
                        }
                    }
                }
                b.push(f32::INFINITY);
                b
            })
            .collect();
        Self { bounds }
    }

    fn bin(&self, f: usize, x: f32) -> u8 {
        let b = &self.bounds[f];
        // NaN goes to the last bin (never produced by the feature store; safe anyway).
        let i = if x.is_nan() {
            b.len() - 1
        } else {
            b.partition_point(|&u| u < x)
        };
        i.min(b.len() - 1) as u8
    }
}

fn mid(a: f32, b: f32) -> f32 {
    let m = a + (b - a) / 2.0;
    // Must separate a from b in f32.
    if m < b { m } else { a }
}

#[derive(Clone, Copy, Default)]
struct Cell {
    g: f64,
    h: f64,
    n: u32,
}

struct Split {
    gain: f64,
    feature: usize,
    bin: u8,
}

struct Leaf {
    rows: Vec<u32>,
    hist: Vec<Cell>,
    g: f64,
    h: f64,
    split: Option<Split>,
    /// Where the parent refers to this leaf: (node index, is_left), or none for the root.
    parent: Option<(usize, bool)>,
}

const BINS: usize = 256;

/// A split while growing: (feature, bin, left child, right child), children as in [`Node`].
type BinNode = (usize, u8, i32, i32);

struct Grower<'a> {
    cols: &'a [Vec<u8>],
    g: &'a [f32],
    h: &'a [f32],
    p: &'a Params,
}

impl Grower<'_> {
    fn hist(&self, rows: &[u32]) -> Vec<Cell> {
        let mut hist = vec![Cell::default(); self.cols.len() * BINS];
        hist.par_chunks_mut(BINS)
            .zip(self.cols.par_iter())
            .for_each(|(hf, col)| {
                // Two interleaved copies: consecutive rows in the same bin (common for
                // features with few values) would otherwise serialise on one cell.
                let mut twin = [Cell::default(); BINS];
                let mut pairs = rows.chunks_exact(2);
                for pair in &mut pairs {
                    let (a, b) = (pair[0] as usize, pair[1] as usize);
                    let c = &mut hf[col[a] as usize];
                    c.g += f64::from(self.g[a]);
                    c.h += f64::from(self.h[a]);
                    c.n += 1;
                    let d = &mut twin[col[b] as usize];
                    d.g += f64::from(self.g[b]);
                    d.h += f64::from(self.h[b]);
                    d.n += 1;
                }
                for &r in pairs.remainder() {
                    let r = r as usize;
                    let c = &mut hf[col[r] as usize];
                    c.g += f64::from(self.g[r]);
                    c.h += f64::from(self.h[r]);
                    c.n += 1;
                }
                for (c, d) in hf.iter_mut().zip(&twin) {
                    c.g += d.g;
                    c.h += d.h;
                    c.n += d.n;
                }
            });
        hist
    }

    fn best_split(&self, hist: &[Cell], g: f64, h: f64, n: usize) -> Option<Split> {
        let (lambda, min_n, min_h) = (
            self.p.lambda_l2,
            self.p.min_data_in_leaf as u32,
            self.p.min_sum_hessian,
        );
        if n < 2 * self.p.min_data_in_leaf {
            return None;
        }
        let parent = g * g / (h + lambda);
        hist.par_chunks(BINS)
            .enumerate()
            .filter_map(|(f, hf)| {
                let (mut gl, mut hl, mut nl) = (0f64, 0f64, 0u32);
                let mut best: Option<Split> = None;
                for (b, c) in hf.iter().enumerate().take(BINS - 1) {
                    gl += c.g;
                    hl += c.h;
                    nl += c.n;
                    let nr = n as u32 - nl;
                    if nl < min_n || hl < min_h {
                        continue;
                    }
                    if nr < min_n {
                        break;
                    }
                    let (gr, hr) = (g - gl, h - hl);
                    if hr < min_h {
                        break;
                    }
                    let gain = gl * gl / (hl + lambda) + gr * gr / (hr + lambda) - parent;
                    if gain > best.as_ref().map_or(1e-9, |s| s.gain) {
                        best = Some(Split {
                            gain,
                            feature: f,
                            bin: b as u8,
                        });
                    }
                }
                best
            })
            .max_by(|a, b| a.gain.total_cmp(&b.gain).then(b.feature.cmp(&a.feature)))
    }

    fn leaf(&self, rows: Vec<u32>, hist: Vec<Cell>, parent: Option<(usize, bool)>) -> Leaf {
        let (mut g, mut h) = (0f64, 0f64);
        for c in &hist[..BINS.min(hist.len())] {
            g += c.g;
            h += c.h;
        }
        let split = self.best_split(&hist, g, h, rows.len());
        Leaf {
            rows,
            hist,
            g,
            h,
            split,
            parent,
        }
    }

    /// Grows one tree; returns its nodes (with bin thresholds), leaf values and each leaf's rows.
    fn grow(&self, all: Vec<u32>) -> (Vec<BinNode>, Vec<Leaf>) {
        let hist = self.hist(&all);
        let mut leaves = vec![self.leaf(all, hist, None)];
        let mut nodes: Vec<BinNode> = Vec::new();
        while leaves.len() < self.p.num_leaves {
            let Some((li, _)) = leaves
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.split.as_ref().map(|s| (i, s.gain)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
            else {
                break;
            };
            let leaf = leaves.swap_remove(li);
            let Some(split) = leaf.split else { break };
            let col = &self.cols[split.feature];
            let (left, right): (Vec<u32>, Vec<u32>) = leaf
                .rows
                .iter()
                .partition(|&&r| col[r as usize] <= split.bin);
            let node = nodes.len();
            nodes.push((split.feature, split.bin, 0, 0));
            if let Some((p, is_left)) = leaf.parent {
                if is_left {
                    nodes[p].2 = node as i32;
                } else {
                    nodes[p].3 = node as i32;
                }
            }
            // Histogram of the smaller child; the larger one's is the parent's minus it.
            let (small, large, small_left) = if left.len() <= right.len() {
                (left, right, true)
            } else {
                (right, left, false)
            };
            let hs = self.hist(&small);
            let mut hl = leaf.hist;
            for (a, b) in hl.iter_mut().zip(&hs) {
                a.g -= b.g;
                a.h -= b.h;
                a.n -= b.n;
            }
            leaves.push(self.leaf(small, hs, Some((node, small_left))));
            leaves.push(self.leaf(large, hl, Some((node, !small_left))));
        }
        // Link leaves: child = !leaf_index.
        for (i, l) in leaves.iter().enumerate() {
            if let Some((p, is_left)) = l.parent {
                let c = !(i as i32);
                if is_left {
                    nodes[p].2 = c;
                } else {
                    nodes[p].3 = c;
                }
            }
        }
        (nodes, leaves)
    }
}

/// LambdaMART gradients of one list (LightGBM's `lambdarank` with `lambdarank_norm`).
/// Per-thread buffers of [`lambdas`], reused across lists and rounds.
#[derive(Default)]
struct Scratch {
    order: Vec<usize>,
    lg: Vec<f64>,
    lh: Vec<f64>,
    /// `discount(k)` for every position seen so far.
    disc: Vec<f64>,
    gains: Vec<f64>,
}

/// `max_dcg` is the list's ideal DCG at the truncation level (constant across rounds).
fn lambdas(
    scores: &[f32],
    labels: &[f32],
    max_dcg: f64,
    p: &Params,
    g: &mut [f32],
    h: &mut [f32],
    sc: &mut Scratch,
) {
    let n = scores.len();
    g.fill(0.0);
    h.fill(0.0);
    let Scratch {
        order,
        lg,
        lh,
        disc,
        gains,
    } = sc;
    order.clear();
    order.extend(0..n);
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    if max_dcg <= 0.0 {
        return;
    }
    while disc.len() < n {
        disc.push(discount(disc.len()));
    }
    gains.clear();
    gains.extend(labels.iter().map(|&y| gain(y)));
    let inv = 1.0 / max_dcg;
    let best = f64::from(scores[order[0]]);
    let worst = f64::from(scores[order[n - 1]]);
    let mut sum_lambdas = 0f64;
    lg.clear();
    lg.resize(n, 0.0);
    lh.clear();
    lh.resize(n, 0.0);
    for i in 0..n.min(p.truncation) {
        let hi_i = order[i];
        for (j, &lo_j) in order.iter().enumerate().skip(i + 1) {
            if labels[hi_i] == labels[lo_j] {
                continue;
            }
            let (high, low, hr, lr) = if labels[hi_i] > labels[lo_j] {
                (hi_i, lo_j, i, j)
            } else {
                (lo_j, hi_i, j, i)
            };
            let ds = f64::from(scores[high]) - f64::from(scores[low]);
            let gap = gains[high] - gains[low];
            let paired = (disc[hr] - disc[lr]).abs();
            let mut delta = gap * paired * inv;
            if best != worst {
                delta /= 0.01 + ds.abs();
            }
            let pl = 1.0 / (1.0 + (p.sigma * ds).exp());
            let ph = pl * (1.0 - pl);
            let pl = -p.sigma * delta * pl;
            let ph = p.sigma * p.sigma * delta * ph;
            lg[high] += pl;
            lh[high] += ph;
            lg[low] -= pl;
            lh[low] += ph;
            sum_lambdas -= 2.0 * pl;
        }
    }
    let norm = if sum_lambdas > 0.0 {
        (1.0 + sum_lambdas).log2() / sum_lambdas
    } else {
        1.0
    };
    for k in 0..n {
        g[k] = (lg[k] * norm) as f32;
        h[k] = (lh[k] * norm) as f32;
    }
}

fn gain(label: f32) -> f64 {
    2f64.powf(f64::from(label)) - 1.0
}

fn discount(pos: usize) -> f64 {
    1.0 / ((pos + 2) as f64).log2()
}

fn max_dcg_at(labels: &[f32], k: usize) -> f64 {
    let mut l: Vec<f32> = labels.to_vec();
    l.sort_unstable_by(|a, b| b.total_cmp(a));
    l.iter()
        .take(k)
        .enumerate()
        .map(|(i, &y)| gain(y) * discount(i))
        .sum()
}

/// Trains an ensemble on `train`, early-stopping on `valid` when given.
pub fn train(
    train: &Lists,
    valid: Option<&Lists>,
    names: &[String],
    p: &Params,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Model, Report), GbdtError> {
    p.validate()?;
    train.validate()?;
    if let Some(v) = valid {
        v.validate()?;
        if v.width != train.width {
            return Err(GbdtError::Data("validation width differs".into()));
        }
    }
    if names.len() != train.width {
        return Err(GbdtError::Data(format!(
            "{} feature names for {} columns",
            names.len(),
            train.width
        )));
    }
    let started = std::time::Instant::now();
    let n = train.rows();
    let bins = Bins::fit(train, p.max_bins);
    let cols: Vec<Vec<u8>> = (0..train.width)
        .into_par_iter()
        .map(|f| (0..n).map(|r| bins.bin(f, train.value(r, f))).collect())
        .collect();
    let mut scores = vec![0f32; n];
    let mut valid_scores = valid.map(|v| vec![0f32; v.rows()]);
    let (mut g, mut h) = (vec![0f32; n], vec![0f32; n]);
    let mut model = Model {
        format: FORMAT.to_string(),
        features: names.to_vec(),
        nodes: Vec::new(),
        leaves: Vec::new(),
        leaf_counts: Vec::new(),
        roots: Vec::new(),
    };
    let mut report = Report::default();
    let mut best = (f64::NEG_INFINITY, 0usize, 0usize, 0usize);
    let all: Vec<u32> = (0..n as u32).collect();
    let max_dcgs: Vec<f64> = train
        .offsets
        .windows(2)
        .map(|w| max_dcg_at(&train.labels[w[0]..w[1]], p.truncation))
        .collect();
    for round in 0..p.trees {
        // Gradients per list, in parallel (lists are disjoint row ranges).
        let spans: Vec<(usize, usize)> = train.offsets.windows(2).map(|w| (w[0], w[1])).collect();
        let mut gh: Vec<(&mut [f32], &mut [f32])> = Vec::with_capacity(spans.len());
        {
            let (mut gr, mut hr) = (&mut g[..], &mut h[..]);
            for &(a, b) in &spans {
                let (ga, gb) = std::mem::take(&mut gr).split_at_mut(b - a);
                let (ha, hb) = std::mem::take(&mut hr).split_at_mut(b - a);
                gh.push((ga, ha));
                gr = gb;
                hr = hb;
            }
        }
        gh.into_par_iter()
            .zip(spans.par_iter())
            .zip(max_dcgs.par_iter())
            .for_each_init(Scratch::default, |sc, (((gs, hs), &(a, b)), &m)| {
                lambdas(&scores[a..b], &train.labels[a..b], m, p, gs, hs, sc);
            });
        let grower = Grower {
            cols: &cols,
            g: &g,
            h: &h,
            p,
        };
        let (nodes, leaves) = grower.grow(all.clone());
        // Append the tree to the flat model.
        let node_base = model.nodes.len() as i32;
        let leaf_base = model.leaves.len() as i32;
        let fix = |c: i32| {
            if c >= 0 {
                c + node_base
            } else {
                !(!c + leaf_base)
            }
        };
        for &(f, b, l, r) in &nodes {
            model.nodes.push(Node {
                feature: f as u32,
                threshold: bins.bounds[f][b as usize],
                left: fix(l),
                right: fix(r),
            });
        }
        model.roots.push(Root(if nodes.is_empty() {
            !leaf_base
        } else {
            node_base
        }));
        for l in &leaves {
            let v = (-l.g / (l.h + p.lambda_l2)) as f32 * p.learning_rate;
            let v = if v.is_finite() { v } else { 0.0 };
            model.leaves.push(v);
            model.leaf_counts.push(l.rows.len() as u32);
            for &r in &l.rows {
                scores[r as usize] += v;
            }
        }
        if let (Some(v), Some(vs)) = (valid, valid_scores.as_mut()) {
            let t = model.roots.len() - 1;
            vs.par_iter_mut().enumerate().for_each(|(r, s)| {
                *s += model.predict_tree(t, v.row(r));
            });
            let nd = mean_ndcg(v, vs, p.eval_at);
            report.valid_curve.push(nd);
            if nd > best.0 {
                best = (nd, round + 1, model.nodes.len(), model.leaves.len());
            } else if p.early_stopping > 0 && round + 1 - best.1 >= p.early_stopping {
                break;
            }
        }
        progress(round + 1, p.trees);
    }
    if valid.is_some() && best.1 > 0 {
        // Keep the best round's trees; later trees only ever append nodes and leaves.
        model.roots.truncate(best.1);
        model.nodes.truncate(best.2);
        model.leaves.truncate(best.3);
        model.leaf_counts.truncate(best.3);
        report.valid_ndcg = Some(best.0);
    }
    report.rounds = model.roots.len();
    let final_scores: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|r| model.predict(train.row(r)))
        .collect();
    report.train_ndcg = mean_ndcg(train, &final_scores, p.eval_at);
    report.seconds = started.elapsed().as_secs_f64();
    model.validate()?;
    Ok((model, report))
}

/// Mean NDCG@k over the lists (gain 2^label − 1), as LightGBM's `ndcg@k` computes it.
pub fn mean_ndcg(lists: &Lists, scores: &[f32], k: usize) -> f64 {
    let spans: Vec<(usize, usize)> = lists.offsets.windows(2).map(|w| (w[0], w[1])).collect();
    if spans.is_empty() {
        return 0.0;
    }
    let sum: f64 = spans
        .par_iter()
        .map(|&(a, b)| ndcg_at(&scores[a..b], &lists.labels[a..b], k))
        .sum();
    sum / spans.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_separate_distinct_values_and_cap_their_number() {
        let values: Vec<f32> = (0..1000).map(|i| (i % 10) as f32).collect();
        let labels = vec![0.0; 1000];
        let offsets = vec![0, 1000];
        let l = Lists::new(&values, 1, &labels, &offsets);
        let b = Bins::fit(&l, 255);
        assert_eq!(b.bounds[0].len(), 10);
        assert_ne!(b.bin(0, 3.0), b.bin(0, 4.0));
        let values: Vec<f32> = (0..5000).map(|i| i as f32).collect();
        let labels = vec![0.0; 5000];
        let offsets = vec![0, 5000];
        let l = Lists::new(&values, 1, &labels, &offsets);
        let b = Bins::fit(&l, 16);
        assert!(b.bounds[0].len() <= 16);
        assert!(b.bin(0, 0.0) < b.bin(0, 4999.0));
    }

    #[test]
    fn lambdas_push_the_relevant_item_up() {
        let scores = [0.5, 0.2, 0.1];
        let labels = [0.0, 0.0, 1.0];
        let (mut g, mut h) = (vec![0f32; 3], vec![0f32; 3]);
        lambdas(
            &scores,
            &labels,
            max_dcg_at(&labels, 30),
            &Params::default(),
            &mut g,
            &mut h,
            &mut Scratch::default(),
        );
        // A negative gradient raises the score (the update is -g/h).
        assert!(g[2] < 0.0 && g[0] > 0.0, "{g:?}");
        assert!(h.iter().all(|&x| x >= 0.0));
    }
}
