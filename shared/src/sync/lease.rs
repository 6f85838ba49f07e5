//! One entity lease: a short claim so two workers never sync the same entity at once (FIFO groups
//! already serialise one queue; this also covers an inbound route, another stage or a replay
//! racing a live message). Taking it waits a bounded time for the holder, then gives up with a
//! transient error (the queue retries; an inbound route answers 503 with `Retry-After`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::keys::StateKey;
use crate::error::SyncError;
use crate::store::{Claim, ClaimStore, StoreWrite};

/// How long a lease lives when its holder dies without releasing it.
pub const LEASE: Duration = Duration::from_secs(60);
/// How long a worker waits for a lease held by someone else (an inbound write recording its echo
/// fingerprint holds it for well under this) before retrying through the queue.
pub const LEASE_WAIT: Duration = Duration::from_secs(3);
/// What a caller that gave up waiting is told to wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

pub struct EntityLease {
    claims: Arc<dyn ClaimStore>,
    key: String,
}

impl EntityLease {
    /// The claim key of a lease on `scope`. A lease never completes: `Claim::Completed` on it can
    /// only be a record of an older layout, and is taken over.
    fn claim_key(scope: &StateKey) -> String {
        format!("lock#{scope}")
    }

    /// Takes the lease on `scope`, waiting up to `wait` while someone else holds it.
    pub async fn acquire(
        claims: &Arc<dyn ClaimStore>,
        scope: &StateKey,
        wait: Duration,
    ) -> Result<Self, SyncError> {
        let key = Self::claim_key(scope);
        let secs = LEASE.as_secs().max(1);
        let deadline = Instant::now() + wait;
        loop {
            match claims.claim(&key, secs, secs).await? {
                Claim::Acquired | Claim::Completed { .. } => {
                    return Ok(Self {
                        claims: claims.clone(),
                        key,
                    });
                }
                Claim::InProgress if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Claim::InProgress => {
                    return Err(SyncError::transient_after(
                        format!("{scope} is being synced by another worker"),
                        Some(RETRY_AFTER),
                    ));
                }
            }
        }
    }

    /// The write that gives the lease up, for a commit that saves what was done under it in the
    /// same request ([`crate::store::CommitStore`]); if that commit fails, [`Self::release`].
    pub fn release_write(&self) -> StoreWrite {
        StoreWrite::Release {
            key: self.key.clone(),
        }
    }

    /// Gives the lease up; if that fails it expires with its lease time.
    pub async fn release(self) {
        if let Err(e) = self.claims.release(&self.key).await {
            tracing::warn!(error = %e, lock = %self.key, "lock not released; it expires with its lease");
        }
    }
}
