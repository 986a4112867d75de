//! Live windows: the reference's bins counted per time bucket in a ring, so memory is fixed
//! (buckets × bins) whatever the traffic, and any window up to the ring's span is the sum of
//! its buckets.

use crate::profile::{OTHER, Observer, Profile, Sketch, SketchKind};
use std::collections::{HashMap, VecDeque};

/// The ring of buckets over one reference's bins.
#[derive(Debug)]
pub struct Windows {
    shape: Vec<Sketch>,
    slots: HashMap<String, usize>,
    labels: Vec<HashMap<String, usize>>,
    /// Where each sketch's bins start in a bucket's counts.
    offsets: Vec<usize>,
    width: usize,
    bucket_ms: i64,
    max_buckets: usize,
    /// `(start ms, counts)`, oldest first.
    buckets: VecDeque<(i64, Vec<u32>)>,
}

impl Windows {
    /// Windows over `reference`'s sketches, in buckets of `bucket_ms`, `max_buckets` kept.
    pub fn new(reference: &Profile, bucket_ms: i64, max_buckets: usize) -> Self {
        let shape: Vec<Sketch> = reference.sketches.iter().map(Sketch::empty_like).collect();
        let mut offsets = Vec::with_capacity(shape.len());
        let mut width = 0;
        for s in &shape {
            offsets.push(width);
            width += s.counts.len();
        }
        Self {
            slots: shape
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect(),
            labels: label_maps(&shape),
            shape,
            offsets,
            width,
            bucket_ms: bucket_ms.max(1),
            max_buckets: max_buckets.max(1),
            buckets: VecDeque::new(),
        }
    }

    /// Adds `sketches` the windows do not count yet (a reference completed after
    /// activation): their bins start at zero in every kept bucket, the rest keep their counts.
    pub fn extend(&mut self, sketches: &[Sketch]) {
        let mut all: Vec<(Sketch, usize)> =
            self.shape.drain(..).zip(self.offsets.drain(..)).collect();
        for s in sketches {
            if self.slots.contains_key(&s.name) || all.iter().any(|(x, _)| x.name == s.name) {
                continue;
            }
            all.push((s.empty_like(), self.width));
            self.width += s.counts.len();
        }
        // Sorted by name, as a profile is (reports look signals up by name).
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let (shape, offsets): (Vec<Sketch>, Vec<usize>) = all.into_iter().unzip();
        self.slots = shape
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        self.labels = label_maps(&shape);
        self.shape = shape;
        self.offsets = offsets;
        for (_, counts) in &mut self.buckets {
            counts.resize(self.width, 0);
        }
    }

    /// The sketch slot of a signal name (callers cache it: a lookup per observation is what
    /// the slot avoids).
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.slots.get(name).copied()
    }

    /// The counts of the bucket holding `at_ms` (a time before the ring's oldest bucket
    /// lands in it; one after its newest opens new buckets).
    fn bucket(&mut self, at_ms: i64) -> &mut [u32] {
        let start = at_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        let newest = self.buckets.back().map(|b| b.0);
        if newest.is_none_or(|n| start > n) {
            self.buckets.push_back((start, vec![0; self.width]));
            while self.buckets.len() > self.max_buckets {
                self.buckets.pop_front();
            }
        }
        let i = match self.buckets.binary_search_by(|b| b.0.cmp(&start)) {
            Ok(i) => i,
            // Older than what is kept, or between kept buckets: the nearest older one.
            Err(i) => i.saturating_sub(1),
        };
        &mut self.buckets[i].1
    }

    pub fn add_numeric(&mut self, at_ms: i64, slot: usize, v: f32) {
        let Some(s) = self.shape.get(slot) else {
            return;
        };
        let bin = self.offsets[slot] + s.bin(v);
        let b = self.bucket(at_ms);
        b[bin] = b[bin].saturating_add(1);
    }

    /// Counts `n` of `label`; a label the reference does not name counts as `other` (or is
    /// dropped where there is no such bin).
    pub fn add_label(&mut self, at_ms: i64, slot: usize, label: &str, n: u32) {
        let Some(map) = self.labels.get(slot) else {
            return;
        };
        let Some(&i) = map.get(label).or_else(|| map.get(OTHER)) else {
            return;
        };
        let bin = self.offsets[slot] + i;
        let b = self.bucket(at_ms);
        b[bin] = b[bin].saturating_add(n);
    }

    /// Counts `n` in bin `i` of a categorical or mix sketch.
    pub fn add_bin(&mut self, at_ms: i64, slot: usize, i: usize, n: u32) {
        let Some(s) = self.shape.get(slot) else {
            return;
        };
        if i >= s.counts.len() {
            return;
        }
        let bin = self.offsets[slot] + i;
        let b = self.bucket(at_ms);
        b[bin] = b[bin].saturating_add(n);
    }

    pub fn add_rate(&mut self, at_ms: i64, slot: usize, hit: bool) {
        self.add_counts(at_ms, slot, u32::from(hit), 1);
    }

    /// Adds `hits` and `trials` to a rate.
    pub fn add_counts(&mut self, at_ms: i64, slot: usize, hits: u32, trials: u32) {
        let Some(s) = self.shape.get(slot) else {
            return;
        };
        if s.kind != SketchKind::Rate {
            return;
        }
        let units = s.counts.len() > 2 && trials > 0;
        let at = self.offsets[slot];
        let b = self.bucket(at_ms);
        b[at] = b[at].saturating_add(hits);
        b[at + 1] = b[at + 1].saturating_add(trials);
        if units {
            b[at + 2] = b[at + 2].saturating_add(1);
        }
    }

    /// An [`Observer`] that counts into the bucket of `at_ms` (names the reference does not
    /// have are ignored).
    pub fn at(&mut self, at_ms: i64) -> LiveObserver<'_> {
        LiveObserver { w: self, at_ms }
    }

    /// The label index of a categorical or mix sketch, for [`Windows::add_bin`].
    pub fn label_bin(&self, slot: usize, label: &str) -> Option<usize> {
        let map = self.labels.get(slot)?;
        map.get(label).or_else(|| map.get(OTHER)).copied()
    }

    /// The sum of the last `ceil(window_ms / bucket_ms)` buckets up to the one holding
    /// `now_ms` (whole buckets: the newest is still filling).
    pub fn window(&self, now_ms: i64, window_ms: i64) -> Profile {
        let newest = now_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        let n = (window_ms.max(1) + self.bucket_ms - 1) / self.bucket_ms;
        let from = newest - (n - 1) * self.bucket_ms;
        let mut sum = vec![0u64; self.width];
        for (start, counts) in &self.buckets {
            if *start >= from && *start <= now_ms {
                for (s, &c) in sum.iter_mut().zip(counts) {
                    *s += u64::from(c);
                }
            }
        }
        let sketches = self
            .shape
            .iter()
            .zip(&self.offsets)
            .map(|(s, &at)| Sketch {
                counts: sum[at..at + s.counts.len()].to_vec(),
                ..s.clone()
            })
            .collect();
        Profile {
            source: format!("the last {} s", window_ms / 1000),
            captured_at_ms: now_ms,
            sketches,
        }
    }

    /// Longest window the ring can answer.
    pub fn span_ms(&self) -> i64 {
        self.bucket_ms * self.max_buckets as i64
    }

    /// Bytes held by the counts at most (the ring full).
    pub fn max_bytes(&self) -> usize {
        self.max_buckets * self.width * std::mem::size_of::<u32>()
    }
}

