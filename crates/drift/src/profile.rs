//! Profiles: named sketches of one population (a bundle's reference, or a live window), and
//! the builder that turns raw observations into a reference (quantile edges from a bounded
//! sample, the most frequent labels plus `other`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a sketch bins and which measure compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SketchKind {
    /// A number, binned at the reference's quantiles; compared by PSI.
    Numeric,
    /// A label; compared by PSI.
    Categorical,
    /// Shares of a mix (e.g. candidate sources); compared by Jensen–Shannon.
    Mix,
    /// A proportion, `[hits, trials]`; compared by a two-proportion test.
    Rate,
}

/// Label of the bin that holds every label a categorical sketch does not name.
pub const OTHER: &str = "other";

/// One signal's counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    pub name: String,
    pub kind: SketchKind,
    /// Numeric: upper edges of all bins but the last (which is unbounded above); a value
    /// falls in the first bin whose edge is at least it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<f32>,
    /// Categorical and mix: the bins' labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Per bin; a rate's are `[hits, trials]`.
    pub counts: Vec<u64>,
}

impl Sketch {
    /// Observations counted (a rate's trials).
    pub fn total(&self) -> u64 {
        match self.kind {
            SketchKind::Rate => self.counts.get(1).copied().unwrap_or(0),
            _ => self.counts.iter().sum(),
        }
    }

    /// The bin of a numeric value (NaN in the first).
    pub fn bin(&self, v: f32) -> usize {
        if v.is_nan() {
            return 0;
        }
        self.edges.partition_point(|&e| e < v)
    }

    /// The same bins, counted from zero.
    pub fn empty_like(&self) -> Sketch {
        Sketch {
            counts: vec![0; self.counts.len()],
            ..self.clone()
        }
    }

    /// A bin's label, for reports.
    pub fn label(&self, bin: usize) -> String {
        match self.kind {
            SketchKind::Numeric => {
                let lo = bin.checked_sub(1).and_then(|b| self.edges.get(b));
                match (lo, self.edges.get(bin)) {
                    (None, Some(hi)) => format!("<= {hi}"),
                    (Some(lo), Some(hi)) => format!("({lo}, {hi}]"),
                    (Some(lo), None) => format!("> {lo}"),
                    (None, None) => "all".into(),
                }
            }
            SketchKind::Rate => ["hits", "trials"].get(bin).unwrap_or(&"").to_string(),
            _ => self.labels.get(bin).cloned().unwrap_or_default(),
        }
    }
}

/// Sketches of one population, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Where it comes from: `bundle <version>`, `first window after activation`, or a live
    /// window.
    pub source: String,
    /// When it was captured (unix ms).
    pub captured_at_ms: i64,
    /// Sorted by name.
    pub sketches: Vec<Sketch>,
}

impl Profile {
    pub fn get(&self, name: &str) -> Option<&Sketch> {
        self.sketches
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.sketches[i])
    }

    pub fn is_empty(&self) -> bool {
        self.sketches.is_empty()
    }
}

/// Values kept per numeric signal to place the quantile edges.
pub const MAX_SAMPLE: usize = 20_000;

/// Collects observations into a reference profile: numeric values in a bounded reservoir,
/// labels and proportions as counts.
#[derive(Debug, Default)]
pub struct ProfileBuilder {
    numeric: BTreeMap<String, Reservoir>,
    labels: BTreeMap<String, (SketchKind, BTreeMap<String, u64>)>,
    rates: BTreeMap<String, [u64; 2]>,
}

#[derive(Debug, Default)]
struct Reservoir {
    seen: u64,
    values: Vec<f32>,
    rng: u64,
}

impl Reservoir {
    fn add(&mut self, v: f32) {
        self.seen += 1;
        if self.values.len() < MAX_SAMPLE {
            self.values.push(v);
            return;
        }
        // xorshift: deterministic, so a reference is reproducible from the same data.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let j = (self.rng.wrapping_add(self.seen)) % self.seen;
        if let Some(slot) = self.values.get_mut(j as usize) {
            *slot = v;
        }
    }
}

/// Where observations go: a [`ProfileBuilder`] at training time, a live window when serving
/// (the same code feeds both, so reference and window measure the same thing).
pub trait Observer {
    fn numeric(&mut self, name: &str, v: f32);
    /// Counts `n` of `label` (categorical) — or of a mix's component when `mix`.
    fn label(&mut self, name: &str, mix: bool, label: &str, n: u64);
    /// Adds `hits` and `trials` to a proportion.
    fn rate(&mut self, name: &str, hits: u64, trials: u64);
}

impl Observer for ProfileBuilder {
    fn numeric(&mut self, name: &str, v: f32) {
        ProfileBuilder::numeric(self, name, v);
    }

    fn label(&mut self, name: &str, mix: bool, label: &str, n: u64) {
        ProfileBuilder::label(self, name, mix, label, n);
    }

    fn rate(&mut self, name: &str, hits: u64, trials: u64) {
        let r = self.rates.entry(name.to_string()).or_default();
        r[0] += hits;
        r[1] += trials;
    }
}

impl ProfileBuilder {
    pub fn numeric(&mut self, name: &str, v: f32) {
        self.numeric
            .entry(name.to_string())
            .or_insert_with(|| Reservoir {
                rng: 0x9E37_79B9_7F4A_7C15,
                ..Reservoir::default()
            })
            .add(v);
    }

