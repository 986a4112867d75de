//! A trained ensemble in a flat layout: every tree's nodes in one array, walked without
//! allocation, trees outermost so one tree stays in cache while all candidates pass it.

use serde::{Deserialize, Serialize};

use crate::GbdtError;

/// Format marker of saved models; a different value is refused.
pub const FORMAT: &str = "cascade-gbdt/1";

/// One internal node. A child `>= 0` is a node index in the same array; `< 0` is the leaf
/// `!child` (its value in [`Model::leaves`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: u32,
    /// Go left when `value <= threshold`.
    pub threshold: f32,
    pub left: i32,
    pub right: i32,
}

/// Where a tree starts: a node, or (a stump without splits) a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Root(pub i32);

/// A gradient-boosted ensemble over named features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: String,
    /// Names of the features in the order node indices refer to.
    pub features: Vec<String>,
    pub nodes: Vec<Node>,
    pub leaves: Vec<f32>,
    pub roots: Vec<Root>,
    /// Training rows that reached each leaf (aligned with `leaves`), for attributions;
    /// empty in models saved before it was recorded (leaves then weigh the same).
    #[serde(default)]
    pub leaf_counts: Vec<u32>,
}

impl Model {
    pub fn trees(&self) -> usize {
        self.roots.len()
    }

    /// The score of one row whose columns follow `self.features`.
    pub fn predict(&self, row: &[f32]) -> f32 {
        self.roots
            .iter()
            .map(|&r| self.walk(r, |f| row.get(f as usize).copied().unwrap_or(0.0)))
            .sum()
    }

    /// The score of one row from tree `t` alone.
    pub fn predict_tree(&self, t: usize, row: &[f32]) -> f32 {
        self.roots.get(t).map_or(0.0, |&r| {
            self.walk(r, |f| row.get(f as usize).copied().unwrap_or(0.0))
        })
    }

    #[inline]
    fn walk(&self, root: Root, value: impl Fn(u32) -> f32) -> f32 {
        let mut at = root.0;
        while at >= 0 {
            let n = &self.nodes[at as usize];
            at = if value(n.feature) <= n.threshold {
                n.left
            } else {
                n.right
            };
        }
        self.leaves[!at as usize]
    }

    /// Adds the ensemble's score of every row to `out`. Row `k` is
    /// `values[rows[k] * width ..][..width]` and model feature `f` is its column `map[f]`, so
    /// a caller scores a subset of a feature block in place, without copying rows.
    pub fn predict_rows<I>(
        &self,
        values: &[f32],
        width: usize,
        rows: I,
        map: &[u16],
        out: &mut [f32],
    ) where
        I: Iterator<Item = u32> + Clone,
    {
        for &root in &self.roots {
            for (r, o) in rows.clone().zip(out.iter_mut()) {
                let base = r as usize * width;
                *o += self.walk(root, |f| {
                    map.get(f as usize)
                        .and_then(|&c| values.get(base + c as usize))
                        .copied()
                        .unwrap_or(0.0)
                });
            }
        }
    }

    /// The model with node features resolved to columns of a serving row layout (by name),
    /// for [`Bound::predict_rows`]; names the first feature `columns` lacks.
    pub fn bind_to(&self, columns: &[&str]) -> Result<Bound, GbdtError> {
        let mut map = Vec::new();
        self.bind(columns, &mut map)?;
        let nodes = self
            .nodes
            .iter()
            .map(|n| Node {
                feature: u32::from(map[n.feature as usize]),
                ..*n
            })
            .collect();
        Ok(Bound {
            nodes,
            leaves: self.leaves.clone(),
            roots: self.roots.iter().map(|r| r.0).collect(),
            width: columns.len(),
        })
    }

    /// Column of each model feature in `columns` (by name); names the first one missing.
    pub fn bind(&self, columns: &[&str], map: &mut Vec<u16>) -> Result<(), GbdtError> {
        map.clear();
        for f in &self.features {
            let c = columns
                .iter()
                .position(|c| c == f)
                .ok_or_else(|| GbdtError::Schema(format!("feature `{f}` is not served")))?;
            map.push(c as u16);
        }
        Ok(())
    }

    /// Checks the structure: every child and feature index in range, no NaN anywhere.
    pub fn validate(&self) -> Result<(), GbdtError> {
        if self.format != FORMAT {
            return Err(GbdtError::Format(format!(
                "model format `{}`, expected `{FORMAT}`",
                self.format
            )));
        }
        let bad = |what: &str| Err(GbdtError::Format(what.to_string()));
        let child_ok = |c: i32| {
            if c >= 0 {
                (c as usize) < self.nodes.len()
            } else {
                (!c as usize) < self.leaves.len()
            }
        };
        for n in &self.nodes {
            if n.feature as usize >= self.features.len() {
                return bad("node feature out of range");
            }
            if n.threshold.is_nan() || !child_ok(n.left) || !child_ok(n.right) {
                return bad("node threshold or child out of range");
            }
        }
        if self.leaves.iter().any(|v| !v.is_finite()) {
            return bad("non-finite leaf value");
        }
        if !self.leaf_counts.is_empty() && self.leaf_counts.len() != self.leaves.len() {
            return bad("leaf_counts and leaves differ in length");
        }
        if self.roots.iter().any(|r| !child_ok(r.0)) {
            return bad("tree root out of range");
        }
        // Children always point forward, so a walk cannot loop.
        for (i, n) in self.nodes.iter().enumerate() {
            if (n.left >= 0 && n.left as usize <= i) || (n.right >= 0 && n.right as usize <= i) {
                return bad("node child points backwards");
            }
        }
        Ok(())
    }

