//! Prefix totals for the search's choice of driver: the postings under every short prefix
//! that more than `MAX_TERMS` index words extend, counted in one pass as the index is built.

use std::collections::HashMap;

/// Most index words one query word expands to, and most postings read for it: a short prefix
/// of a large catalog stops there (postings are best first, so what is read is the best).
pub(crate) const MAX_TERMS: usize = 4096;

/// Prefixes up to this many characters long count their postings at build time.
const WIDE_LEN: usize = 6;

/// The postings of every prefix (up to [`WIDE_LEN`] characters) that more than `MAX_TERMS`
/// index words extend: without it a query word such as "c" before a hundred thousand
/// creator ids counts only the lists it reads (the first `MAX_TERMS`), looks rarer than
/// "crimson" and drives, reading thousands of creators for a title that needs both words.
/// Built in one pass over the sorted words, one open prefix per length.
#[derive(Default)]
pub(crate) struct Wide {
    open: [(String, usize, usize); WIDE_LEN],
    done: HashMap<String, usize>,
}

impl Wide {
    pub(crate) fn add(&mut self, word: &str, postings: usize) {
        let mut ends = word
            .char_indices()
            .map(|(i, _)| i)
            .skip(1)
            .chain([word.len()]);
        for open in &mut self.open {
            let Some(end) = ends.next() else { break };
            let p = &word[..end];
            if open.0 != p {
                let (prefix, terms, sum) = std::mem::replace(open, (p.to_string(), 0, 0));
                if terms > MAX_TERMS {
                    self.done.insert(prefix, sum);
                }
            }
            open.1 += 1;
            open.2 += postings;
        }
    }

    pub(crate) fn finish(mut self) -> HashMap<String, usize> {
        for (prefix, terms, sum) in std::mem::take(&mut self.open) {
            if terms > MAX_TERMS {
                self.done.insert(prefix, sum);
            }
        }
        self.done
    }
}