    /// Counts `n` of `label` (categorical) — or of a mix's component when `mix`.
    pub fn label(&mut self, name: &str, mix: bool, label: &str, n: u64) {
        let kind = if mix {
            SketchKind::Mix
        } else {
            SketchKind::Categorical
        };
        *self
            .labels
            .entry(name.to_string())
            .or_insert_with(|| (kind, BTreeMap::new()))
            .1
            .entry(label.to_string())
            .or_default() += n;
    }

    /// Declares labels that must have a bin even when never seen (a mix's every component).
    pub fn labels(&mut self, name: &str, mix: bool, labels: &[&str]) {
        for l in labels {
            self.label(name, mix, l, 0);
        }
    }

    /// One trial of a proportion.
    pub fn trial(&mut self, name: &str, hit: bool) {
        Observer::rate(self, name, u64::from(hit), 1);
    }

    /// Observations so far (numeric values seen, labels and trials counted).
    pub fn observations(&self) -> u64 {
        self.numeric.values().map(|r| r.seen).sum::<u64>()
            + self
                .labels
                .values()
                .map(|l| l.1.values().sum::<u64>())
                .sum::<u64>()
            + self.rates.values().map(|r| r[1]).sum::<u64>()
    }

    /// The profile: numeric signals in up to `bins` quantile bins, categorical ones with their
    /// `max_labels` most frequent labels and `other`, mixes with every component.
    pub fn finish(self, source: &str, at_ms: i64, bins: usize, max_labels: usize) -> Profile {
        let mut sketches = Vec::new();
        for (name, r) in self.numeric {
            let mut v = r.values;
            v.retain(|x| !x.is_nan());
            v.sort_unstable_by(f32::total_cmp);
            let mut edges: Vec<f32> = (1..bins.max(1))
                .filter_map(|i| v.get((i * v.len() / bins).checked_sub(1)?).copied())
                .collect();
            edges.dedup();
            // A top edge equal to the maximum would leave the last bin empty.
            if edges.last().is_some_and(|&e| Some(&e) == v.last()) && edges.len() > 1 {
                edges.pop();
            }
            let mut s = Sketch {
                name,
                kind: SketchKind::Numeric,
                edges,
                labels: Vec::new(),
                counts: Vec::new(),
            };
            s.counts = vec![0; s.edges.len() + 1];
            for &x in &v {
                let b = s.bin(x);
                s.counts[b] += 1;
            }
            sketches.push(s);
        }
        for (name, (kind, counts)) in self.labels {
            let mut by_count: Vec<(String, u64)> = counts.into_iter().collect();
            let (labels, counts): (Vec<String>, Vec<u64>) = if kind == SketchKind::Mix {
                by_count.into_iter().unzip()
            } else {
                by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let rest: u64 = by_count.iter().skip(max_labels).map(|x| x.1).sum();
                by_count.truncate(max_labels);
                by_count.retain(|x| x.0 != OTHER);
                by_count.push((OTHER.to_string(), rest));
                by_count.into_iter().unzip()
            };
            sketches.push(Sketch {
                name,
                kind,
                edges: Vec::new(),
                labels,
                counts,
            });
        }
        for (name, r) in self.rates {
            sketches.push(Sketch {
                name,
                kind: SketchKind::Rate,
                edges: Vec::new(),
                labels: Vec::new(),
                counts: r.to_vec(),
            });
        }
        sketches.sort_by(|a, b| a.name.cmp(&b.name));
        Profile {
            source: source.to_string(),
            captured_at_ms: at_ms,
            sketches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_bins_hold_equal_shares_and_labels_keep_the_top() {
        let mut b = ProfileBuilder::default();
        for i in 0..10_000 {
            b.numeric("x", i as f32);
            b.numeric("flag", (i % 2) as f32);
            b.label("cat", false, &format!("c{}", i % 7 * (i % 3)), 1);
            b.trial("ctr", i % 10 == 0);
        }
        b.labels("mix", true, &["a", "b"]);
        b.label("mix", true, "a", 3);
        let p = b.finish("test", 0, 10, 3);
        let x = p.get("x").expect("x");
        assert_eq!(x.counts.len(), 10);
        assert!(x.counts.iter().all(|&c| c == 1000), "{:?}", x.counts);
        // A binary feature gets two bins, not ten empty ones.
        let flag = p.get("flag").expect("flag");
        assert_eq!(flag.counts, [5000, 5000]);
        let cat = p.get("cat").expect("cat");
        assert_eq!(cat.labels.len(), 4);
        assert_eq!(cat.labels.last().map(String::as_str), Some(OTHER));
        assert_eq!(cat.total(), 10_000);
        assert_eq!(
            p.get("ctr").map(|s| s.counts.clone()),
            Some(vec![1000, 10_000])
        );
        let mix = p.get("mix").expect("mix");
        assert_eq!(
            (mix.labels.clone(), mix.counts.clone()),
            (vec!["a".into(), "b".into()], vec![3, 0])
        );
        // Round trip.
        let json = serde_json::to_string(&p).expect("json");
        assert_eq!(serde_json::from_str::<Profile>(&json).expect("back"), p);
    }
}
