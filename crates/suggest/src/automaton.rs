//! A Levenshtein automaton for the FST walk, kept as one row of the edit-distance table per
//! state: built in no time for any word (fst's own Levenshtein DFA takes milliseconds to
//! construct for a six-letter word, more than the whole walk), over characters like
//! [`crate::matching`], so both decide alike.

use crate::matching::WORD;
use fst::Automaton;

/// Keys that start with `word`'s first character and are within `limit` edits of it; with
/// `prefix`, keys one of whose prefixes is.
#[derive(Debug, Clone)]
pub struct Lev {
    first: char,
    /// The word after its first character: what the rows measure against.
    word: Vec<char>,
    limit: u8,
    prefix: bool,
}

impl Lev {
    /// `None` for words too long to compare by edits.
    pub fn new(word: &str, limit: u32, prefix: bool) -> Option<Self> {
        let mut chars = word.chars();
        let first = chars.next()?;
        let word: Vec<char> = chars.collect();
        let limit = u8::try_from(limit).ok()?;
        (word.len() < WORD).then_some(Self {
            first,
            word,
            limit,
            prefix,
        })
    }
}

/// The distances from every prefix of the word to what was read, a character's bytes not
/// yet complete, and whether a prefix already matched (`prefix` mode: then all does).
#[derive(Debug, Clone)]
pub struct LevState {
    row: [u8; WORD + 1],
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
        let mut row = [0u8; WORD + 1];
        for (j, r) in row.iter_mut().enumerate().take(self.word.len() + 1) {
            *r = j.min(255) as u8;
        }
        LevState {
            row,
            pending: [0; 4],
            plen: 0,
            started: false,
            matched: false,
            dead: false,
        }
    }

    fn is_match(&self, s: &LevState) -> bool {
        !s.dead && s.plen == 0 && (s.matched || s.row[self.word.len()] <= self.limit)
    }

    fn can_match(&self, s: &LevState) -> bool {
        !s.dead && (s.matched || s.row[..=self.word.len()].iter().any(|&d| d <= self.limit))
    }

    fn will_always_match(&self, s: &LevState) -> bool {
        !s.dead && s.matched && s.plen == 0
    }

    fn accept(&self, s: &LevState, byte: u8) -> LevState {
        let mut next = s.clone();
        if s.dead || s.matched {
            return next;
        }
        next.pending[next.plen as usize] = byte;
        next.plen += 1;
        let c = match std::str::from_utf8(&next.pending[..next.plen as usize]) {
            Ok(text) => text.chars().next(),
            // An incomplete character waits for its next byte; anything else ends the walk.
            Err(e) if e.error_len().is_none() && next.plen < 4 => return next,
            Err(_) => None,
        };
        let Some(c) = c else {
            next.dead = true;
            return next;
        };
        next.plen = 0;
        let m = self.word.len();
        if !s.started {
            next.started = c == self.first;
            next.dead = !next.started;
            next.matched = self.prefix && next.row[m] <= self.limit;
            return next;
        }
        next.row[0] = s.row[0].saturating_add(1);
        for j in 1..=m {
            let sub = s.row[j - 1].saturating_add(u8::from(self.word[j - 1] != c));
            next.row[j] = sub
                .min(s.row[j].saturating_add(1))
                .min(next.row[j - 1].saturating_add(1));
        }
        next.matched = self.prefix && next.row[m] <= self.limit;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fst::{IntoStreamer, Set, Streamer};

    #[test]
    fn finds_what_the_distance_allows_and_no_more() {
        let set = Set::from_iter(["empire", "empires", "emprie", "mé", "umpire", "vampire"])
            .expect("set");
        let find = |lev: Lev| {
            let mut out = Vec::new();
            let mut s = set.search(lev).into_stream();
            while let Some(k) = s.next() {
                out.push(String::from_utf8(k.to_vec()).expect("utf8"));
            }
            out
        };
        let lev = Lev::new("empire", 1, false).expect("lev");
        assert_eq!(find(lev), ["empire", "empires"]);
        let lev = Lev::new("empir", 1, true).expect("lev");
        // "empr" is one edit from "empir"; no prefix of "vampire" is.
        assert_eq!(find(lev), ["empire", "empires", "emprie"]);
        // Characters, not bytes: "é" (two bytes) is one substitution from "x". The first
        // character is never a typo.
        let lev = Lev::new("mx", 1, false).expect("lev");
        assert_eq!(find(lev), ["mé"]);
        let lev = Lev::new("xmpire", 1, false).expect("lev");
        assert!(find(lev).is_empty());
    }
}