/// Each sketch's label → bin.
fn label_maps(shape: &[Sketch]) -> Vec<HashMap<String, usize>> {
    shape
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i))
                .collect()
        })
        .collect()
}

/// See [`Windows::at`].
pub struct LiveObserver<'a> {
    w: &'a mut Windows,
    at_ms: i64,
}

impl Observer for LiveObserver<'_> {
    fn numeric(&mut self, name: &str, v: f32) {
        if let Some(slot) = self.w.slot(name) {
            self.w.add_numeric(self.at_ms, slot, v);
        }
    }

    fn label(&mut self, name: &str, _mix: bool, label: &str, n: u64) {
        if let Some(slot) = self.w.slot(name) {
            self.w.add_label(
                self.at_ms,
                slot,
                label,
                u32::try_from(n).unwrap_or(u32::MAX),
            );
        }
    }

    fn rate(&mut self, name: &str, hits: u64, trials: u64) {
        if let Some(slot) = self.w.slot(name) {
            let c = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
            self.w.add_counts(self.at_ms, slot, c(hits), c(trials));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileBuilder;

    #[test]
    fn windows_sum_their_buckets_and_forget_the_oldest() {
        let mut b = ProfileBuilder::default();
        for i in 0..100 {
            b.numeric("x", i as f32);
            b.label("c", false, if i % 2 == 0 { "a" } else { "b" }, 1);
            b.trial("r", i % 4 == 0);
        }
        let reference = b.finish("ref", 0, 4, 10);
        let mut w = Windows::new(&reference, 1000, 5);
        let (x, c, r) = (
            w.slot("x").expect("x"),
            w.slot("c").expect("c"),
            w.slot("r").expect("r"),
        );
        for t in 0..10 {
            let at = t * 1000;
            w.add_numeric(at, x, 99.0);
            w.add_label(at, c, "zzz", 1);
            w.add_rate(at, r, true);
        }
        // Five buckets kept: a 3 s window holds 3 observations, a 100 s one only 5.
        let last3 = w.window(9_999, 3_000);
        assert_eq!(last3.get("x").map(Sketch::total), Some(3));
        assert_eq!(
            w.window(9_999, 100_000).get("r").map(|s| s.counts.clone()),
            Some(vec![5, 5, 5])
        );
        // An unknown label counts as `other`; a high value in the last bin.
        let cs = last3.get("c").expect("c");
        assert_eq!(
            cs.counts[cs.labels.iter().position(|l| l == OTHER).expect("other")],
            3
        );
        let xs = last3.get("x").expect("x");
        assert_eq!(xs.counts.last(), Some(&3));
        assert_eq!(w.max_bytes(), 5 * w.width * 4);

        // A sketch added later counts from then on; the others keep theirs.
        let mut late = ProfileBuilder::default();
        for i in 0..10 {
            late.label("b.mix", true, if i < 5 { "s" } else { "t" }, 1);
        }
        let late = late.finish("late", 0, 4, 10);
        w.extend(&late.sketches);
        let mix = w.slot("b.mix").expect("added");
        let bin = w.label_bin(mix, "t").expect("t");
        w.add_bin(9_500, mix, bin, 2);
        let now = w.window(9_999, 3_000);
        let names: Vec<&str> = now.sketches.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b.mix", "c", "r", "x"]);
        assert_eq!(now.get("b.mix").map(Sketch::total), Some(2));
        assert_eq!(now.get("x").map(Sketch::total), Some(3));
    }
}
