//! The entries of a catalog: every existing item by title, every category and creator, every
//! curated list by title, each scored by the decayed popularity of what it stands for.

use crate::index::{Entry, Kind};
use cascade_features::Inner;

/// Entries for the state's catalog. Scores are decayed popularity relative to the most
/// popular item (0..=1); a category, creator or list scores as its most popular item.
pub fn entries(g: &Inner) -> Vec<Entry> {
    let top = g
        .popularity
        .iter()
        .copied()
        .filter(|p| p.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let pop = |i: usize| -> f32 {
        match g.popularity.get(i) {
            Some(&p) if p.is_finite() && top.is_finite() => (p - top).exp() as f32,
            _ => 0.0,
        }
    };
    let mut out = Vec::new();
    let mut cats = vec![0f32; g.categories.len()];
    let mut creators = vec![0f32; g.creators.len()];
    for (i, rec) in g.item_recs.iter().enumerate() {
        let Some(rec) = rec else { continue };
        let s = pop(i);
        for &c in rec.categories.iter() {
            if let Some(v) = cats.get_mut(c as usize) {
                *v = v.max(s);
            }
        }
        if let Some(v) = creators.get_mut(rec.creator as usize) {
            *v = v.max(s);
        }
        if !rec.title.is_empty() {
            out.push(Entry::new(
                Kind::Item,
                g.item_id(i as u32),
                &rec.title,
                i as u32,
                s,
            ));
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
            .map(|i| pop(i as usize))
            .fold(0f32, f32::max);
        out.push(Entry::new(Kind::Collection, &list.id, text, u32::MAX, s));
    }
    out
}
