//! A short lease on an entity, so two workers never sync the same entity at once (FIFO groups
//! already serialise a queue; this also covers two stages or a replay racing a live message).

use std::sync::Arc;
use std::time::Duration;

use crate::error::SyncError;
use crate::store::{Claim, ClaimStore};

pub struct EntityLock {
    claims: Arc<dyn ClaimStore>,
    key: String,
}

impl EntityLock {
    pub async fn acquire(
        claims: &Arc<dyn ClaimStore>,
        scope: &str,
        lease: Duration,
    ) -> Result<Self, SyncError> {
        let key = format!("lock#{scope}");
        match claims
            .claim(&key, lease.as_secs().max(1), lease.as_secs().max(1))
            .await?
        {
            Claim::Acquired | Claim::Completed { .. } => Ok(Self {
                claims: claims.clone(),
                key,
            }),
            Claim::InProgress => Err(SyncError::transient_after(
                format!("{scope} is being synced by another worker"),
                Some(Duration::from_secs(5)),
            )),
        }
    }

    pub async fn release(self) {
        if let Err(e) = self.claims.release(&self.key).await {
            tracing::warn!(error = %e, lock = %self.key, "lock not released; it expires with its lease");
        }
    }
}
