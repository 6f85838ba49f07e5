//! The `webhook` connector: one signed JSON POST per event to `CRM_WEBHOOK_URL`. Works with any
//! CRM or middleware that can receive a webhook (DESIGN 3.3).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::signature::sign;
use super::{CrmAck, CrmConnector, CrmError};
use crate::canonical::CrmEvent;
use crate::config::SigningSecret;
use crate::enerflo::client::{body_text, parse_retry_after};
use crate::timefmt::now_unix;

pub struct WebhookCrmConnector {
    http: reqwest::Client,
    url: String,
    secret: SigningSecret,
}

impl WebhookCrmConnector {
    pub fn new(
        url: &str,
        secret: SigningSecret,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("enerflo-crm-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            url: url.to_owned(),
            secret,
        })
    }
}

#[async_trait]
impl CrmConnector for WebhookCrmConnector {
    async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
        let body = serde_json::to_vec(event).map_err(|e| CrmError::Rejected {
            status: 0,
            message: e.to_string(),
        })?;
        let ts = now_unix();
        let signature = sign(self.secret.key(), &event.id, ts, &body);
        let resp = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| CrmError::Unavailable {
                status: None,
                detail: if e.is_timeout() {
                    "request timed out".into()
                } else {
                    "connection failed".into()
                },
                retry_after: None,
            })?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers());
        let bytes = resp.bytes().await.unwrap_or_default();
        match status {
            200..=299 => {
                let crm_id = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
                    v.get("crm_id")
                        .and_then(crate::enerflo::lenient::value_to_string)
                });
                Ok(CrmAck { status, crm_id })
            }
            408 | 409 | 425 | 429 | 500..=599 => Err(CrmError::Unavailable {
                status: Some(status),
                detail: body_text(&bytes),
                retry_after,
            }),
            _ => Err(CrmError::Rejected {
                status,
                message: body_text(&bytes),
            }),
        }
    }
}
