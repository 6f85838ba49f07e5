//! The one outbound stage pipeline. A stage ([`OutboundStage`]) says only what is particular to
//! it: how to read its typed event from the message, which entity the event is about, and what to
//! push given the last synced state. [`Pipeline`] owns the rest, the same for every stage: check
//! the event, take the entity lease, load the last state, build the [`CrmEvent`] (id,
//! `occurred_at`, `raw`), record our write for the echo guard before delivering, deliver, adopt
//! the CRM id the answer names, save the state, and return a typed [`Outcome`].
//!
//! Store round trips: what is written before the delivery (the echo fingerprints, the time of the
//! write, a stage's [`OutboundStage::before_delivery`] writes) is one commit, and what is written
//! after it (the synced state, a stage's [`OutboundStage::settle_writes`], the lease's release)
//! is another ([`Kit::commit`]: one `TransactWriteItems` on DynamoDB). The README's table
//! "DynamoDB calls per outbound event" counts them per stage; `tests/tests/e2e/ddb_calls.rs`
//! holds them to it.
//!
//! Event ids: `evt_` + a hash of the stage's state key, the change's sequence number in that
//! state and the content hash. A retry of one change (nothing saved yet) gets the same id; every
//! later change of the entity gets a new sequence number, so an id is never reused, even when an
//! entity returns to an earlier state (Active -> On Hold -> Active).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::canonical::{CrmEvent, CrmEventType, EnerfloRefs};
use crate::classify::Stage;
use crate::consumer::{Outcome, OutcomeKind, StageHandler};
use crate::crm::{CrmAck, CrmConnector};
use crate::error::SyncError;
use crate::hashing::sha256_hex;
use crate::queue::MessageMeta;
use crate::store::{
    ClaimStore, EchoStore, EntityKind, EntityLink, StoreError, StoreWrite, SyncState,
    SyncStateStore, XrefStore,
};
use crate::sync::{Direction, EchoGuard, EchoTarget, EntityLease, LEASE_WAIT, StateKey};
use crate::timefmt::now_rfc3339;

/// Why an event could not be read. Permanent: the same body will never read otherwise.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("{event} body unreadable: {detail}")]
    Unreadable { event: String, detail: String },
    #[error("the {stage} stage does not handle `{event}`")]
    WrongStage { stage: Stage, event: String },
    /// Ids or fields the event must carry; `what` names each and where we looked.
    #[error("{event}: {}", what.join("; "))]
    Missing { event: String, what: Vec<String> },
    #[error("{event}: {detail}")]
    Invalid { event: String, detail: String },
}

impl From<ReadError> for SyncError {
    fn from(e: ReadError) -> Self {
        SyncError::permanent(e.to_string())
    }
}

/// What every stage may use; built once per function.
#[derive(Clone)]
pub struct Kit {
    pub crm: Arc<dyn CrmConnector>,
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub echo: EchoGuard,
    /// `CRM_INCLUDE_RAW`: whether CRM events carry the Enerflo payload.
    pub include_raw: bool,
    /// The echo fingerprints' store, for [`Kit::commit`] writing them one by one.
    echo_store: Arc<dyn EchoStore>,
    /// Whether `state`, `claims` and `echo_store` are one store (one table), so that a
    /// [`Kit::commit`] may write all of them in one request.
    one_store: bool,
}

impl Kit {
    /// A kit on one store that implements every port (the embedded store, DynamoDB).
    pub fn on<S>(store: Arc<S>, crm: Arc<dyn CrmConnector>, include_raw: bool) -> Self
    where
        S: XrefStore + ClaimStore + SyncStateStore + EchoStore + 'static,
    {
        Self::new(
            crm,
            store.clone(),
            store.clone(),
            store.clone(),
            store,
            crate::config::DEFAULT_ECHO_TTL,
            include_raw,
        )
    }

