//! Board webhooks as Monday.com delivers them (docs/monday.md 6): the challenge when one is
//! created (the mutation fails unless the URL echoes it), then one POST per matching event with
//! the legacy payload names (`create_pulse`, `update_column_value`, `create_update`,
//! `update_name`), numeric ids and a `triggerUuid`; webhooks created with an app's token carry an
//! HS256 JWT in `Authorization`. A delivery that is not answered 2xx is retried every
//! [`super::FakeOptions::retry_interval`] up to [`super::FakeOptions::retry_count`] times
//! (Monday: once a minute for 30 minutes), then dropped.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{MondayFake, lock};

/// One event delivered (or being delivered) to a webhook.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub webhook: u64,
    pub url: String,
    pub body: Value,
    /// The status of each attempt (0: no answer).
    pub attempts: Vec<u16>,
    pub authorization: Option<String>,
}

/// An HS256 JWT of `claims` (what an app's webhook carries).
pub fn jwt(secret: &[u8], claims: &Value) -> String {
    let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let signing = format!(
        "{}.{}",
        enc(br#"{"alg":"HS256","typ":"JWT"}"#),
        enc(claims.to_string().as_bytes())
    );
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return signing,
    };
    mac.update(signing.as_bytes());
    format!("{signing}.{}", enc(&mac.finalize().into_bytes()))
}

impl MondayFake {
    /// The challenge of a new webhook: POST `{"challenge": ...}`; `Ok` when it is echoed.
    pub(super) async fn challenge(&self, url: &str) -> Result<(), String> {
        let token: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
        let resp = self
            .http
            .post(url)
            .json(&json!({"challenge": token}))
            .send()
            .await
            .map_err(|_| {
                "Internal Server Error: the webhook URL did not answer the challenge".to_owned()
            })?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 && body.get("challenge").and_then(Value::as_str) == Some(token.as_str()) {
            Ok(())
        } else {
            Err(format!(
                "Internal Server Error: the webhook URL answered {status} without echoing the challenge"
            ))
        }
    }

    /// Sends `event` to `url` from a task of its own, retrying on Monday's schedule.
    pub(super) fn deliver(self: &Arc<Self>, webhook: u64, url: String, signed: bool, event: Value) {
        let fake = self.clone();
        let authorization = match (&self.opts.signing_secret, signed) {
            (Some(secret), true) => {
                let now = self.now_ms() / 1000;
                Some(jwt(
                    secret.as_bytes(),
                    &json!({"accountId": self.opts.account_id, "userId": self.opts.user_id,
                            "aud": url, "exp": now + 300, "iat": now,
                            "shortLivedToken": "fake-short-lived-token"}),
                ))
            }
            _ => None,
        };
        let index = {
            let mut d = lock(&self.deliveries);
            d.push(Delivery {
                webhook,
                url: url.clone(),
                body: json!({"event": event}),
                attempts: Vec::new(),
                authorization: authorization.clone(),
            });
            d.len() - 1
        };
        tokio::spawn(async move {
            for attempt in 0..fake.opts.retry_count.max(1) {
                let mut body = lock(&fake.deliveries)[index].body.clone();
                body["event"]["isRetry"] = Value::Bool(attempt > 0);
                let mut req = fake.http.post(&url).json(&body);
                if let Some(a) = &authorization {
                    req = req.header("authorization", a);
                }
                let status = match req.send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                lock(&fake.deliveries)[index].attempts.push(status);
                if (200..300).contains(&status) {
                    return;
                }
                tokio::time::sleep(fake.opts.retry_interval).await;
            }
        });
    }
}

/// The default gap between a failed delivery and its retry (Monday: a minute).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(60);
