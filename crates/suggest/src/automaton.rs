//! A Levenshtein automaton for the FST walk, bit-parallel (Wu–Manber): a state is one bit
//! mask of reached word positions per number of edits spent, so a step is a few shifts and
//! masks whatever the word's length. fst's own Levenshtein DFA takes milliseconds to build
//! for a six-letter word, and a row of the edit-distance table per state cost ~3 ms on a long
//! mistyped number over 10M titles (every step copied and recomputed the row). It reads
//! characters like [`crate::matching`], so both decide alike.

use crate::matching::WORD;
use fst::Automaton;

/// Most edits a state tracks (the matching rules allow two).
const MAX_EDITS: usize = 2;

/// Keys that start with `word`'s first character and are within `limit` edits of it; with
/// `prefix`, keys one of whose prefixes is.
#[derive(Debug, Clone)]
pub struct Lev {
    first: char,
    /// Characters after the first: what the masks measure against.
    len: usize,
    /// Bit `j + 1` of `ascii[c]` is set where the word's `j`-th character (after the first)
    /// is `c`; `other` holds the same for non-ASCII characters.
    ascii: [u64; 128],
    other: Vec<(char, u64)>,
    limit: usize,
    prefix: bool,
}

impl Lev {
    /// `None` for words too long to compare by edits, or more edits than tracked.
    pub fn new(word: &str, limit: u32, prefix: bool) -> Option<Self> {
        let mut chars = word.chars();
        let first = chars.next()?;
        let rest: Vec<char> = chars.collect();
        let limit = usize::try_from(limit).ok().filter(|&l| l <= MAX_EDITS)?;
        if rest.len() >= WORD || rest.len() >= 63 {
            return None;
        }
        let mut ascii = [0u64; 128];
        let mut other: Vec<(char, u64)> = Vec::new();
        for (j, &c) in rest.iter().enumerate() {
            let bit = 1u64 << (j + 1);
            if c.is_ascii() {
                ascii[c as usize] |= bit;
            } else if let Some(slot) = other.iter_mut().find(|(o, _)| *o == c) {
                slot.1 |= bit;
            } else {
                other.push((c, bit));
            }
        }
        Some(Self {
            first,
            len: rest.len(),
            ascii,
            other,
            limit,
            prefix,
        })
    }

    fn mask(&self, c: char) -> u64 {
        if c.is_ascii() {
            self.ascii[c as usize]
        } else {
            self.other
                .iter()
                .find(|(o, _)| *o == c)
                .map_or(0, |&(_, m)| m)
        }
    }

    /// Positions `0..=len` as bits.
    fn full(&self) -> u64 {
        (1u64 << (self.len + 1)) - 1
    }

    fn end(&self) -> u64 {
        1u64 << self.len
    }

    /// After the first character: position `e` reached by deleting `e` word characters.
    fn initial(&self) -> [u64; MAX_EDITS + 1] {
        let mut r = [0u64; MAX_EDITS + 1];
        r[0] = 1;
        for e in 1..=MAX_EDITS {
            r[e] = (r[e - 1] | (r[e - 1] << 1)) & self.full();
        }
        r
    }
}

/// Bit `i` of `reach[e]`: the key read so far is within `e` edits of the word's first `i`
/// characters (after the first). Plus a character's bytes not yet complete, and whether a
/// prefix already matched (`prefix` mode: then all does).
#[derive(Debug, Clone)]
pub struct LevState {
    reach: [u64; MAX_EDITS + 1],
    pending: [u8; 4],
    plen: u8,
    /// The first character was read (and was the word's).
    started: bool,
    matched: bool,
    dead: bool,
}

impl Automaton for Lev {
    type State = LevState;

    fn start(&self) -> LevState {
        LevState {
            reach: [0; MAX_EDITS + 1],
            pending: [0; 4],
            plen: 0,
            started: false,
            matched: false,
            dead: false,
        }
    }

    fn is_match(&self, s: &LevState) -> bool {
        !s.dead && s.started && s.plen == 0 && (s.matched || s.reach[self.limit] & self.end() != 0)
    }

    fn can_match(&self, s: &LevState) -> bool {
        !s.dead && (!s.started || s.matched || s.reach[self.limit] != 0)
    }

    fn will_always_match(&self, s: &LevState) -> bool {
        !s.dead && s.matched && s.plen == 0
    }

