//! The heavy ranker: the trained gradient-boosted ensemble of the current model set, scoring
//! the pre-ranker's survivors from the hydrated feature block in one batched pass.

use arc_swap::ArcSwapOption;
use cascade_gbdt::{Bound, Model};
use cascade_pipeline::{Candidates, ComponentError, RequestCtx, Scorer};
use std::sync::Arc;

thread_local! {
    /// Row indices of the candidates being scored, reused across requests on a pool thread.
    static ROWS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A model's feature columns resolved against this surface's schema, kept until the model
/// changes so that steady-state requests allocate nothing.
#[derive(Debug)]
struct Binding {
    model: Arc<Model>,
    bound: Bound,
}

/// Scores with `ctx.models.ranker`. Without a ranker (not trained yet, or refused) it fails,
/// which the executor reports in `degraded` while the pre-ranker's order stands.
#[derive(Debug, Default)]
pub struct GbdtScorer {
    bound: ArcSwapOption<Binding>,
}

impl GbdtScorer {
    fn binding(
        &self,
        model: &Arc<Model>,
        cands: &Candidates,
    ) -> Result<Arc<Binding>, ComponentError> {
        if let Some(b) = self.bound.load_full()
            && Arc::ptr_eq(&b.model, model)
        {
            return Ok(b);
        }
        let names: Vec<&str> = cands.features.schema.names().collect();
        let bound = model
            .bind_to(&names)
            .map_err(|e| ComponentError::Failed(e.to_string()))?;
        let b = Arc::new(Binding {
            model: model.clone(),
            bound,
        });
        self.bound.store(Some(b.clone()));
        Ok(b)
    }
}

impl Scorer for GbdtScorer {
    fn name(&self) -> &str {
        "gbdt"
    }

    fn dependency(&self) -> Option<cascade_pipeline::Dependency> {
        Some(cascade_pipeline::Dependency::Ranker)
    }

    fn score(
        &self,
        ctx: &RequestCtx,
        cands: &Candidates,
        scores: &mut [f32],
    ) -> Result<(), ComponentError> {
        let model = ctx
            .models
            .ranker
            .as_ref()
            .ok_or_else(|| ComponentError::Unavailable("ranker".into()))?;
        let b = self.binding(model, cands)?;
        scores.fill(0.0);
        ROWS.with_borrow_mut(|rows| {
            rows.clear();
            rows.extend(cands.items.iter().map(|c| c.row));
            b.bound.predict_rows(&cands.features.values, rows, scores);
        });
        Ok(())
    }
}
