//! CRM connectors receive canonical commands ([`CrmEvent`]). Every connector has the same shape:
//! a struct named for its technology implementing [`CrmConnector`], configured from [`Config`].
//!
//! [`Config`]: crate::config::Config

pub mod hubspot;
pub mod monday;
pub mod profile;
pub mod salesforce;
pub mod signature;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;

use crate::canonical::CrmEvent;
use crate::error::{RemoteAnswer, SyncError};

pub use hubspot::HubSpotConnector;
pub use monday::MondayConnector;
pub use salesforce::SalesforceConnector;
pub use webhook::WebhookCrmConnector;

/// The CRM's answer to one event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrmAck {
    pub status: u16,
    /// The record the event created or updated, when the CRM says (docs/design.md 3.5).
    pub crm_id: Option<String>,
}

/// A failed delivery. `Display` (and so every log line) names the kind and status only: what the
/// CRM answered may quote the customer data we sent, and is reached through [`CrmError::answer`].
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// No answer (`status` is `None`; `detail` says why), or a retryable answer such as 429 or
    /// 5xx (`detail` is then its body as text).
    #[error("CRM unavailable: {}", unavailable_summary(.status, .detail))]
    Unavailable {
        status: Option<u16>,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// A 4xx answer; `message` is its body as text.
    #[error("CRM rejected the event with {status}")]
    Rejected { status: u16, message: String },
}

fn unavailable_summary(status: &Option<u16>, detail: &str) -> String {
    match status {
        Some(status) => format!("HTTP {status}"),
        None => detail.to_owned(),
    }
}

impl CrmError {
    /// What the CRM answered, as text: for the DLQ reason, never for a log line.
    pub fn answer(&self) -> Option<&str> {
        match self {
            Self::Unavailable {
                status: Some(_),
                detail,
                ..
            }
            | Self::Rejected {
                message: detail, ..
            } => Some(detail),
            Self::Unavailable { status: None, .. } => None,
        }
    }
}

impl From<CrmError> for SyncError {
    fn from(e: CrmError) -> Self {
        // The answer becomes the cause: in the DLQ reason, not in log lines.
        let reason = e.to_string();
        let source = RemoteAnswer::boxed(e.answer());
        match &e {
            CrmError::Unavailable { retry_after, .. } => SyncError::Transient {
                reason,
                retry_after: *retry_after,
                source,
            },
            CrmError::Rejected { .. } => SyncError::Permanent { reason, source },
        }
    }
}

/// A signed change order as one note's text, for the native connectors: its id (else the event
/// id) and `Change order N signed:` with a line `key: old -> new` per change.
pub fn change_order_summary(event: &CrmEvent) -> (String, String) {
    use serde_json::Value;
    let show = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "none".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let co_id = match event.data.pointer("/change_order/id") {
        Some(v @ Value::String(_)) | Some(v @ Value::Number(_)) => show(Some(v)),
        _ => event.id.clone(),
    };
    let lines: Vec<String> = event
        .data
        .get("changes")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, change)| {
            format!(
                "{key}: {} -> {}",
                show(change.get("old")),
                show(change.get("new"))
            )
        })
        .collect();
    let text = if lines.is_empty() {
        format!("Change order {co_id} signed.")
    } else {
        format!("Change order {co_id} signed:\n{}", lines.join("\n"))
    };
    (co_id, text)
}

#[async_trait]
pub trait CrmConnector: Send + Sync {
    /// Delivers one event. Must be safe to repeat: the event `id` is stable across retries.
    async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError>;
}
