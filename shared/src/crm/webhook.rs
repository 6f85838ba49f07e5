//! The `webhook` connector: one signed JSON POST per event to `CRM_WEBHOOK_URL`. Works with any
//! CRM or middleware that can receive a webhook (docs/design.md 3.3). A 429 (or a 503 with
//! `Retry-After`) holds every delivery of the connector until the time given.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::signature::sign;
use super::{CrmAck, CrmConnector, CrmError};
use crate::canonical::CrmEvent;
use crate::config::SigningSecret;
use crate::retry::Pause;
use crate::timefmt::now_unix;
use crate::wire::{body_text, http_client, parse_retry_after};

/// How long a 429 that names no time holds the other deliveries.
const PAUSE_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct WebhookCrmConnector {
    http: reqwest::Client,
    url: String,
    secret: SigningSecret,
    /// Set by a 429 (or a 503 with `Retry-After`) to any delivery, checked before every one.
    pause: Pause,
    timeout: Duration,
}

impl WebhookCrmConnector {
    pub fn new(
        url: &str,
        secret: SigningSecret,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = http_client(timeout)?;
        Ok(Self {
            http,
            url: url.to_owned(),
            secret,
            pause: Pause::default(),
            timeout,
        })
    }
}

#[async_trait]
impl CrmConnector for WebhookCrmConnector {
    async fn deliver(&self, event: &CrmEvent) -> Result<CrmAck, CrmError> {
        // A delivery has no in-process retry to spend a wait on: while the CRM asked every caller
        // to wait, fail at once with what is left, and the queue's backoff honours it.
        if let Some(held) = self.pause.remaining() {
            return Err(CrmError::Unavailable {
                status: None,
                detail: format!(
                    "not sent: the CRM answered {} with Retry-After to an earlier event",
                    held.status
                ),
                retry_after: Some(held.remaining),
            });
        }
        let body = serde_json::to_vec(event).map_err(|e| CrmError::Rejected {
            status: 0,
            message: e.to_string(),
        })?;
        let ts = now_unix();
        let signature = sign(self.secret.key(), &event.id, ts, &body);
        let resp = self
            .http
            .post(&self.url)
            .timeout(crate::deadline::bound(self.timeout))
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
        match (status, retry_after) {
            (429, ra) => self
                .pause
                .hold(429, ra.unwrap_or(PAUSE_WITHOUT_RETRY_AFTER)),
            (503, Some(ra)) => self.pause.hold(503, ra),
            _ => {}
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::canonical::{CrmEventType, EnerfloRefs};
    use crate::error::SyncError;

    /// `whsec_` + base64 of 32 bytes of 0x42: an obviously fake secret.
    const SECRET: &str = "whsec_QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

    fn event(id: &str) -> CrmEvent {
        CrmEvent {
            event_type: CrmEventType::ProjectSubmitted,
            id: id.into(),
            occurred_at: "2024-01-01T00:00:00Z".into(),
            source_event: "deal.projectSubmitted".into(),
            crm_id: None,
            enerflo: EnerfloRefs::default(),
            data: json!({}),
            raw: None,
        }
    }

    fn connector(server: &MockServer) -> WebhookCrmConnector {
        WebhookCrmConnector::new(
            &format!("{}/crm/events", server.uri()),
            SigningSecret::parse(SECRET).unwrap(),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_crm_429_retry_after_holds_every_later_delivery_until_it_passes() {
        // GIVEN the CRM answers the first delivery 429 with Retry-After: 2, then accepts
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "2"))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"crm_id": "c-1"})))
            .mount(&server)
            .await;
        let crm = connector(&server);
        let first = crm.deliver(&event("evt_a")).await.expect_err("429");
        assert!(
            matches!(
                first,
                CrmError::Unavailable {
                    status: Some(429),
                    ..
                }
            ),
            "{first}"
        );

        // WHEN another entity's event follows at once
        let held = crm.deliver(&event("evt_b")).await.expect_err("held");

        // THEN it is not sent, and fails as transient carrying the rest of the pause
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
        let err = SyncError::from(held);
        assert!(err.is_transient(), "{}", err.describe());
        let ra = err
            .retry_after()
            .expect("carries the remaining Retry-After");
        assert!(
            ra > Duration::ZERO && ra <= Duration::from_secs(2),
            "{ra:?}"
        );

        // ... and once that much time has passed, the event goes through
        tokio::time::sleep(ra).await;
        let ack = crm.deliver(&event("evt_b")).await.expect("delivered");
        assert_eq!(ack.crm_id.as_deref(), Some("c-1"));
        assert_eq!(server.received_requests().await.unwrap().len(), 2);
    }
}
