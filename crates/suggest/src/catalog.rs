//! The entries of a catalog: every existing item by title, every category and creator, every
//! curated list by title, each scored by the decayed popularity of what it stands for.

use crate::index::{Entry, Kind};
use cascade_features::Inner;
use rayon::prelude::*;

/// The most popular item's decayed popularity (log space): scores are relative to it.
pub fn top_popularity(g: &Inner) -> f64 {
    g.popularity
        .par_iter()
        .copied()
        .filter(|p| p.is_finite())
        .reduce(|| f64::NEG_INFINITY, f64::max)
}

/// Item `i`'s score against `top` (see [`top_popularity`]): in `0..=1` while `top` holds.
pub fn item_score(g: &Inner, i: usize, top: f64) -> f32 {
    match g.popularity.get(i) {
        Some(&p) if p.is_finite() && top.is_finite() => ((p - top).exp() as f32).min(1.0),
        _ => 0.0,
    }
}

/// Item `i`'s entry, if it exists and has a title.
pub fn item_entry(g: &Inner, i: usize, top: f64) -> Option<Entry> {
    let rec = g.item_recs.get(i)?.as_ref()?;
    (!rec.title.is_empty()).then(|| {
        Entry::new(
            Kind::Item,
            g.item_id(i as u32),
            &rec.title,
            i as u32,
            item_score(g, i, top),
        )
    })
}

/// Entries for the state's catalog, and the `top` their scores are relative to. A category,
/// creator or list scores as its most popular item. Items are normalized in parallel (at 10M
/// titles that was most of the build).
pub fn entries(g: &Inner) -> (Vec<Entry>, f64) {
    let top = top_popularity(g);
    let mut out: Vec<Entry> = (0..g.item_recs.len())
        .into_par_iter()
        .filter_map(|i| item_entry(g, i, top))
        .collect();
    let mut cats = vec![0f32; g.categories.len()];
    let mut creators = vec![0f32; g.creators.len()];
    for (i, rec) in g.item_recs.iter().enumerate() {
        let Some(rec) = rec else { continue };
        let s = item_score(g, i, top);
        for &c in rec.categories.iter() {
            if let Some(v) = cats.get_mut(c as usize) {
                *v = v.max(s);
            }
        }
        if let Some(v) = creators.get_mut(rec.creator as usize) {
            *v = v.max(s);
        }
    }
    for (c, &s) in cats.iter().enumerate() {
        if let Some(name) = g.categories.name(c as u32) {
            out.push(Entry::new(Kind::Category, name, name, c as u32, s));
        }
    }
    for (k, &s) in creators.iter().enumerate() {
        if let Some(name) = g.creators.name(k as u32) {
            out.push(Entry::new(Kind::Creator, name, name, k as u32, s));
        }
    }
    for list in g.editorial.values() {
        let text = if list.title.is_empty() {
            &list.id
        } else {
            &list.title
        };
        let s = list
            .items
            .iter()
            .filter_map(|id| g.items.get(id))
            .map(|i| item_score(g, i as usize, top))
            .fold(0f32, f32::max);
        out.push(Entry::new(Kind::Collection, &list.id, text, u32::MAX, s));
    }
    (out, top)
}
