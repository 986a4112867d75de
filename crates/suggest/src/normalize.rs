//! Normalization shared by the index and the queries: compatibility decomposition with the
//! combining marks dropped (diacritics removed), lower case, and words split at every
//! character that is not alphanumeric; each word keeps its character span in the original.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// One word of a text: its normalized form and its span in the original, in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Inline up to 24 bytes (most words): a title's words sit in its token list, not in
    /// a heap block each, so checking an entry touches one or two cache lines, not six.
    pub norm: compact_str::CompactString,
    pub start: u32,
    pub end: u32,
}

/// The normalized form of one word (or of any string): `Émpire` → `empire`.
pub fn fold(s: &str) -> String {
    s.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// The words of `text` with their spans: "Star Wars: Episode V" → star, wars, episode, v.
pub fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut start: Option<u32> = None;
    let mut word = String::new();
    let mut n = 0u32;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if start.is_none() {
                start = Some(n);
            }
            word.push(c);
        } else if let Some(s) = start.take() {
            push(&mut out, &word, s, n);
            word.clear();
        }
        n += 1;
    }
    if let Some(s) = start {
        push(&mut out, &word, s, n);
    }
    out
}

fn push(out: &mut Vec<Token>, word: &str, start: u32, end: u32) {
    let norm = fold(word);
    if !norm.is_empty() {
        out.push(Token {
            norm: norm.into(),
            start,
            end,
        });
    }
}

/// The query's words, and whether the last one is still being typed (no trailing space).
pub fn query_words(q: &str) -> (Vec<String>, bool) {
    let words: Vec<String> = tokens(q).into_iter().map(|t| t.norm.into()).collect();
    let open = q.chars().last().is_some_and(char::is_alphanumeric);
    (words, open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_diacritics_and_splits_punctuation() {
        assert_eq!(fold("Émpire"), "empire");
        assert_eq!(fold("Ærøskøbing"), "ærøskøbing");
        assert_eq!(fold("Amélie"), "amelie");
        assert_eq!(fold("ＦＵＬＬ"), "full");
        let t = tokens("Star Wars: Episode V – The Empire Strikes Back (1980)");
        let words: Vec<&str> = t.iter().map(|t| t.norm.as_str()).collect();
        assert_eq!(
            words,
            [
                "star", "wars", "episode", "v", "the", "empire", "strikes", "back", "1980"
            ]
        );
        assert_eq!((t[1].start, t[1].end), (5, 9));
        // Spans count characters, not bytes.
        let t = tokens("Amélie (2001)");
        assert_eq!((t[0].start, t[0].end, t[1].start), (0, 6, 8));
        assert_eq!(
            query_words("empire strik"),
            (vec!["empire".into(), "strik".into()], true)
        );
        assert_eq!(query_words("empire "), (vec!["empire".into()], false));
    }
}
