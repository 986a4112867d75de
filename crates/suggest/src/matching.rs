//! How one query word matches one indexed word: exactly, as a prefix (the word being typed),
//! or within the edit distance its length allows (1 from 4 characters, 2 from 8; the first
//! character is never a typo). The index
//! and the brute-force reference both decide with these functions.

/// How well a word matched; better classes rank first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Fuzzy = 1,
    Prefix = 2,
    Exact = 3,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Exact => "exact",
            Class::Prefix => "prefix",
            Class::Fuzzy => "fuzzy",
        }
    }
}

/// Edits a query word of this many characters may be away from what it matches.
pub fn max_distance(chars: usize) -> u32 {
    match chars {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// How `word` (the query's, normalized) matches `token`; `open` when it is still being typed
/// (then it may match a prefix of the token). Also returns how many characters of the token
/// to highlight.
pub fn word_match(word: &str, token: &str, open: bool) -> Option<(Class, usize)> {
    let tlen = token.chars().count();
    if word == token {
        return Some((Class::Exact, tlen));
    }
    let wlen = word.chars().count();
    if open && token.starts_with(word) {
        return Some((Class::Prefix, wlen));
    }
    let d = max_distance(wlen);
    if d == 0 {
        return None;
    }
    // Lengths alone rule most pairs out before any table is filled.
    if (!open && wlen.abs_diff(tlen) > d as usize) || (open && tlen + (d as usize) < wlen) {
        return None;
    }
    matched_len(word, token, d, open).map(|len| (Class::Fuzzy, len))
}

/// Whether `token` (`open`: a prefix of it) is within `limit` edits of `word`, the first
/// character equal (search engines' suggesters never take it for a typo: it keeps the walk
/// over a large catalog's words to one first letter).
#[cfg(test)]
pub(crate) fn within(word: &str, token: &str, limit: u32, open: bool) -> bool {
    matched_len(word, token, limit, open).is_some()
}

/// [`within`], with how many characters of `token` matched.
fn matched_len(word: &str, token: &str, limit: u32, open: bool) -> Option<usize> {
    let mut w = ['\0'; WORD];
    let mut t = ['\0'; WORD + 2];
    let (wlen, tlen) = (word.chars().count(), token.chars().count());
    // A prefix needs only the token's first characters.
    if wlen > WORD || wlen == 0 || (!open && tlen > WORD + 2) {
        return None;
    }
    let tlen = tlen.min(WORD + 2);
    for (slot, c) in w.iter_mut().zip(word.chars()) {
        *slot = c;
    }
    for (slot, c) in t.iter_mut().zip(token.chars()) {
        *slot = c;
    }
    if tlen == 0 || w[0] != t[0] {
        return None;
    }
    let (w, t) = (&w[1..wlen], &t[1..tlen]);
    if open {
        prefix_distance(w, t, limit).map(|(_, at)| at + 1)
    } else {
        distance(w, t, limit).map(|_| tlen)
    }
}

/// Longest word compared by edit distance, in characters (longer ones match only exactly or
/// as prefixes).
pub const WORD: usize = 48;

/// Levenshtein distance, or `None` once it must exceed `limit`.
fn distance(a: &[char], b: &[char], limit: u32) -> Option<u32> {
    if a.len().abs_diff(b.len()) > limit as usize {
        return None;
    }
    let (row, len) = last_row(a, b);
    row[..len].last().copied().filter(|&d| d <= limit)
}

/// The smallest distance between `a` and any prefix of `b`, and that prefix's length.
fn prefix_distance(a: &[char], b: &[char], limit: u32) -> Option<(u32, usize)> {
    let (row, len) = last_row(a, b);
    let (at, &d) = row[..len]
        .iter()
        .enumerate()
        .min_by_key(|&(j, &d)| (d, j))?;
    (d <= limit).then_some((d, at))
}

/// The last row of the edit-distance table of `a` against every prefix of `b` (`a` at most
/// [`WORD`] characters, `b` two more), without allocating.
fn last_row(a: &[char], b: &[char]) -> ([u32; WORD + 3], usize) {
    let mut prev = [0u32; WORD + 3];
    let mut cur = [0u32; WORD + 3];
    for (j, p) in prev.iter_mut().enumerate().take(b.len() + 1) {
        *p = j as u32;
    }
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i as u32 + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + u32::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    (prev, b.len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_length_rules() {
        assert_eq!(
            word_match("empire", "empire", false),
            Some((Class::Exact, 6))
        );
        assert_eq!(word_match("emp", "empire", true), Some((Class::Prefix, 3)));
        assert_eq!(word_match("emp", "empire", false), None);
        // Three characters allow no typo; four allow one; eight allow two.
        assert_eq!(word_match("emo", "empire", true), None);
        assert_eq!(
            word_match("empr", "empire", true).map(|m| m.0),
            Some(Class::Fuzzy)
        );
        // The first character is never a typo.
        assert_eq!(word_match("xmpire", "empire", false), None);
        assert_eq!(word_match("xmpi", "empire", true), None);
        // A swap is two edits.
        assert_eq!(word_match("emprie", "empire", false), None);
        assert_eq!(word_match("stirkes", "strikes", false), None);
        assert_eq!(
            word_match("strkes", "strikes", false).map(|m| m.0),
            Some(Class::Fuzzy)
        );
        assert_eq!(
            word_match("terminatr", "terminator", false).map(|m| m.0),
            Some(Class::Fuzzy)
        );
        assert_eq!(
            word_match("trminatr", "terminator", false).map(|m| m.0),
            Some(Class::Fuzzy)
        );
        assert_eq!(word_match("trmnatr", "terminator", false), None);
        assert_eq!(
            word_match("trmin", "terminator", true).map(|m| m.0),
            Some(Class::Fuzzy)
        );
    }
}
