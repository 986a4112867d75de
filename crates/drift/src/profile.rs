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
    /// A proportion, `[hits, trials, units]`; compared by a two-proportion test over the
    /// units (each `rate` call is one: a request's list, an event), since trials within one
    /// unit move together (the twenty items of one list are not twenty samples).
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
    /// Per bin; a rate's are `[hits, trials, units]` (references written before units were
    /// counted have `[hits, trials]`: each trial its own unit).
    pub counts: Vec<u64>,
    /// A reference's own variation over time: the period it was captured over is cut into
    /// [`PARTS`] consecutive parts, and this is the second-largest measure between a part and
    /// the whole, less what sampling alone gives a part that size. A signal that normal
    /// traffic moves that much from one part of the day to another (what is trending, who is
    /// awake) cannot alarm at that level. A rate's is its dispersion between the parts
    /// (see `dispersion`), which widens the z test's standard error.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub noise: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Sketch {
    /// Observations counted (a rate's trials).
    pub fn total(&self) -> u64 {
        match self.kind {
            SketchKind::Rate => self.counts.get(1).copied().unwrap_or(0),
            _ => self.counts.iter().sum(),
        }
    }

    /// A rate's independent units (its trials when they were not counted).
    pub fn units(&self) -> u64 {
        self.counts.get(2).copied().unwrap_or_else(|| self.total())
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
            SketchKind::Rate => ["hits", "trials", "units"]
                .get(bin)
                .unwrap_or(&"")
                .to_string(),
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
    /// Per label, the counts of each part.
    labels: BTreeMap<String, (SketchKind, BTreeMap<String, [u64; PARTS]>)>,
    /// Per rate, `[hits, trials, units]` of each part.
    rates: BTreeMap<String, [[u64; 3]; PARTS]>,
    /// The part observations now go to ([`ProfileBuilder::part`]).
    part: usize,
}

#[derive(Debug, Default)]
struct Reservoir {
    seen: u64,
    /// A uniform sample of the values, each with the part it came from.
    values: Vec<(f32, u8)>,
    rng: u64,
}