    fn accept(&self, s: &LevState, byte: u8) -> LevState {
        let mut next = s.clone();
        if s.dead || s.matched {
            return next;
        }
        let c = if s.plen == 0 && byte.is_ascii() {
            byte as char
        } else {
            next.pending[next.plen as usize] = byte;
            next.plen += 1;
            // The leading byte says how long the character is.
            let need = match next.pending[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 0,
            };
            if need == 0 || (next.plen as usize) > need {
                next.dead = true;
                return next;
            }
            if (next.plen as usize) < need {
                return next;
            }
            let decoded = std::str::from_utf8(&next.pending[..need])
                .ok()
                .and_then(|t| t.chars().next());
            next.plen = 0;
            match decoded {
                Some(c) => c,
                None => {
                    next.dead = true;
                    return next;
                }
            }
        };
        if !s.started {
            next.started = c == self.first;
            next.dead = !next.started;
            next.reach = self.initial();
            next.matched = self.prefix && next.reach[self.limit] & self.end() != 0;
            return next;
        }
        let (b, full) = (self.mask(c), self.full());
        let old = &s.reach;
        next.reach[0] = (old[0] << 1) & b;
        for e in 1..=self.limit {
            // Match, insertion (an extra key character), substitution, deletion (a word
            // character skipped, closed over this step's lower row).
            next.reach[e] =
                (((old[e] << 1) & b) | old[e - 1] | (old[e - 1] << 1) | (next.reach[e - 1] << 1))
                    & full;
        }
        next.dead = next.reach[self.limit] == 0;
        next.matched = self.prefix && next.reach[self.limit] & self.end() != 0;
        next
    }
}

/// The values of the keys `lev` accepts, in key order, at most `max`: the same as fst's
/// `search(lev)` stream, but a transition whose state cannot match is dropped before its
/// target node is decoded (the stream decodes and stacks every target first: on a long
/// mistyped number over 10M titles that was most of the walk).
pub fn walk(fst: &fst::raw::Fst<Vec<u8>>, lev: &Lev, max: usize, found: &mut Vec<u64>) {
    fn visit(
        fst: &fst::raw::Fst<Vec<u8>>,
        node: fst::raw::Node<'_>,
        out: fst::raw::Output,
        state: &LevState,
        lev: &Lev,
        max: usize,
        found: &mut Vec<u64>,
    ) {
        if found.len() >= max {
            return;
        }
        if node.is_final() && lev.is_match(state) {
            found.push(out.cat(node.final_output()).value());
        }
        for t in node.transitions() {
            if found.len() >= max {
                return;
            }
            let next = lev.accept(state, t.inp);
            if lev.can_match(&next) {
                visit(
                    fst,
                    fst.node(t.addr),
                    out.cat(t.out),
                    &next,
                    lev,
                    max,
                    found,
                );
            }
        }
    }
    let start = lev.start();
    if lev.can_match(&start) {
        visit(
            fst,
            fst.root(),
            fst::raw::Output::zero(),
            &start,
            lev,
            max,
            found,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fst::{IntoStreamer, Set, Streamer};
    use proptest::prelude::*;

    fn find(set: &Set<Vec<u8>>, lev: Lev) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = set.search(lev).into_stream();
        while let Some(k) = s.next() {
            out.push(String::from_utf8(k.to_vec()).expect("utf8"));
        }
        out
    }

    #[test]
    fn finds_what_the_distance_allows_and_no_more() {
        let set = Set::from_iter(["empire", "empires", "emprie", "mé", "umpire", "vampire"])
            .expect("set");
        let lev = Lev::new("empire", 1, false).expect("lev");
        assert_eq!(find(&set, lev), ["empire", "empires"]);
        let lev = Lev::new("empir", 1, true).expect("lev");
        // "empr" is one edit from "empir"; no prefix of "vampire" is.
        assert_eq!(find(&set, lev), ["empire", "empires", "emprie"]);
        // Characters, not bytes: "é" (two bytes) is one substitution from "x". The first
        // character is never a typo.
        let lev = Lev::new("mx", 1, false).expect("lev");
        assert_eq!(find(&set, lev), ["mé"]);
        let lev = Lev::new("xmpire", 1, false).expect("lev");
        assert!(find(&set, lev).is_empty());
    }

    proptest! {
        // The walk finds exactly the words the matching rules accept as fuzzy or better, for
        // words over a small alphabet (so edits collide) with a non-ASCII letter in it.
        #[test]
        fn agrees_with_the_edit_distance_table(
            word in "[abé]{1,10}",
            keys in proptest::collection::btree_set("[abé]{1,12}", 1..40),
            limit in 1u32..=2,
            prefix in any::<bool>(),
        ) {
            let set = Set::from_iter(keys.iter()).expect("set");
            let got = find(&set, Lev::new(&word, limit, prefix).expect("lev"));
            let want: Vec<String> = keys
                .iter()
                .filter(|k| {
                    let first_ok = k.chars().next() == word.chars().next();
                    let exact_or_prefix = *k == &word || (prefix && k.starts_with(&word));
                    first_ok && (exact_or_prefix
                        || crate::matching::within(&word, k, limit, prefix))
                })
                .cloned()
                .collect();
            prop_assert_eq!(&got, &want);
            // The walk finds the same keys' values, in the same order, up to any limit.
            let map = fst::Map::from_iter(keys.iter().enumerate().map(|(i, k)| (k, i as u64)))
                .expect("map");
            let lev = Lev::new(&word, limit, prefix).expect("lev");
            let mut all = Vec::new();
            let mut stream = map.search(lev.clone()).into_stream();
            while let Some((_, v)) = stream.next() {
                all.push(v);
            }
            for max in [1, 3, usize::MAX] {
                let mut walked = Vec::new();
                walk(map.as_fst(), &lev, max, &mut walked);
                prop_assert_eq!(&walked[..], &all[..all.len().min(max)]);
            }
        }
    }
}