    pub fn new(
        crm: Arc<dyn CrmConnector>,
        xref: Arc<dyn XrefStore>,
        claims: Arc<dyn ClaimStore>,
        state: Arc<dyn SyncStateStore>,
        echo: Arc<dyn EchoStore>,
        echo_ttl: std::time::Duration,
        include_raw: bool,
    ) -> Self {
        let one_store = same_object(&state, &claims) && same_object(&state, &echo);
        Self {
            crm,
            xref,
            claims,
            echo: EchoGuard::new(echo.clone(), state.clone(), echo_ttl),
            state,
            include_raw,
            echo_store: echo,
            one_store,
        }
    }

    /// Applies `writes`: in one request when the ports are one store that commits
    /// ([`SyncStateStore::committer`]) and there are several; else one by one, in order,
    /// through each port.
    pub async fn commit(&self, writes: Vec<StoreWrite>) -> Result<(), StoreError> {
        if self.one_store
            && writes.len() > 1
            && writes.len() <= crate::store::MAX_COMMIT_WRITES
            && let Some(committer) = self.state.committer()
        {
            return committer.commit(&writes).await;
        }
        for write in writes {
            match write {
                StoreWrite::State { scope, state } => self.state.put_state(&scope, &state).await?,
                StoreWrite::Echo {
                    target,
                    hash,
                    ttl_secs,
                } => {
                    self.echo_store
                        .record_write(&target, &hash, ttl_secs)
                        .await?
                }
                StoreWrite::Release { key } => self.claims.release(&key).await?,
            }
        }
        Ok(())
    }
}

/// Whether two ports are the same object (whatever trait each is seen through).
fn same_object<A: ?Sized, B: ?Sized>(a: &Arc<A>, b: &Arc<B>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// One queued message, as a stage sees it.
pub struct StageMessage<'a> {
    pub meta: &'a MessageMeta,
    pub body: &'a str,
    /// The real try this is (1 = first), not the queue's receive count.
    pub attempt: u32,
}

impl StageMessage<'_> {
    /// The body as an Enerflo envelope (v1 or v2), its event name defaulting to the message's.
    pub fn envelope(&self) -> Result<crate::enerflo::envelope::Envelope, ReadError> {
        crate::enerflo::envelope::Envelope::parse(self.body.as_bytes(), Some(&self.meta.event))
            .map_err(|e| ReadError::Unreadable {
                event: self.meta.event.clone(),
                detail: e.to_string(),
            })
    }
}

/// The entity an event is about: where its lease and its last synced state live.
pub struct EntityKeys {
    pub lease: StateKey,
    pub state: StateKey,
}

impl EntityKeys {
    /// The usual case: the lease is taken on the state key itself.
    pub fn same(key: StateKey) -> Self {
        Self {
            lease: key.clone(),
            state: key,
        }
    }
}

/// State to keep for an entity: the content hash compared next time, and what was synced.
#[derive(Clone, Debug)]
pub struct Remember {
    pub hash: String,
    pub data: Value,
}

/// What a stage decided for one event.
pub enum Decision {
    /// Nothing to push; `remember` is saved as the synced state when given (an echo whose
    /// content the CRM has now).
    Skip {
        outcome: OutcomeKind,
        detail: String,
        remember: Option<Remember>,
    },
    Push(Box<Push>),
}

impl Decision {
    pub fn skip(outcome: OutcomeKind, detail: impl Into<String>) -> Self {
        Self::Skip {
            outcome,
            detail: detail.into(),
            remember: None,
        }
    }
}

/// A CRM event to deliver, and what to keep once it is delivered.
pub struct Push {
    pub event_type: CrmEventType,
    pub source_event: String,
    /// When the change happened in Enerflo, if the event says; else when we received it.
    pub occurred_at: Option<String>,
    /// The cross-reference entity the CRM record belongs to (its CRM id is adopted there).
    pub kind: EntityKind,
    pub link: EntityLink,
    pub enerflo: EnerfloRefs,
    pub data: Value,
    /// The Enerflo payload; stages build it only when `kit.include_raw` (`CRM_INCLUDE_RAW`).
    pub raw: Option<Value>,
    /// Saved as the synced state after delivery; its hash is the change's content hash.
    pub remember: Remember,
    /// Fingerprints of what the CRM may send back, recorded before delivery.
    pub echo: Option<(EchoTarget, Vec<String>)>,
    /// For the outcome: who this is (`install 7`, `deal <uuid>`).
    pub subject: String,
}

