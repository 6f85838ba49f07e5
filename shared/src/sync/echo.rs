//! One echo guard for both directions. Every write we make into either system is recorded before
//! it is made, as content fingerprints of each form the other side may send back (with a TTL,
//! `ECHO_TTL_SECS`), plus a marker of when we last wrote that target in that direction. Content
//! arriving from the other side is our own write echoing when one of its fingerprints is recorded
//! *and* no write in the opposite direction came after ours: once the other side has written
//! since, a value equal to our old write is a real change (A -> B -> A made by people).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::keys::{EchoTarget, StateKey};
use crate::store::{EchoStore, StoreError, StoreWrite, SyncState, SyncStateStore};
use crate::timefmt::{now_millis, now_rfc3339};

/// Which way a write we made went: into Enerflo (an inbound route, for the CRM) or into the CRM
/// (a stage consumer, for Enerflo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    ToEnerflo,
    ToCrm,
}

impl Direction {
    pub fn opposite(self) -> Self {
        match self {
            Self::ToEnerflo => Self::ToCrm,
            Self::ToCrm => Self::ToEnerflo,
        }
    }
}

#[derive(Clone)]
pub struct EchoGuard {
    echo: Arc<dyn EchoStore>,
    state: Arc<dyn SyncStateStore>,
    ttl: Duration,
}

impl EchoGuard {
    pub fn new(echo: Arc<dyn EchoStore>, state: Arc<dyn SyncStateStore>, ttl: Duration) -> Self {
        Self { echo, state, ttl }
    }

    /// Records, before we write `target` in `direction`, the fingerprints of every form the other
    /// side may send it back in, and the time of the write. Recorded first: the other side's
    /// automation may send it back before it answers us; a write that then fails leaves
    /// fingerprints of content the other side did not get, which a later real change overrides.
    pub async fn record(
        &self,
        direction: Direction,
        target: &EchoTarget,
        fingerprints: &[String],
    ) -> Result<(), StoreError> {
        for write in self.record_writes(direction, target, fingerprints) {
            match write {
                StoreWrite::Echo {
                    target,
                    hash,
                    ttl_secs,
                } => self.echo.record_write(&target, &hash, ttl_secs).await?,
                StoreWrite::State { scope, state } => self.state.put_state(&scope, &state).await?,
                StoreWrite::Release { .. } => {}
            }
        }
        Ok(())
    }

    /// What [`record`](Self::record) writes, in its order (the fingerprints, then the time of
    /// the write), for a caller that commits them in one request with other writes.
    pub fn record_writes(
        &self,
        direction: Direction,
        target: &EchoTarget,
        fingerprints: &[String],
    ) -> Vec<StoreWrite> {
        let key = target.written(direction);
        let mut writes: Vec<StoreWrite> = fingerprints
            .iter()
            .map(|hash| StoreWrite::Echo {
                target: key.clone(),
                hash: hash.clone(),
                ttl_secs: self.ttl.as_secs(),
            })
            .collect();
        writes.push(StoreWrite::State {
            scope: StateKey::LastWrite(direction, target.clone()).scope(),
            state: SyncState {
                hash: fingerprints.first().cloned().unwrap_or_default(),
                data: json!({"at_ms": now_millis()}),
                updated_at: now_rfc3339(),
                seq: 0,
            },
        });
        writes
    }

    /// Adds fingerprints to a write already marked by [`record`](Self::record) (a CRM id learnt
    /// from the answer, say).
    pub async fn record_fingerprints(
        &self,
        direction: Direction,
        target: &EchoTarget,
        fingerprints: &[String],
    ) -> Result<(), StoreError> {
        let key = target.written(direction);
        for fingerprint in fingerprints {
            self.echo
                .record_write(&key, fingerprint, self.ttl.as_secs())
                .await?;
        }
        Ok(())
    }

    /// Whether content with any of `fingerprints`, arriving for `target`, is our own write in
    /// `direction` echoing back.
    pub async fn is_ours(
        &self,
        direction: Direction,
        target: &EchoTarget,
        fingerprints: &[String],
    ) -> Result<bool, StoreError> {
        if !self.fingerprinted(direction, target, fingerprints).await? {
            return Ok(false);
        }
        Ok(!after(
            self.last_write(direction.opposite(), target).await?,
            self.last_write(direction, target).await?,
        ))
    }

    /// Whether any of `fingerprints` was recorded for a write of ours in `direction` within its
    /// TTL, whatever happened since.
    pub async fn fingerprinted(
        &self,
        direction: Direction,
        target: &EchoTarget,
        fingerprints: &[String],
    ) -> Result<bool, StoreError> {
        let key = target.written(direction);
        for fingerprint in fingerprints {
            if self.echo.is_echo(&key, fingerprint).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// When we last wrote `target` in `direction` (Unix ms), if recorded.
    pub async fn last_write(
        &self,
        direction: Direction,
        target: &EchoTarget,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .state
            .get_state(&StateKey::LastWrite(direction, target.clone()).scope())
            .await?
            .and_then(|s| s.data.get("at_ms").and_then(Value::as_i64)))
    }
}

/// Whether `a` happened after `b` (both known).
fn after(a: Option<i64>, b: Option<i64>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a > b)
}
