//! The online feature store seam: where a request reads its user's features and where the
//! data loop writes them. Embedded (the in-process [`State`]) or remote (Redis, in
//! `cascade-scaleout`).

use crate::state::{State, UserState};
use cascade_core::{Event, Mutation};
use std::sync::Arc;

/// A feature store failure. Always a server-side fault: the request falls back to the
/// replica's own view and names the store in `degraded`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("feature store unavailable: {0}")]
    Unavailable(String),
    #[error("feature store returned malformed data: {0}")]
    Malformed(String),
}

/// Per-user online features: session state, seen set, hidden items and creators, follows,
/// impressions for caps.
///
/// Writes are idempotent per `(seq, position in batch)`, so an at-least-once bus may
/// redeliver a batch and concurrent updaters may apply batches in any order: the state after
/// applying a set of batches does not depend on order or repetition (histories are ordered
/// by event time, first-seen times are minima, sets are sets).
#[async_trait::async_trait]
pub trait FeatureStore: Send + Sync + std::fmt::Debug {
    /// `embedded` or `redis`: named in `degraded` when the store fails.
    fn backend(&self) -> &'static str;
    /// The user's features in this replica's dense ids (items and creators this replica does
    /// not know yet are left out); `None` for a user the store has never seen.
    async fn user(&self, user_id: &str) -> Result<Option<UserState>, StoreError>;
    /// Applies one committed batch of events; `seq` is its position in the bus or log.
    async fn apply(&self, seq: u64, events: &[Event]) -> Result<(), StoreError>;
    /// Applies an erasure or a feedback deletion ([`Mutation::EraseUser`],
    /// [`Mutation::DeleteFeedback`]) at once; any other mutation is not the store's. `seq` is
    /// its position in the bus or log: a batch from before it must not undo it.
    async fn forget(&self, seq: u64, m: &Mutation) -> Result<(), StoreError>;
}

/// The in-process store: the [`State`] itself. Requests normally read it under the state's
/// read lock without copying; this impl is the same contract for tools and tests (a remote
/// store must answer exactly what this one answers for the same events).
#[derive(Debug, Clone)]
pub struct EmbeddedStore(pub Arc<State>);

#[async_trait::async_trait]
impl FeatureStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn user(&self, user_id: &str) -> Result<Option<UserState>, StoreError> {
        let g = self.0.read();
        Ok(g.users.get(user_id).and_then(|u| g.user(u)).cloned())
    }

    async fn apply(&self, _seq: u64, events: &[Event]) -> Result<(), StoreError> {
        self.0.apply(&Mutation::Events(events.to_vec()));
        Ok(())
    }

    async fn forget(&self, _seq: u64, m: &Mutation) -> Result<(), StoreError> {
        if matches!(
            m,
            Mutation::EraseUser { .. } | Mutation::DeleteFeedback { .. }
        ) {
            self.0.apply(m);
        }
        Ok(())
    }
}
