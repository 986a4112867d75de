//! The `impressions` side effect: every served list is logged, item by item, as impression
//! events through a non-blocking queue that the runtime provides.

use cascade_core::{Event, EventKind, Mutation, Target};
use cascade_pipeline::{ComponentError, Dependency, Fault, PipelineResult, RequestCtx, SideEffect};
use std::sync::Arc;

/// Where side effects enqueue mutations without waiting: the runtime's sink (the local log's
/// group-commit queue, or the event bus). `Err` rather than block when it is full.
pub trait MutationQueue: Send + Sync + std::fmt::Debug {
    fn enqueue(&self, m: Mutation) -> Result<(), String>;
}

/// Logs one `impression` event per returned item, attributed by request id and position,
/// without waiting: a full queue drops impressions (counted) rather than slow the response.
pub struct ImpressionLogger {
    pub queue: Arc<dyn MutationQueue>,
}

impl SideEffect for ImpressionLogger {
    fn name(&self) -> &str {
        "impressions"
    }

    fn run(&self, ctx: &RequestCtx, result: &PipelineResult) -> Result<(), ComponentError> {
        if result.items.is_empty() {
            return Ok(());
        }
        if ctx.faults.get(Dependency::Bus) == Some(Fault::Error) {
            let n = result.items.len() as u64;
            metrics::counter!("cascade_impressions_dropped_total").increment(n);
            return Err(ComponentError::Unavailable("bus".into()));
        }
        let q = &ctx.query;
        let events: Vec<Event> = {
            let g = ctx.state.read();
            result
                .items
                .iter()
                .enumerate()
                .map(|(pos, c)| Event {
                    kind: EventKind::Impression,
                    user_id: q.user_id.clone(),
                    target: Target::Item(g.item_id(c.item).to_string()),
                    value: 1.0,
                    fraction: None,
                    ts: q.now,
                    request_id: Some(q.request_id.clone()),
                    surface: Some(q.surface.clone()),
                    position: Some(pos as u32),
                    propensity: Some(c.propensity),
                    experiment: q.experiment.clone(),
                })
                .collect()
        };
        let n = events.len() as u64;
        if self.queue.enqueue(Mutation::Events(events)).is_err() {
            metrics::counter!("cascade_impressions_dropped_total").increment(n);
            return Err(ComponentError::Unavailable("log queue full".into()));
        }
        Ok(())
    }
}

/// What watches served lists off the request path (drift monitoring): it must return at
/// once, copying what it needs into its own bounded queue.
pub trait ServedObserver: Send + Sync + std::fmt::Debug {
    fn observe(&self, ctx: &RequestCtx, result: &PipelineResult);
}

/// Hands every served list to the observer (the `drift` side effect).
pub struct ServedTap {
    pub observer: Arc<dyn ServedObserver>,
}

impl SideEffect for ServedTap {
    fn name(&self) -> &str {
        "drift"
    }

    fn run(&self, ctx: &RequestCtx, result: &PipelineResult) -> Result<(), ComponentError> {
        self.observer.observe(ctx, result);
        Ok(())
    }
}
