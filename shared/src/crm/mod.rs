//! CRM connectors receive canonical commands ([`CrmEvent`]). Every connector has the same shape:
//! a struct named for its technology implementing [`CrmConnector`], configured from [`Config`].
//!
//! [`Config`]: crate::config::Config

pub mod signature;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;

use crate::canonical::CrmEvent;
use crate::error::SyncError;

pub use webhook::WebhookCrmConnector;

/// The CRM's answer to one event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrmAck {
    pub status: u16,
    /// The record the event created or updated, when the CRM says (DESIGN 3.5).
    pub crm_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    #[error("CRM unavailable: {detail}")]
    Unavailable {
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("CRM rejected the event with {status}: {message}")]
    Rejected { status: u16, message: String },
}

impl From<CrmError> for SyncError {
    fn from(e: CrmError) -> Self {
        match &e {
            CrmError::Unavailable { retry_after, .. } => SyncError::Transient {
                reason: e.to_string(),
                retry_after: *retry_after,
                source: None,
            },
            CrmError::Rejected { .. } => SyncError::permanent(e.to_string()),
        }
    }
}

#[async_trait]
pub trait CrmConnector: Send + Sync {
    /// Delivers one event. Must be safe to repeat: the event `id` is stable across retries.
    async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError>;
}