/// One stage's particular logic.
#[async_trait]
pub trait OutboundStage: Send + Sync {
    type Event: Send + Sync;

    fn stage(&self) -> Stage;

    /// The typed event the message carries. The message's event name is already checked to be
    /// one of this stage's.
    fn read(&self, msg: &StageMessage<'_>) -> Result<Self::Event, ReadError>;

    /// Which entity the event is about. May complete the event first (hydrate it from Enerflo,
    /// link its ids): this runs before the lease is taken.
    async fn resolve(
        &self,
        kit: &Kit,
        msg: &StageMessage<'_>,
        event: &mut Self::Event,
    ) -> Result<EntityKeys, SyncError>;

    /// What to do, given the last synced state (under the lease).
    async fn decide(
        &self,
        kit: &Kit,
        msg: &StageMessage<'_>,
        event: Self::Event,
        last: Option<&SyncState>,
    ) -> Result<Decision, SyncError>;

    /// After the CRM accepted `push` (and its CRM id was adopted): stage-specific bookkeeping.
    async fn delivered(
        &self,
        _kit: &Kit,
        _push: &Push,
        _crm_id: Option<&str>,
        _ack: &CrmAck,
    ) -> Result<(), SyncError> {
        Ok(())
    }

    /// Whether the CRM id the answer names is the CRM id of `push.link` (adopted there). A stage
    /// whose answer names another CRM record (stage 5.2: the CRM note, while `push.link` is the
    /// project the note is on) says no: the answer's id then goes to `delivered` and `remember`
    /// as it is, and nothing is adopted.
    fn adopts_crm_id(&self) -> bool {
        true
    }

    /// The synced state to save once the CRM answered with `crm_id`; `push.remember` unless the
    /// stage keeps what the answer says too.
    fn remember(&self, push: &Push, _crm_id: Option<&str>) -> Remember {
        push.remember.clone()
    }

    /// Writes to make before the delivery, in the same commit as the echo fingerprints (a mark
    /// held for the push's duration, say).
    fn before_delivery(&self, _kit: &Kit, _push: &Push) -> Vec<StoreWrite> {
        Vec::new()
    }

    /// Writes to make once a push was tried, whether it succeeded or failed: committed with the
    /// saved state and the lease's release when it succeeded, with the release alone when it
    /// failed (undoing what [`before_delivery`](Self::before_delivery) marked, say).
    fn settle_writes(&self, _kit: &Kit, _push: &Push) -> Vec<StoreWrite> {
        Vec::new()
    }
}

/// Runs an [`OutboundStage`] as the consumer's [`StageHandler`].
pub struct Pipeline<S> {
    pub stage: S,
    pub kit: Kit,
}

impl<S: OutboundStage> Pipeline<S> {
    pub fn new(stage: S, kit: Kit) -> Self {
        Self { stage, kit }
    }

