//! Instant suggestions: a prefix index (an FST of normalized words) over item titles,
//! categories, creators and curated lists, with typo tolerance by Levenshtein automata,
//! multi-word queries matched word by word, and a brute-force reference the tests hold it to.
//! Safety and personalization are the caller's, checked per matching entry at query time.

mod automaton;
pub mod catalog;
pub mod index;
pub mod matching;
pub mod normalize;
mod wide;

pub use index::{Entry, Hit, Kind, SuggestIndex, brute_force, order};
pub use matching::Class;