    /// Expected value (training-cover-weighted mean of the leaves below) and cover of every
    /// node: the baseline of [`Model::contributions`]. Children come after their parent in
    /// `nodes`, so one backward pass suffices.
    pub fn expectations(&self) -> Vec<(f32, f32)> {
        let leaf = |l: usize| {
            let w = self.leaf_counts.get(l).map_or(1.0, |&c| c as f32).max(1e-6);
            (self.leaves[l], w)
        };
        let mut e = vec![(0f32, 0f32); self.nodes.len()];
        for i in (0..self.nodes.len()).rev() {
            let n = &self.nodes[i];
            let side = |c: i32, e: &[(f32, f32)]| {
                if c >= 0 {
                    e[c as usize]
                } else {
                    leaf(!c as usize)
                }
            };
            let (vl, wl) = side(n.left, &e);
            let (vr, wr) = side(n.right, &e);
            let w = wl + wr;
            e[i] = ((vl * wl + vr * wr) / w, w);
        }
        e
    }

    /// Path attribution (Saabas) of one row's score: along each tree's decision path, the
    /// change in expected value at a split is credited to the split's feature. Adds each
    /// feature's credit to `out` (indexed like `self.features`) and returns the bias (the sum
    /// of the trees' expected values); bias plus credits equals [`Model::predict`].
    pub fn contributions(&self, exp: &[(f32, f32)], row: &[f32], out: &mut [f32]) -> f32 {
        let mut bias = 0.0;
        for &root in &self.roots {
            let mut at = root.0;
            if at < 0 {
                bias += self.leaves[!at as usize];
                continue;
            }
            let mut here = exp[at as usize].0;
            bias += here;
            while at >= 0 {
                let n = &self.nodes[at as usize];
                let v = row.get(n.feature as usize).copied().unwrap_or(0.0);
                let next = if v <= n.threshold { n.left } else { n.right };
                let value = if next >= 0 {
                    exp[next as usize].0
                } else {
                    self.leaves[!next as usize]
                };
                if let Some(o) = out.get_mut(n.feature as usize) {
                    *o += value - here;
                }
                here = value;
                at = next;
            }
        }
        bias
    }

    pub fn to_json(&self) -> Result<Vec<u8>, GbdtError> {
        serde_json::to_vec(self).map_err(|e| GbdtError::Format(e.to_string()))
    }

    /// Parses and validates a saved model.
    pub fn from_json(bytes: &[u8]) -> Result<Self, GbdtError> {
        let m: Model =
            serde_json::from_slice(bytes).map_err(|e| GbdtError::Format(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }
}

/// Rows walked through one tree together, so their memory latencies overlap.
const LANES: usize = 8;

/// A model bound to one row layout: node features are column indices of that layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    nodes: Vec<Node>,
    leaves: Vec<f32>,
    roots: Vec<i32>,
    width: usize,
}

impl Bound {
    /// Adds the ensemble's score of each row to `out`: row `k` is
    /// `values[rows[k] * width..][..width]`. Trees outermost (one tree stays in cache while
    /// every row passes it), eight rows walked in lockstep; no allocation.
    pub fn predict_rows(&self, values: &[f32], rows: &[u32], out: &mut [f32]) {
        let w = self.width;
        let value = |base: usize, f: u32| values.get(base + f as usize).copied().unwrap_or(0.0);
        for &root in &self.roots {
            for (chunk, o) in rows.chunks(LANES).zip(out.chunks_mut(LANES)) {
                let mut at = [root; LANES];
                let mut base = [0usize; LANES];
                for (b, &r) in base.iter_mut().zip(chunk) {
                    *b = r as usize * w;
                }
                let n = chunk.len();
                loop {
                    let mut live = false;
                    for k in 0..n {
                        let a = at[k];
                        if a >= 0 {
                            let node = &self.nodes[a as usize];
                            at[k] = if value(base[k], node.feature) <= node.threshold {
                                node.left
                            } else {
                                node.right
                            };
                            live = true;
                        }
                    }
                    if !live {
                        break;
                    }
                }
                for (x, &a) in o.iter_mut().zip(&at[..n]) {
                    *x += self.leaves[!a as usize];
                }
            }
        }
    }
}