    /// Runs the event under the lease; the result, and the writes to commit with the lease's
    /// release (the synced state to save when the result stands on it).
    async fn run(
        &self,
        msg: &StageMessage<'_>,
        event: S::Event,
        keys: &EntityKeys,
    ) -> (Result<Outcome, SyncError>, Vec<StoreWrite>) {
        let kit = &self.kit;
        let scope = keys.state.scope();
        let last = match kit.state.get_state(&scope).await {
            Ok(last) => last,
            Err(e) => return (Err(e.into()), Vec::new()),
        };
        let seq = last.as_ref().map_or(0, |s| s.seq);
        let push = match self.stage.decide(kit, msg, event, last.as_ref()).await {
            Err(e) => return (Err(e), Vec::new()),
            Ok(Decision::Skip {
                outcome,
                detail,
                remember,
            }) => {
                let writes = remember
                    .map(|r| vec![state_write(&scope, r, seq)])
                    .unwrap_or_default();
                return (Ok(Outcome::new(outcome, detail)), writes);
            }
            Ok(Decision::Push(push)) => push,
        };
        let result = self.push(msg, &push, &scope, seq + 1).await;
        let mut writes = self.stage.settle_writes(kit, &push);
        match result {
            Ok((outcome, saved)) => {
                writes.insert(0, saved);
                (Ok(outcome), writes)
            }
            Err(e) => (Err(e), writes),
        }
    }