impl Reservoir {
    fn add(&mut self, v: (f32, u8)) {
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

/// Consecutive parts of a reference's period, for [`Sketch::noise`].
pub const PARTS: usize = 20;

/// Parts with fewer observations say nothing of the variation.
const MIN_PART: u64 = 30;

/// [`Sketch::noise`] from the counts of each part.
fn noise(kind: SketchKind, parts: &[Vec<u64>]) -> f64 {
    let Some(bins) = parts.first().map(Vec::len) else {
        return 0.0;
    };
    let whole: Vec<u64> = (0..bins)
        .map(|b| parts.iter().map(|p| p[b]).sum())
        .collect();
    let n = whole.iter().sum::<u64>() as f64;
    let mut over: Vec<f64> = parts
        .iter()
        .filter(|p| p.iter().sum::<u64>() >= MIN_PART)
        .map(|p| {
            let m = p.iter().sum::<u64>() as f64;
            // What sampling alone gives: PSI ≈ χ²/n, whose mean is (bins − 1)/n per side;
            // Jensen–Shannon (bits) is about PSI / (8 ln 2) for small moves.
            let sampling = (bins.saturating_sub(1)) as f64 * (1.0 / m + 1.0 / n);
            let (value, bias) = match kind {
                SketchKind::Mix => (
                    crate::measure::jensen_shannon(&whole, p),
                    sampling / (8.0 * std::f64::consts::LN_2),
                ),
                _ => (crate::measure::psi(&whole, p), sampling),
            };
            (value - bias).max(0.0)
        })
        .collect();
    over.sort_unstable_by(|a, b| b.total_cmp(a));
    over.get(1).or(over.first()).copied().unwrap_or(0.0)
}

/// A rate's over-dispersion between the parts of its period: Pearson's χ² of the parts' rates
/// (each weighed by its units) over its degrees of freedom, 1 when the units are independent
/// draws of one rate. Engagements cluster (a trending item's clicks come together, a session
/// repeats its user), so a rate's true standard error is `sqrt(φ)` times the binomial one and
/// the z test divides by it — the quasi-binomial correction. 0 when too few parts have data.
fn dispersion(parts: &[[u64; 3]; PARTS]) -> f64 {
    let (h, n) = parts
        .iter()
        .fold((0u64, 0u64), |(h, n), p| (h + p[0], n + p[1]));
    if n == 0 {
        return 0.0;
    }
    let p = h as f64 / n as f64;
    let var = p * (1.0 - p);
    let used: Vec<&[u64; 3]> = parts
        .iter()
        .filter(|x| x[2] >= MIN_PART && x[1] > 0)
        .collect();
    if used.len() < 3 || var <= 0.0 {
        return 0.0;
    }
    let chi: f64 = used
        .iter()
        .map(|x| {
            let pk = x[0] as f64 / x[1] as f64;
            x[2] as f64 * (pk - p).powi(2) / var
        })
        .sum();
    chi / (used.len() - 1) as f64
}

/// Where observations go: a [`ProfileBuilder`] at training time, a live window when serving
/// (the same code feeds both, so reference and window measure the same thing).
pub trait Observer {
    fn numeric(&mut self, name: &str, v: f32);
    /// Counts `n` of `label` (categorical) — or of a mix's component when `mix`.
    fn label(&mut self, name: &str, mix: bool, label: &str, n: u64);
    /// Adds `hits` and `trials` to a proportion: one independent unit of it.
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
        let part = self.part;
        let r = &mut self
            .rates
            .entry(name.to_string())
            .or_insert([[0; 3]; PARTS])[part];
        r[0] += hits;
        r[1] += trials;
        // A call with hits alone (a click, counted against earlier impressions) adds none.
        r[2] += u64::from(trials > 0);
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
            .add((v, self.part as u8));
    }

    /// Observations from now on belong to part `i` (0 up to [`PARTS`]` - 1`, in time order)
    /// of the period (see [`Sketch::noise`]); all go to part 0 unless this is called.
    pub fn part(&mut self, i: usize) {
        self.part = i.min(PARTS - 1);
    }

    /// Counts `n` of `label` (categorical) — or of a mix's component when `mix`.
    pub fn label(&mut self, name: &str, mix: bool, label: &str, n: u64) {
        let kind = if mix {
            SketchKind::Mix
        } else {
            SketchKind::Categorical
        };
        let part = self.part;
        self.labels
            .entry(name.to_string())
            .or_insert_with(|| (kind, BTreeMap::new()))
            .1
            .entry(label.to_string())
            .or_insert([0; PARTS])[part] += n;
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
                .map(|l| l.1.values().map(|c| c.iter().sum::<u64>()).sum::<u64>())
                .sum::<u64>()
            + self
                .rates
                .values()
                .map(|r| r.iter().map(|p| p[1]).sum::<u64>())
                .sum::<u64>()
    }

    /// The profile: numeric signals in up to `bins` quantile bins, categorical ones with their
    /// `max_labels` most frequent labels and `other`, mixes with every component.
    pub fn finish(self, source: &str, at_ms: i64, bins: usize, max_labels: usize) -> Profile {
        let mut sketches = Vec::new();
        for (name, r) in self.numeric {
            let mut tagged = r.values;
            tagged.retain(|x| !x.0.is_nan());
            tagged.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let v: Vec<f32> = tagged.iter().map(|x| x.0).collect();
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
                noise: 0.0,
            };
            let mut parts = vec![vec![0; s.edges.len() + 1]; PARTS];
            for &(x, h) in &tagged {
                parts[usize::from(h).min(PARTS - 1)][s.bin(x)] += 1;
            }
            s.counts = (0..s.edges.len() + 1)
                .map(|b| parts.iter().map(|p| p[b]).sum())
                .collect();
            s.noise = noise(SketchKind::Numeric, &parts);
            sketches.push(s);
        }
        for (name, (kind, counts)) in self.labels {
            let mut by_count: Vec<(String, [u64; PARTS])> = counts.into_iter().collect();
            let (labels, split): (Vec<String>, Vec<[u64; PARTS]>) = if kind == SketchKind::Mix {
                by_count.into_iter().unzip()
            } else {
                let sum = |c: &[u64; PARTS]| c.iter().sum::<u64>();
                by_count.sort_by(|a, b| sum(&b.1).cmp(&sum(&a.1)).then(a.0.cmp(&b.0)));
                let mut rest = [0u64; PARTS];
                for x in by_count.iter().skip(max_labels) {
                    for (r, c) in rest.iter_mut().zip(&x.1) {
                        *r += c;
                    }
                }
                by_count.truncate(max_labels);
                by_count.retain(|x| x.0 != OTHER);
                by_count.push((OTHER.to_string(), rest));
                by_count.into_iter().unzip()
            };
            let parts: Vec<Vec<u64>> = (0..PARTS)
                .map(|p| split.iter().map(|c| c[p]).collect())
                .collect();
            sketches.push(Sketch {
                name,
                kind,
                edges: Vec::new(),
                labels,
                counts: split.iter().map(|c| c.iter().sum()).collect(),
                noise: noise(kind, &parts),
            });
        }
        for (name, parts) in self.rates {
            let counts: Vec<u64> = (0..3).map(|i| parts.iter().map(|p| p[i]).sum()).collect();
            sketches.push(Sketch {
                name,
                kind: SketchKind::Rate,
                edges: Vec::new(),
                labels: Vec::new(),
                noise: dispersion(&parts),
                counts,
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
            Some(vec![1000, 10_000, 10_000])
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

    #[test]
    fn a_rate_that_moves_between_parts_is_over_dispersed() {
        let mut steady = ProfileBuilder::default();
        let mut bursty = ProfileBuilder::default();
        let mut x: u64 = 7;
        for part in 0..PARTS {
            steady.part(part);
            bursty.part(part);
            // Bursty: the rate is 0.05 in even parts and 0.25 in odd ones.
            let p = if part % 2 == 0 { 5 } else { 25 };
            for i in 0..1000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                steady.trial("r", (x >> 33) % 100 < 15);
                bursty.trial("r", (i * 7919) % 100 < p);
            }
        }
        let phi = |b: ProfileBuilder| b.finish("", 0, 10, 10).get("r").map(|s| s.noise);
        let (s, b) = (phi(steady).expect("steady"), phi(bursty).expect("bursty"));
        assert!((0.3..2.0).contains(&s), "independent draws: {s}");
        assert!(b > 50.0, "a rate alternating between parts: {b}");
    }
}
