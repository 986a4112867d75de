//! Suggestions over a real catalog: MovieLens 1M's titles and genres (when
//! `CASCADE_TEST_MOVIELENS` names the directory `get-movielens` wrote; `.ci/run` sets it),
//! held to the brute-force reference on 1,000 random queries.

use cascade_suggest::{Class, Entry, Kind, SuggestIndex, brute_force};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// The catalog as entries: titles scored by their number of ratings, genres by their best
/// title; `None` when the data set is not configured.
fn movielens() -> Option<Vec<Entry>> {
    let Ok(dir) = std::env::var("CASCADE_TEST_MOVIELENS") else {
        eprintln!("CASCADE_TEST_MOVIELENS not set: skipping the MovieLens suggestion tests");
        return None;
    };
    let dir = std::path::Path::new(&dir);
    let items = std::fs::read_to_string(dir.join("items.csv")).expect("items.csv");
    let ratings = std::fs::read_to_string(dir.join("ratings.csv")).expect("ratings.csv");
    let mut count: BTreeMap<&str, u32> = BTreeMap::new();
    for line in ratings.lines().skip(1) {
        if let Some(item) = line.split(',').nth(1) {
            *count.entry(item).or_default() += 1;
        }
    }
    let top = count.values().copied().max().unwrap_or(1) as f32;
    let mut genres: BTreeMap<String, f32> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, line) in items.lines().skip(1).enumerate() {
        // `id,title,genres`; a title may hold commas (then it is quoted).
        let (id, rest) = line.split_once(',').expect("id");
        let (title, g) = rest.rsplit_once(',').expect("genres");
        let title = title.trim_matches('"');
        let score = count.get(id).copied().unwrap_or(0) as f32 / top;
        for genre in g.split('|') {
            let s = genres.entry(genre.to_string()).or_default();
            *s = s.max(score);
        }
        out.push(Entry::new(Kind::Item, id, title, i as u32, score));
    }
    for (k, (g, s)) in genres.iter().enumerate() {
        out.push(Entry::new(Kind::Category, g, g, k as u32, *s));
    }
    Some(out)
}

fn texts(index: &SuggestIndex, q: &str, n: usize, kinds: &[Kind]) -> Vec<String> {
    index
        .search(q, n, kinds, 0.0, &|_| Some(0.0))
        .into_iter()
        .map(|h| index.entries()[h.entry as usize].text.clone())
        .collect()
}

#[test]
fn words_inside_titles_typos_genres_and_several_words() {
    let Some(entries) = movielens() else { return };
    let index = SuggestIndex::build(entries);
    let all = Kind::ALL;
    // A word inside the title, the last one still being typed.
    let got = texts(&index, "empire strik", 5, &all);
    assert_eq!(
        got.first().map(String::as_str),
        Some("Star Wars: Episode V - The Empire Strikes Back (1980)"),
        "{got:?}"
    );
    // One typo from four characters, two from eight.
    let got = texts(&index, "termnator", 3, &all);
    assert!(got.iter().any(|t| t.starts_with("Terminator")), "{got:?}");
    let got = texts(&index, "godfahter", 3, &all);
    assert!(got.iter().any(|t| t.starts_with("Godfather")), "{got:?}");
    // Exact prefixes rank above fuzzy ones.
    let hits = index.search("matri", 10, &all, 0.0, &|_| Some(0.0));
    let classes: Vec<Class> = hits.iter().map(|h| h.class).collect();
    assert!(classes.windows(2).all(|w| w[0] >= w[1]), "{classes:?}");
    assert_eq!(hits.first().map(|h| h.class), Some(Class::Prefix));
    // Genres, with diacritics and case folded away.
    let got = texts(&index, "SCÍ", 3, &[Kind::Category]);
    assert_eq!(got, ["Sci-Fi"]);
    // Several words: every one must match.
    let got = texts(&index, "toy story 2", 3, &[Kind::Item]);
    assert_eq!(
        got.first().map(String::as_str),
        Some("Toy Story 2 (1999)"),
        "{got:?}"
    );
    assert!(texts(&index, "toy story zzzz", 3, &all).is_empty());
    // The highlight covers what matched: "emp" in "Empire", all of "strikes" is not typed.
    let hits = index.search("empire strik", 1, &all, 0.0, &|_| Some(0.0));
    let e = &index.entries()[hits[0].entry as usize];
    let spans: Vec<String> = hits[0]
        .highlight
        .iter()
        .map(|[a, b]| {
            e.text
                .chars()
                .skip(*a as usize)
                .take((b - a) as usize)
                .collect()
        })
        .collect();
    assert_eq!(spans, ["Empire", "Strik"]);
    // What the caller refuses is never suggested.
    let refused = index.entries()[hits[0].entry as usize].id.clone();
    let got = index.search("empire strik", 5, &all, 0.0, &|e| {
        (e.id != refused).then_some(0.0)
    });
    assert!(
        got.iter()
            .all(|h| index.entries()[h.entry as usize].id != refused)
    );
}

#[test]
fn the_index_answers_as_the_brute_force_reference_on_random_queries() {
    let Some(entries) = movielens() else { return };
    let index = SuggestIndex::build(entries.clone());
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let words: Vec<&str> = entries
        .iter()
        .flat_map(|e| e.tokens.iter().map(|t| t.norm.as_str()))
        .collect();
    // A boost that depends on the entry, as personalization would.
    let admit = |e: &Entry| (!e.target.is_multiple_of(7)).then_some((e.target % 3) as f32 * 0.1);
    let mut compared = 0;
    for _ in 0..1000 {
        let n_words = rng.random_range(1..=3);
        let mut q = String::new();
        for k in 0..n_words {
            let w: Vec<char> = words[rng.random_range(0..words.len())].chars().collect();
            let mut w: Vec<char> = if k + 1 == n_words {
                w[..rng.random_range(1..=w.len())].to_vec()
            } else {
                w
            };
            // Sometimes a typo: a substituted, dropped or doubled character.
            if w.len() >= 4 && rng.random_bool(0.3) {
                let at = rng.random_range(0..w.len());
                match rng.random_range(0..3) {
                    0 => w[at] = 'x',
                    1 => {
                        w.remove(at);
                    }
                    _ => w.insert(at, w[at]),
                }
            }
            if k > 0 {
                q.push(' ');
            }
            q.extend(w);
        }
        if rng.random_bool(0.2) {
            q.push(' ');
        }
        let got = index.search(&q, 10, &Kind::ALL, 0.2, &admit);
        let want = brute_force(index.entries(), &q, 10, &Kind::ALL, &admit);
        assert_eq!(got, want, "query {q:?}");
        // Without a boost the scan stops at a tie (scores repeat: many titles share a
        // rating count), and must still agree.
        let plain = |e: &Entry| (!e.target.is_multiple_of(7)).then_some(0.0);
        let got = index.search(&q, 10, &Kind::ALL, 0.0, &plain);
        let want = brute_force(index.entries(), &q, 10, &Kind::ALL, &plain);
        assert_eq!(got, want, "query {q:?} without a boost");
        compared += usize::from(!want.is_empty());
    }
    // The queries mostly find something, so the comparison is not between empty lists.
    assert!(compared > 500, "{compared} of 1000 queries found anything");
}
