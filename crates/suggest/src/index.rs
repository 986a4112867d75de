//! The prefix index: an FST map from every normalized word of every entry to its posting
//! list (entries best first), and the search that walks it with a prefix automaton and a
//! Levenshtein automaton, then checks every candidate word by word.

use crate::automaton::Lev;
use crate::matching::{Class, max_distance, word_match};
use crate::normalize::{Token, query_words, tokens};
use crate::wide::{MAX_TERMS, Wide};
use fst::automaton::{Automaton, Str};
use fst::{IntoStreamer, Map, MapBuilder, Streamer};
use rayon::prelude::*;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// What a suggestion stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Item,
    Category,
    Creator,
    Collection,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Item, Kind::Category, Kind::Creator, Kind::Collection];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Item => "item",
            Kind::Category => "category",
            Kind::Creator => "creator",
            Kind::Collection => "collection",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One suggestible thing.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: Kind,
    /// Item id, category name, creator id or collection id.
    pub id: String,
    /// What is shown.
    pub text: String,
    pub tokens: Vec<Token>,
    /// The catalog index the caller checks at query time (item, category or creator index;
    /// unused for collections).
    pub target: u32,
    /// Static relevance when the index was built (decayed popularity, 0..=1).
    pub score: f32,
}

impl Entry {
    pub fn new(kind: Kind, id: &str, text: &str, target: u32, score: f32) -> Self {
        Self {
            kind,
            id: id.to_string(),
            text: text.to_string(),
            tokens: tokens(text),
            target,
            score,
        }
    }
}

/// A suggestion: the entry, how well it matched, its final score and the matched spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub entry: u32,
    pub class: Class,
    pub score: f32,
    /// `[start, end)` character spans of `text` that matched.
    pub highlight: Vec<[u32; 2]>,
}

/// The same for the words a typo may stand for (a long mistyped number has thousands).
const MAX_FUZZY_TERMS: usize = 512;
const MAX_POSTINGS: usize = 50_000;

/// The built index; read-only, swapped whole when rebuilt.
#[derive(Debug)]
pub struct SuggestIndex {
    terms: Map<Vec<u8>>,
    /// Entry ids of list `k` are `postings[starts[k]..starts[k + 1]]`, best first.
    postings: Vec<u32>,
    starts: Vec<u32>,
    entries: Vec<Entry>,
    /// Postings under each prefix (of up to `WIDE_LEN` characters) that more than `MAX_TERMS`
    /// words extend: what such a prefix would read if it were not cut, to choose the driver.
    wide: HashMap<String, usize>,
}

impl Default for SuggestIndex {
    fn default() -> Self {
        Self::build(Vec::new())
    }
}

