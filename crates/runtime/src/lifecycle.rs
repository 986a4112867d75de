//! Model lifecycle: the registry of trained bundles (`DATA_DIR/models/<version>`), validated
//! activation with an atomic swap, and rollback along the activation history.

use crate::engine::Engine;
use crate::error::RuntimeError;
use cascade_index::bundle::{Bundle, Manifest, models_dir};
use cascade_index::{ModelStore, Models};
use cascade_pipeline::{Dependency, FeatureBlock, Query};
use cascade_training::models_from_bundle_with;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// One bundle of the registry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub version: String,
    /// Serving now.
    pub active: bool,
    pub created_at: Option<String>,
    /// The training data range and the offline metrics, as the manifest records them.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<serde_json::Value>,
    pub has_ranker: bool,
    /// Why the manifest could not be read, if it could not.
    pub error: Option<String>,
}

/// What an activation did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Activation {
    pub active: String,
    pub previous: String,
    /// Load, validation and swap, in milliseconds.
    pub took_ms: f64,
    /// Probe rows the ranker scored during validation.
    pub probe_rows: usize,
}

/// Resets the engine's "activation in progress" flag when dropped.
struct Activating<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Activating<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Engine {
    /// Every bundle in the data dir, oldest first, with the active one marked.
    pub fn list_models(&self) -> Result<Vec<ModelInfo>, RuntimeError> {
        let active = self.env.models.load().version.clone();
        let dir = models_dir(&self.config.data_dir);
        let list = Bundle::list(&dir).map_err(|e| RuntimeError::Io(e.to_string()))?;
        Ok(list
            .into_iter()
            .map(|(version, m)| info(version.clone(), version == active, m))
            .collect())
    }

    /// Loads bundle `version` in the background, validates it (checksums, the ranker's
    /// features against every surface's schema, finite scores on a probe of real requests,
    /// finite vectors) and swaps it in atomically; in-flight requests finish on the models
    /// they started with. A bundle that fails is refused and the active one stays.
    pub async fn activate(&self, version: &str) -> Result<Activation, RuntimeError> {
        if self.activating.swap(true, Ordering::SeqCst) {
            return Err(RuntimeError::Busy(
                "another activation is in progress".into(),
            ));
        }
        let _guard = Activating(&self.activating);
        let started = Instant::now();
        let dir = models_dir(&self.config.data_dir);
        if version.is_empty() || version.contains(['/', '\\']) || version.starts_with('.') {
            return Err(RuntimeError::UnknownModel(version.to_string()));
        }
        let path = dir.join(version);
        if !path.is_dir() {
            return Err(RuntimeError::UnknownModel(version.to_string()));
        }
        let previous = self.env.models.load();
        let (state, config) = (self.env.state.clone(), self.config.clone());
        let popular = previous.popular.clone();
        // On its own thread at the lowest priority: on a busy machine the requests being
        // served keep the cores, and the load takes longer instead.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("cascade-activate".into())
            .spawn(move || {
                if let Err(e) = thread_priority::ThreadPriority::Min.set_for_current() {
                    tracing::debug!(error = ?e, "could not lower the loader's priority");
                }
                let load = || {
                    let b = Bundle::load(&path, config.models.hnsw).map_err(|e| e.to_string())?;
                    Ok::<Models, String>(models_from_bundle_with(
                        &state,
                        &config.models,
                        b,
                        Some(popular),
                        true,
                    ))
                };
                let _ = tx.send(load());
            })
            .map_err(|e| RuntimeError::Io(format!("loader thread: {e}")))?;
        let loaded = rx
            .await
            .map_err(|_| RuntimeError::Io("bundle loader thread died".into()))?;
        let restore_fold = || {
            let n = previous.embeddings.as_ref().map(|e| e.n_items() as u32);
            self.env.state.start_fold_log(n);
        };
        let models = match loaded {
            Ok(m) => m,
            Err(e) => {
                restore_fold();
                return Err(RuntimeError::ModelRefused(format!("{version}: {e}")));
            }
        };
        let probe_rows = match self.validate_models(&models).await {
            Ok(n) => n,
            Err(e) => {
                restore_fold();
                return Err(RuntimeError::ModelRefused(format!("{version}: {e}")));
            }
        };
        // Durable first, then visible: a restart serves what the registry says is active.
        let (d, v) = (dir.clone(), version.to_string());
        tokio::task::spawn_blocking(move || Bundle::make_current(&d, &v))
            .await
            .map_err(|e| RuntimeError::Io(format!("registry write panicked: {e}")))?
            .map_err(|e| RuntimeError::Io(e.to_string()))?;
        self.env.models.replace(models);
        if let Some(d) = &self.drift {
            d.activate(version, cascade_training::drift::read(&dir.join(version)));
        }
        metrics::counter!("cascade_model_activations_total").increment(1);
        tracing::info!(version, previous = %previous.version, "model bundle activated");
        Ok(Activation {
            active: version.to_string(),
            previous: previous.version.clone(),
            took_ms: started.elapsed().as_secs_f64() * 1e3,
            probe_rows,
        })
    }

