//! The feature updater's store behind the injected `features` fault: a game day can make
//! this replica's writes fail or hang (the bus then redelivers them to another replica).

use cascade_core::Event;
use cascade_pipeline::Dependency;
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct FaultInjected {
    pub store: Arc<cascade_scaleout::RedisStore>,
    pub faults: Arc<cascade_pipeline::Faults>,
}

#[async_trait::async_trait]
impl cascade_features::FeatureStore for FaultInjected {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }

    async fn user(
        &self,
        user_id: &str,
    ) -> Result<Option<cascade_features::UserState>, cascade_features::StoreError> {
        self.store.user(user_id).await
    }

    async fn apply(&self, seq: u64, events: &[Event]) -> Result<(), cascade_features::StoreError> {
        self.faults
            .before_async(Dependency::Features)
            .await
            .map_err(|e| cascade_features::StoreError::Unavailable(e.to_string()))?;
        self.store.apply(seq, events).await
    }

    async fn forget(
        &self,
        seq: u64,
        m: &cascade_core::Mutation,
    ) -> Result<(), cascade_features::StoreError> {
        self.faults
            .before_async(Dependency::Features)
            .await
            .map_err(|e| cascade_features::StoreError::Unavailable(e.to_string()))?;
        cascade_features::FeatureStore::forget(&*self.store, seq, m).await
    }
}
