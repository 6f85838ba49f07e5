//! Wiring: build the adapters once from [`Config`], for Lambda (DynamoDB, SQS, reqwest) or for the
//! local runner (embedded redb store and queue).

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::crm::{CrmConnector, WebhookCrmConnector};
use crate::enerflo::{EnerfloApi, HttpEnerfloClient};
use crate::queue::EventQueue;
use crate::store::{ClaimStore, EventLog, SyncStateStore, XrefStore};

/// Enerflo allows 300 requests per minute per key; stay under it with room for other callers.
pub const ENERFLO_REQUESTS_PER_MINUTE: usize = 240;

/// Every port, behind its trait.
#[derive(Clone)]
pub struct Ports {
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub log: Arc<dyn EventLog>,
    pub queue: Arc<dyn EventQueue>,
}

fn startup(what: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError { problems: vec![format!("{what}: {e}")] }
}

pub fn enerflo_client(config: &Config) -> Result<Arc<dyn EnerfloApi>, ConfigError> {
    let key = config.enerflo_api_key.clone().ok_or_else(|| startup("ENERFLO_API_KEY", "is required"))?;
    let client = HttpEnerfloClient::new(&config.enerflo_base_url, key, config.enerflo_timeout, ENERFLO_REQUESTS_PER_MINUTE)
        .map_err(|e| startup("Enerflo HTTP client", e))?;
    Ok(Arc::new(client))
}

pub fn crm_connector(config: &Config) -> Result<Arc<dyn CrmConnector>, ConfigError> {
    let url = config.crm_webhook_url.clone().ok_or_else(|| startup("CRM_WEBHOOK_URL", "is required"))?;
    let secret = config.crm_webhook_secret.clone().ok_or_else(|| startup("CRM_WEBHOOK_SECRET", "is required"))?;
    let connector = WebhookCrmConnector::new(&url, secret, config.crm_timeout).map_err(|e| startup("CRM HTTP client", e))?;
    Ok(Arc::new(connector))
}