    /// Activates the bundle that was active before the current one.
    pub async fn rollback(&self) -> Result<Activation, RuntimeError> {
        let active = self.env.models.load().version.clone();
        let dir = models_dir(&self.config.data_dir);
        let target = Bundle::rollback_target(&dir, &active)
            .map_err(|e| RuntimeError::Io(e.to_string()))?
            .ok_or(RuntimeError::NoRollback(active))?;
        self.activate(&target).await
    }

    /// Checks a model set before it serves; returns how many probe rows the ranker scored.
    async fn validate_models(&self, models: &Models) -> Result<usize, String> {
        if let Some(e) = &models.embeddings
            && (e.items.iter().any(|v| !v.is_finite()) || e.users.iter().any(|v| !v.is_finite()))
        {
            return Err("embeddings hold non-finite values".into());
        }
        let Some(ranker) = models.ranker.clone() else {
            return Ok(0);
        };
        ranker.validate().map_err(|e| format!("ranker: {e}"))?;
        let probe_env = self
            .env
            .with_models(Arc::new(ModelStore::new(models.clone_shallow())));
        // A few real users (the first ones) and a cold one.
        let users: Vec<String> = {
            let g = self.env.state.read();
            (0..g.users.len().min(8))
                .filter_map(|u| g.users.name(u as u32).map(str::to_string))
                .chain(std::iter::once("probe-cold-user".to_string()))
                .collect()
        };
        let mut rows = 0;
        for (name, p) in &self.pipelines {
            if !p
                .scorers
                .iter()
                .any(|s| s.dependency() == Some(Dependency::Ranker))
            {
                continue;
            }
            let names: Vec<&str> = p.schema.names().collect();
            let bound = ranker
                .bind_to(&names)
                .map_err(|e| format!("ranker does not fit surface {name}: {e}"))?;
            // The declared defaults (what a request with the feature store down scores)...
            let defaults = FeatureBlock::new(p.schema.clone(), 1);
            let mut out = vec![0f32; 1];
            bound.predict_rows(&defaults.values, &[0], &mut out);
            // ...and real candidates of real requests.
            for u in &users {
                let q = Query::new(name, u, 10, cascade_core::time::now_millis());
                let Some((_, cands)) = p.training_candidates(&probe_env, q).await else {
                    continue;
                };
                let r: Vec<u32> = cands.items.iter().map(|c| c.row).collect();
                let mut o = vec![0f32; r.len()];
                bound.predict_rows(&cands.features.values, &r, &mut o);
                out.extend(o);
            }
            if let Some(bad) = out.iter().find(|v| !v.is_finite()) {
                return Err(format!(
                    "ranker scores {bad} on the probe of surface {name}"
                ));
            }
            rows += out.len();
        }
        Ok(rows)
    }
}

fn info(version: String, active: bool, m: Result<Manifest, String>) -> ModelInfo {
    match m {
        Ok(m) => ModelInfo {
            version,
            active,
            created_at: Some(m.created_at.clone()),
            data: serde_json::to_value(&m.data).ok(),
            metrics: serde_json::to_value(&m.metrics).ok(),
            has_ranker: m.files.iter().any(|f| f.name == "ranker.json"),
            error: None,
        },
        Err(e) => ModelInfo {
            version,
            active,
            created_at: None,
            data: None,
            metrics: None,
            has_ranker: false,
            error: Some(e),
        },
    }
}
