//! The models a state serves: rebuilt from it live (popular lists, co-visitation, and on
//! retraining the embedding artifacts), or loaded from a trained bundle onto it.

use crate::artifacts::{self, TrainOptions, build_ann};
use crate::config::{ModelsSection, TrainConfig};
use cascade_core::Idx;
use cascade_features::State;
use cascade_features::state::ItemHot;
use cascade_index::{Bundle, CoVisitation, Models, PopularLists};
use std::sync::Arc;
use std::time::Instant;

/// Builds the current model set from the state: popular lists and co-visitation always, and
/// when `train_embeddings` also embeddings, the HNSW index and embedding neighbours (through
/// [`artifacts::train`], the code `cascade train` runs); otherwise the `previous` ones stay.
pub fn build_models(
    state: &State,
    config: &dyn TrainConfig,
    train_embeddings: bool,
    previous: Option<&Models>,
) -> Models {
    let m = config.models();
    if train_embeddings && m.embeddings {
        let t = Instant::now();
        let opts = TrainOptions { holdout_users: 0 };
        let bundle = artifacts::train(state, config, &opts, &|_, _, _| {});
        tracing::info!(
            secs = t.elapsed().as_secs_f64(),
            als_secs = bundle.manifest.metrics.als_seconds,
            users = bundle.manifest.data.users,
            items = bundle.manifest.data.items,
            "trained models"
        );
        let mut models = models_from_bundle(state, m, bundle);
        // The ranker is trained from the log, not from this snapshot: keep the current one.
        models.ranker = previous.and_then(|p| p.ranker.clone());
        return models;
    }
    let (popular, seqs, n_items, generation) = {
        let g = state.read();
        let popular = PopularLists::build_live(&g, m.popular_size, m.popular_per_category);
        let seqs = CoVisitation::sequences(&g, m.covis.max_history);
        (popular, seqs, g.items.len(), g.generation)
    };
    // The heavy part runs without the lock.
    let covis = CoVisitation::build(&seqs, n_items, &m.covis);
    Models {
        version: previous.map_or_else(
            || format!("heuristic-v1.g{generation}"),
            |p| p.version.clone(),
        ),
        popular: Arc::new(popular),
        covis: Arc::new(covis),
        embeddings: previous.and_then(|p| p.embeddings.clone()),
        ann: previous.and_then(|p| p.ann.clone()),
        item_neighbors: previous
            .map(|p| p.item_neighbors.clone())
            .unwrap_or_default(),
        ranker: previous.and_then(|p| p.ranker.clone()),
    }
}

/// Serving models from a trained bundle. Artifacts are indexed by the dense ids of the state
/// they were trained on; when this state interned ids differently (another log), they are
/// remapped by id and the HNSW index rebuilt. Items newer than the bundle are folded in.
pub fn models_from_bundle(state: &State, models: &ModelsSection, b: Bundle) -> Models {
    models_from_bundle_with(state, models, b, None, true)
}

/// [`models_from_bundle`], reusing `popular` lists when given: they come from the live state,
/// not from the bundle, so an activation under load need not rebuild them. With `fold`, items
/// newer than the bundle are logged for fold-in into its index (the serving set only; an
/// experiment arm's pinned bundle does not fold).
pub fn models_from_bundle_with(
    state: &State,
    m: &ModelsSection,
    b: Bundle,
    popular: Option<Arc<PopularLists>>,
    fold: bool,
) -> Models {
    let (popular, item_map, user_map, live, n_items, n_users) = {
        let g = state.read();
        let popular = popular.unwrap_or_else(|| {
            Arc::new(PopularLists::build_live(
                &g,
                m.popular_size,
                m.popular_per_category,
            ))
        });
        let item_map: Vec<Option<Idx>> = b.item_ids.iter().map(|id| g.items.get(id)).collect();
        let user_map: Vec<Option<Idx>> = b.user_ids.iter().map(|id| g.users.get(id)).collect();
        let live: Vec<bool> = g
            .item_hot
            .iter()
            .map(|h| h.flags & ItemHot::EXISTS != 0)
            .collect();
        (
            popular,
            item_map,
            user_map,
            live,
            g.items.len(),
            g.users.len(),
        )
    };
    let identity = |map: &[Option<Idx>]| map.iter().enumerate().all(|(i, j)| *j == Some(i as Idx));
    let same_items = identity(&item_map);
    let Bundle {
        manifest,
        mut embeddings,
        mut covis,
        mut item_neighbors,
        mut ann,
        ranker,
        ..
    } = b;
    if !same_items || !identity(&user_map) {
        tracing::warn!(
            version = %manifest.version,
            "bundle ids differ from this data dir's; remapping by id"
        );
        let d = embeddings.dim;
        let remap = |src: &[f32], map: &[Option<Idx>], n: usize| {
            let mut out = vec![0f32; n * d];
            for (i, j) in map.iter().enumerate() {
                if let (Some(j), Some(v)) = (j, src.get(i * d..(i + 1) * d)) {
                    out[*j as usize * d..(*j as usize + 1) * d].copy_from_slice(v);
                }
            }
            out
        };
        embeddings.items = remap(&embeddings.items, &item_map, n_items);
        embeddings.users = remap(&embeddings.users, &user_map, n_users);
        let mut back: Vec<Option<Idx>> = vec![None; n_items];
        for (i, j) in item_map.iter().enumerate() {
            if let Some(j) = j {
                back[*j as usize] = Some(i as Idx);
            }
        }
        let remap_lists = |l: &CoVisitation| {
            CoVisitation::from_rows(
                back.iter()
                    .map(|i| {
                        i.map(|i| {
                            let (nb, ws) = l.neighbors(i);
                            nb.iter()
                                .zip(ws)
                                .filter_map(|(&b, &w)| item_map.get(b as usize)?.map(|b| (b, w)))
                                .collect()
                        })
                        .unwrap_or_default()
                    })
                    .collect(),
            )
        };
        covis = remap_lists(&covis);
        item_neighbors = remap_lists(&item_neighbors);
        if !same_items {
            ann = None;
        }
    }
    let ann = match ann {
        Some(a) => Some(Arc::new(a)),
        None if m.ann => build_ann(&embeddings, &live, &m.hnsw),
        None => None,
    };
    if fold {
        state.start_fold_log(Some(embeddings.n_items() as Idx));
    }
    Models {
        version: manifest.version,
        popular,
        covis: Arc::new(covis),
        embeddings: Some(Arc::new(embeddings)),
        ann,
        item_neighbors: Arc::new(item_neighbors),
        ranker: ranker.map(Arc::new),
    }
}