    /// Delivers a push as the `seq`-th change of the entity at `scope`: the outcome, and the
    /// synced state to save.
    async fn push(
        &self,
        msg: &StageMessage<'_>,
        push: &Push,
        scope: &str,
        seq: u64,
    ) -> Result<(Outcome, StoreWrite), SyncError> {
        let kit = &self.kit;
        let event = CrmEvent {
            event_type: push.event_type,
            id: event_id(push.event_type, scope, seq, &push.remember.hash),
            occurred_at: push
                .occurred_at
                .clone()
                .filter(|s| !s.is_empty())
                .or_else(|| Some(msg.meta.received_at.clone()).filter(|s| !s.is_empty()))
                .unwrap_or_else(now_rfc3339),
            source_event: push.source_event.clone(),
            crm_id: push.link.crm_id.clone(),
            enerflo: push.enerflo.clone(),
            data: push.data.clone(),
            raw: push.raw.clone().filter(|_| kit.include_raw),
        };
        let mut before = Vec::new();
        if let Some((target, fingerprints)) = &push.echo {
            before = kit
                .echo
                .record_writes(Direction::ToCrm, target, fingerprints);
        }
        before.extend(self.stage.before_delivery(kit, push));
        kit.commit(before).await?;
        let ack = kit.crm.deliver(&event).await?;
        let crm_id = match &ack.crm_id {
            _ if !self.stage.adopts_crm_id() => ack.crm_id.clone(),
            Some(id) if push.link.crm_id.as_deref() != Some(id.as_str()) => {
                kit.xref.set_crm_id(push.kind, &push.link.key, id).await?;
                Some(id.clone())
            }
            Some(id) => Some(id.clone()),
            None => push.link.crm_id.clone(),
        };
        self.stage
            .delivered(kit, push, crm_id.as_deref(), &ack)
            .await?;
        let saved = state_write(scope, self.stage.remember(push, crm_id.as_deref()), seq);
        Ok((
            Outcome::new(
                OutcomeKind::Delivered,
                format!(
                    "{} for {} (crm_id {}, event {}, CRM answered {})",
                    push.event_type.as_str(),
                    push.subject,
                    crm_id.as_deref().unwrap_or("none"),
                    event.id,
                    ack.status
                ),
            ),
            saved,
        ))
    }
}

/// The synced state `r` of the entity at `scope`, as its `seq`-th change.
fn state_write(scope: &str, r: Remember, seq: u64) -> StoreWrite {
    StoreWrite::State {
        scope: scope.to_owned(),
        state: SyncState {
            hash: r.hash,
            data: r.data,
            updated_at: now_rfc3339(),
            seq,
        },
    }
}

/// `evt_` + 32 hex digits, stable for one change of one entity (see the module docs).
pub fn event_id(event_type: CrmEventType, scope: &str, seq: u64, hash: &str) -> String {
    let digest = sha256_hex(format!("{}|{scope}|{seq}|{hash}", event_type.as_str()).as_bytes());
    format!("evt_{}", &digest[..32])
}

#[async_trait]
impl<S: OutboundStage> StageHandler for Pipeline<S> {
    async fn handle(
        &self,
        meta: &MessageMeta,
        body: &str,
        attempt: u32,
    ) -> Result<Outcome, SyncError> {
        let stage = self.stage.stage();
        if crate::registry::stage_of(&meta.event) != Some(stage) {
            return Err(ReadError::WrongStage {
                stage,
                event: meta.event.clone(),
            }
            .into());
        }
        let msg = StageMessage {
            meta,
            body,
            attempt,
        };
        let mut event = self.stage.read(&msg)?;
        let keys = self.stage.resolve(&self.kit, &msg, &mut event).await?;
        let lease = EntityLease::acquire(&self.kit.claims, &keys.lease, LEASE_WAIT).await?;
        let (result, mut writes) = self.run(&msg, event, &keys).await;
        // What the result stands on (the synced state) and the release, in one request.
        let stands_on_writes = result.is_ok() && !writes.is_empty();
        writes.push(lease.release_write());
        match self.kit.commit(writes).await {
            Ok(()) => result,
            Err(e) => {
                // The lease expires with its lease time if this fails too.
                lease.release().await;
                if stands_on_writes {
                    return Err(e.into());
                }
                tracing::warn!(error = %e, "writes after the event not made (the lease expires with its lease time)");
                result
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{Claim, ClaimStore};

    struct NoCrm;

    #[async_trait]
    impl CrmConnector for NoCrm {
        async fn deliver(&self, _: &CrmEvent) -> Result<CrmAck, crate::crm::CrmError> {
            unreachable!("no delivery in these tests")
        }
    }

    fn state(hash: &str) -> SyncState {
        SyncState {
            hash: hash.into(),
            data: serde_json::json!({}),
            updated_at: "2025-01-01T00:00:00Z".into(),
            seq: 1,
        }
    }

    #[tokio::test]
    async fn a_commit_over_ports_of_different_stores_writes_each_through_its_own_port() {
        // GIVEN the claims in one store and the states and fingerprints in another
        let (states, claims) = (
            Arc::new(EmbeddedStore::in_memory().expect("store")),
            Arc::new(EmbeddedStore::in_memory().expect("store")),
        );
        let kit = Kit::new(
            Arc::new(NoCrm),
            states.clone(),
            claims.clone(),
            states.clone(),
            states.clone(),
            std::time::Duration::from_secs(60),
            false,
        );
        assert!(!kit.one_store);
        assert_eq!(
            claims.claim("lock#x", 60, 60).await.expect("claim"),
            Claim::Acquired
        );

        // WHEN a state, a fingerprint and the lease's release are committed
        kit.commit(vec![
            StoreWrite::State {
                scope: "s".into(),
                state: state("h"),
            },
            StoreWrite::Echo {
                target: "t".into(),
                hash: "f".into(),
                ttl_secs: 60,
            },
            StoreWrite::Release {
                key: "lock#x".into(),
            },
        ])
        .await
        .expect("commit");

        // THEN each landed in the store its port names
        assert_eq!(states.get_state("s").await.expect("get"), Some(state("h")));
        assert_eq!(claims.get_state("s").await.expect("get"), None);
        assert!(states.is_echo("t", "f").await.expect("echo"));
        assert_eq!(
            claims.claim("lock#x", 60, 60).await.expect("claim"),
            Claim::Acquired,
            "released in the claims' store"
        );
        // ... while one store for every port commits at once
        assert!(Kit::on(states, Arc::new(NoCrm), false).one_store);
    }

    #[test]
    fn an_event_id_changes_with_the_sequence_and_is_stable_for_one() {
        let t = CrmEventType::StatusChanged;
        let a = event_id(t, "status#install:7", 2, "h1");
        assert_eq!(a, event_id(t, "status#install:7", 2, "h1"));
        assert_ne!(a, event_id(t, "status#install:7", 4, "h1"));
        assert_ne!(a, event_id(t, "status#install:8", 2, "h1"));
        assert!(a.starts_with("evt_") && a.len() == 36, "{a}");
    }
}