impl SuggestIndex {
    /// Indexes every word of every entry.
    pub fn build(entries: Vec<Entry>) -> Self {
        let entries = in_tie_order(entries);
        // (word, best entry first, entry): the score travels in the key, so the sort reads
        // no entry (at 10M titles the indirection was most of the build).
        let mut pairs: Vec<(&str, Reverse<u32>, u32)> = entries
            .par_iter()
            .enumerate()
            .flat_map_iter(|(e, en)| {
                let key = Reverse(sortable(en.score));
                en.tokens
                    .iter()
                    .map(move |t| (t.norm.as_str(), key, e as u32))
            })
            .collect();
        pairs.par_sort_unstable();
        pairs.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
        let mut builder = MapBuilder::memory();
        let mut postings = Vec::with_capacity(pairs.len());
        let mut starts = vec![0u32];
        let mut wide = Wide::default();
        let mut i = 0;
        while i < pairs.len() {
            let word = pairs[i].0;
            while i < pairs.len() && pairs[i].0 == word {
                postings.push(pairs[i].2);
                i += 1;
            }
            // Words arrive sorted and distinct, as the builder requires.
            if builder.insert(word, (starts.len() - 1) as u64).is_err() {
                postings.truncate(*starts.last().unwrap_or(&0) as usize);
                continue;
            }
            let n = postings.len() - *starts.last().unwrap_or(&0) as usize;
            wide.add(word, n);
            starts.push(postings.len() as u32);
        }
        let terms = builder
            .into_inner()
            .ok()
            .and_then(|b| Map::new(b).ok())
            .unwrap_or_default();
        Self {
            terms,
            postings,
            starts,
            entries,
            wide: wide.finish(),
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Distinct words indexed.
    pub fn keys(&self) -> usize {
        self.terms.len()
    }

    /// Bytes held: the FST, the postings, and the entries' texts and spans.
    pub fn memory_bytes(&self) -> usize {
        let entries: usize = self
            .entries
            .iter()
            .map(|e| {
                std::mem::size_of::<Entry>()
                    + e.id.len()
                    + e.text.len()
                    + e.tokens
                        .iter()
                        .map(|t| {
                            let heap = if t.norm.is_heap_allocated() {
                                t.norm.len()
                            } else {
                                0
                            };
                            std::mem::size_of::<Token>() + heap
                        })
                        .sum::<usize>()
            })
            .sum();
        self.terms.as_fst().as_bytes().len()
            + 4 * (self.postings.len() + self.starts.len())
            + self.wide.keys().map(|k| k.len() + 16).sum::<usize>()
            + entries
    }

    /// Bytes of the FST and postings per indexed word.
    pub fn bytes_per_key(&self) -> f64 {
        let b =
            self.terms.as_fst().as_bytes().len() + 4 * (self.postings.len() + self.starts.len());
        b as f64 / self.keys().max(1) as f64
    }

    /// The best `n` suggestions for `q` among `kinds`. `admit` sees each matching entry and
    /// returns `None` to drop it (safety) or the boost to add to its score (personalization,
    /// at most `max_boost`).
    ///
    /// The search runs class by class (exact, then prefix, then fuzzy). A hit of a class
    /// holds, for every query word, a word matching at least that well, so it is in every
    /// word's lists of that tier and above; the phase walks the lists of the word whose
    /// lists hold the fewest postings there, merged best first, and checks each entry against
    /// all the query's words. A driver chosen over all tiers at once would, for "crimson c",
    /// read every "crimson" title looking for an exact "c"; per class, the exact phase reads
    /// the short list of "c" and the prefix phase stops at the first "crimson c…" titles.
    /// A phase stops as soon as nothing left in it can enter the top `n`, and lower classes
    /// are skipped once `n` better hits are in hand: the answer is the brute-force one.
    pub fn search(
        &self,
        q: &str,
        n: usize,
        kinds: &[Kind],
        max_boost: f32,
        admit: &dyn Fn(&Entry) -> Option<f32>,
    ) -> Vec<Hit> {
        let (words, open) = query_words(q);
        if words.is_empty() || n == 0 {
            return Vec::new();
        }
        let last = words.len() - 1;
        let all: Vec<Tiers> = (0..words.len())
            .map(|i| self.tiers(&words[i], open && i == last))
            .collect();
        // No hit can match better than its worst word can: a word that can only match
        // fuzzily makes every hit fuzzy; one that matches nothing leaves nothing to find.
        let mut cap = Class::Exact;
        for t in &all {
            match CLASSES.iter().zip(&t.lists).find(|(_, l)| !l.is_empty()) {
                Some((&c, _)) => cap = cap.min(c),
                None => return Vec::new(),
            }
        }
        let mut hits: Vec<Hit> = Vec::new();
        // Entries checked so far: where each is in `hits` (if it matched), and the last phase
        // that counted it.
        let mut seen: HashMap<u32, (Option<usize>, usize)> = HashMap::new();
        let mut scanned = 0usize;
        for (depth, &class) in CLASSES.iter().enumerate() {
            if class > cap {
                continue;
            }
            let above = hits.iter().filter(|h| h.class > class).count();
            if above >= n || scanned > MAX_POSTINGS {
                break;
            }
            let need = n - above;
            // The driver of this class: the word with the fewest postings down to its tier
            // (a cut prefix counted whole: the words it did not read would be read too).
            let Some(driver) = all.iter().min_by_key(|t| {
                let read: usize = t.lists[..=depth]
                    .iter()
                    .flatten()
                    .map(|&k| self.list(k).len())
                    .sum();
                match t.whole {
                    Some(whole) if depth >= 1 => read.max(whole),
                    _ => read,
                }
            }) else {
                break;
            };
            // The `need` best final scores of this class so far (a min-heap).
            let mut best: BinaryHeap<Reverse<Score>> = BinaryHeap::new();
            // Heads of the driver's lists down to this tier, best static score first, then in
            // entry order (the ranking's tie order, see `in_tie_order`).
            let mut heads: BinaryHeap<Head> = driver.lists[..=depth]
                .iter()
                .flatten()
                .filter_map(|&k| {
                    let &e = self.list(k).first()?;
                    Some((
                        Score(self.entries[e as usize].score),
                        Reverse(e),
                        Reverse(k),
                        Reverse(0),
                    ))
                })
                .collect();
            while let Some((Score(top), Reverse(e), Reverse(k), Reverse(at))) = heads.pop() {
                // Nothing left can beat the `need`-th best: with no boost, not even a tie
                // (it comes later in the tie order).
                if best.len() >= need
                    && best.peek().is_some_and(|Reverse(Score(min))| {
                        top + max_boost < *min || (max_boost == 0.0 && top <= *min)
                    })
                {
                    break;
                }
                let list = self.list(k);
                if let Some(&next) = list.get(at + 1) {
                    let s = Score(self.entries[next as usize].score);
                    heads.push((s, Reverse(next), Reverse(k), Reverse(at + 1)));
                }
                scanned += 1;
                if scanned > MAX_POSTINGS {
                    break;
                }
                // An entry seen in an earlier phase is in `hits` already (or matched nothing);
                // one of this class counts towards the bound either way.
                let (at, counted) = seen.entry(e).or_insert_with(|| {
                    let at = self.check(e, &words, open, kinds, admit).map(|hit| {
                        hits.push(hit);
                        hits.len() - 1
                    });
                    (at, usize::MAX)
                });
                // An entry in several of the driver's lists counts once per phase.
                if *counted == depth {
                    continue;
                }
                *counted = depth;
                if let Some(h) = at.map(|i| &hits[i]).filter(|h| h.class == class) {
                    best.push(Reverse(Score(h.score)));
                    if best.len() > need {
                        best.pop();
                    }
                }
            }
        }
        rank(&mut hits, &self.entries, n);
        hits
    }

    /// Entry `e` as a hit for the query, if it is of a wanted kind, matches and is admitted.
    fn check(
        &self,
        e: u32,
        words: &[String],
        open: bool,
        kinds: &[Kind],
        admit: &dyn Fn(&Entry) -> Option<f32>,
    ) -> Option<Hit> {
        let entry = &self.entries[e as usize];
        if !kinds.contains(&entry.kind) {
            return None;
        }
        let (class, highlight) = match_entry(entry, words, open)?;
        let boost = admit(entry)?;
        Some(Hit {
            entry: e,
            class,
            score: entry.score + boost,
            highlight,
        })
    }

    fn list(&self, k: u64) -> &[u32] {
        let (a, b) = (self.starts[k as usize], self.starts[k as usize + 1]);
        &self.postings[a as usize..b as usize]
    }

    /// The posting lists of the index words that `word` matches, by how: equal, extended
    /// (when `open`, the word still being typed) and within the allowed edits. A list is in
    /// the best tier it qualifies for.
    fn tiers(&self, word: &str, open: bool) -> Tiers {
        let mut exact: Vec<u64> = self.terms.get(word).into_iter().collect();
        let mut prefix = Vec::new();
        let mut fuzzy = Vec::new();
        let dist = max_distance(word.chars().count());
        if open {
            take(
                &mut prefix,
                self.terms.search(Str::new(word).starts_with()),
                MAX_TERMS,
            );
        }
        // Counted before the word itself leaves the prefix tier.
        let whole = (prefix.len() >= MAX_TERMS).then(|| {
            // A cut prefix longer than `WIDE_LEN` is not counted: what it read stands in.
            self.wide.get(word).copied().unwrap_or(0)
        });
        if let Some(lev) = (dist > 0).then(|| Lev::new(word, dist, open)).flatten() {
            crate::automaton::walk(self.terms.as_fst(), &lev, MAX_FUZZY_TERMS, &mut fuzzy);
        }
        exact.sort_unstable();
        prefix.retain(|k| !exact.contains(k));
        prefix.sort_unstable();
        fuzzy.retain(|k| exact.binary_search(k).is_err() && prefix.binary_search(k).is_err());
        Tiers {
            lists: [exact, prefix, fuzzy],
            whole,
        }
    }
}

/// Match classes best first, as the search runs them.
const CLASSES: [Class; 3] = [Class::Exact, Class::Prefix, Class::Fuzzy];

/// One query word's posting lists by tier (exact, prefix, fuzzy), and when its prefix tier was
/// cut at `MAX_TERMS` words, the postings of every word it extends.
struct Tiers {
    lists: [Vec<u64>; 3],
    whole: Option<usize>,
}

/// Entries ordered as the ranking breaks ties (shorter text, then id), so that posting lists,
/// sorted by score and then entry, come in ranking order and a scan can stop at a tie.
fn in_tie_order(entries: Vec<Entry>) -> Vec<Entry> {
    let order: Vec<usize> = {
        let mut keys: Vec<(usize, &str, usize)> = entries
            .par_iter()
            .enumerate()
            .map(|(i, e)| (e.text.chars().count(), e.id.as_str(), i))
            .collect();
        keys.par_sort_unstable();
        keys.into_iter().map(|k| k.2).collect()
    };
    let mut slots: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// `f32` bits that sort as the numbers do (negative below positive).
fn sortable(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 { !b } else { b | (1 << 31) }
}

/// A score ordered totally (for the heaps).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f32);

/// A posting list's head in the merge: (static score, entry, list, position).
type Head = (Score, Reverse<u32>, Reverse<u64>, Reverse<usize>);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Appends the posting-list numbers a search finds, up to `max` in all.
fn take<A: Automaton>(lists: &mut Vec<u64>, search: fst::map::StreamBuilder<'_, A>, max: usize) {
    let mut stream = search.into_stream();
    while lists.len() < max
        && let Some((_, v)) = stream.next()
    {
        lists.push(v);
    }
}

/// Whether every query word matches a word of `entry`; the entry's class is its worst word's,
/// its highlights every matched span.
pub fn match_entry(entry: &Entry, words: &[String], open: bool) -> Option<(Class, Vec<[u32; 2]>)> {
    let last = words.len().checked_sub(1)?;
    let mut class = Class::Exact;
    let mut spans = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let best = entry
            .tokens
            .iter()
            .filter_map(|t| word_match(w, &t.norm, open && i == last).map(|(c, len)| (c, len, t)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.2.start.cmp(&a.2.start)))?;
        class = class.min(best.0);
        let t = best.2;
        spans.push([t.start, (t.start + best.1 as u32).min(t.end)]);
    }
    spans.sort_unstable();
    spans.dedup();
    Some((class, spans))
}

/// Best first: by class, then score, then shorter text, then id; keeps `n`.
pub fn rank(hits: &mut Vec<Hit>, entries: &[Entry], n: usize) {
    hits.sort_by(|a, b| order(a, &entries[a.entry as usize], b, &entries[b.entry as usize]));
    hits.truncate(n);
}

/// The order of two hits (with their entries), best first: class, score, shorter text, id.
pub fn order(a: &Hit, ea: &Entry, b: &Hit, eb: &Entry) -> std::cmp::Ordering {
    b.class
        .cmp(&a.class)
        .then(b.score.total_cmp(&a.score))
        .then(ea.text.chars().count().cmp(&eb.text.chars().count()))
        .then(ea.id.cmp(&eb.id))
}

/// The same answer without the index: every entry checked (the tests' reference).
pub fn brute_force(
    entries: &[Entry],
    q: &str,
    n: usize,
    kinds: &[Kind],
    admit: &dyn Fn(&Entry) -> Option<f32>,
) -> Vec<Hit> {
    let (words, open) = query_words(q);
    if words.is_empty() {
        return Vec::new();
    }
    let mut hits: Vec<Hit> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| kinds.contains(&e.kind))
        .filter_map(|(i, e)| {
            let (class, highlight) = match_entry(e, &words, open)?;
            let boost = admit(e)?;
            Some(Hit {
                entry: i as u32,
                class,
                score: e.score + boost,
                highlight,
            })
        })
        .collect();
    rank(&mut hits, entries, n);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short last word after a rarer one ("crimson c", "c" before ten thousand "cNNNN"
    /// words, more than `MAX_TERMS`): the exact phase reads the list of "c", the prefix phase
    /// that of "crimson", and the answer is the brute-force one, words past the cut included.
    #[test]
    fn a_short_last_word_is_driven_per_class_and_the_answer_is_complete() {
        let mut entries = Vec::new();
        for i in 0..10_000u32 {
            let score = (i % 97) as f32 / 97.0;
            entries.push(Entry::new(
                Kind::Item,
                &format!("x{i}"),
                &format!("c{i:04} river"),
                i,
                score,
            ));
        }
        // Titles with "crimson" and a late "c…" word (past the first 4,096 "c" words), and
        // one with the word "c" itself.
        for (j, w) in ["c9990", "c9999", "c", "c5000", "cz"].iter().enumerate() {
            let t = format!("crimson {w}");
            entries.push(Entry::new(
                Kind::Item,
                &format!("y{j}"),
                &t,
                20_000 + j as u32,
                0.01,
            ));
        }
        let index = SuggestIndex::build(entries);
        let admit = |_: &Entry| Some(0.0);
        for q in [
            "crimson c",
            "crimson c9",
            "crimson c",
            "c999",
            "crimson cz",
            "river c",
        ] {
            let got = index.search(q, 5, &Kind::ALL, 0.0, &admit);
            let want = brute_force(index.entries(), q, 5, &Kind::ALL, &admit);
            assert_eq!(got, want, "query {q:?}");
            assert!(!got.is_empty(), "query {q:?} finds something");
        }
        // The exact "c" title ranks first for "crimson c", the late prefixes after it.
        let got = index.search("crimson c", 5, &Kind::ALL, 0.0, &admit);
        assert_eq!(index.entries()[got[0].entry as usize].text, "crimson c");
        assert_eq!(got.len(), 5);
    }
}
