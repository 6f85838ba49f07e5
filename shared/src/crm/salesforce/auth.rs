//! Salesforce OAuth 2.0 for a server-to-server connector: the client credentials flow (an
//! external client app's id and secret, called on the org's My Domain) or the JWT bearer flow
//! (an RS256 assertion signed with the app's private key; no secret at rest). Neither returns a
//! refresh token: the access token is cached and fetched again once when the data API answers
//! 401 `INVALID_SESSION_ID` (docs/crm-connectors.md 3.2).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::crm::CrmError;
use crate::metrics::Observe as _;
use crate::secret::Secret;
use crate::wire::{truncate, without_url};

/// How the connector proves who it is.
#[derive(Clone)]
pub enum Grant {
    ClientCredentials {
        client_id: String,
        client_secret: Secret,
    },
    JwtBearer {
        client_id: String,
        username: String,
        /// The parsed private key (PKCS#8 or PKCS#1 PEM), checked at start-up.
        key: std::sync::Arc<RsaKeyPair>,
        /// The JWT `aud`: `https://login.salesforce.com`, `https://test.salesforce.com` for a
        /// sandbox, or the My Domain URL.
        audience: String,
    },
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientCredentials { client_id, .. } => {
                write!(f, "ClientCredentials({client_id}, [redacted])")
            }
            Self::JwtBearer {
                client_id,
                username,
                ..
            } => write!(f, "JwtBearer({client_id}, {username}, [redacted key])"),
        }
    }
}

/// A private key in PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`); `\n` written as the
/// two characters `\` `n` (as environment variables often carry it) is accepted.
pub fn parse_private_key(pem: &str) -> Result<RsaKeyPair, String> {
    let text = pem.replace("\\n", "\n");
    let pkcs1 = text.contains("BEGIN RSA PRIVATE KEY");
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| "is not a PEM private key (its body is not base64)".to_owned())?;
    let key = if pkcs1 {
        RsaKeyPair::from_der(&der)
    } else {
        RsaKeyPair::from_pkcs8(&der)
    };
    key.map_err(|e| format!("is not an RSA private key ({e})"))
}

/// A token and the instance it is for.
#[derive(Clone, Debug)]
pub struct Session {
    pub access_token: Secret,
    /// Where the data API is (`instance_url` of the token answer).
    pub instance_url: String,
}

pub struct Authenticator {
    http: reqwest::Client,
    /// The org's My Domain (`SALESFORCE_LOGIN_URL`), where the token endpoint is.
    login_url: String,
    grant: Grant,
    cached: Mutex<Option<Session>>,
}

impl Authenticator {
    pub fn new(http: reqwest::Client, login_url: &str, grant: Grant) -> Self {
        Self {
            http,
            login_url: login_url.trim_end_matches('/').to_owned(),
            grant,
            cached: Mutex::new(None),
        }
    }

    /// The cached session, or a new one.
    pub async fn session(&self) -> Result<Session, CrmError> {
        let mut slot = self.cached.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let fresh = self.fetch().await?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drops `stale` (a token the data API refused) and fetches a new one, unless another caller
    /// already replaced it.
    pub async fn refresh(&self, stale: &Session) -> Result<Session, CrmError> {
        let mut slot = self.cached.lock().await;
        if let Some(s) = slot.as_ref()
            && s.access_token.expose() != stale.access_token.expose()
        {
            return Ok(s.clone());
        }
        let fresh = self.fetch().await?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    async fn fetch(&self) -> Result<Session, CrmError> {
        let form: Vec<(&str, String)> = match &self.grant {
            Grant::ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.expose().to_owned()),
            ],
            Grant::JwtBearer {
                client_id,
                username,
                key,
                audience,
            } => vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ),
                ("assertion", assertion(client_id, username, audience, key)?),
            ],
        };
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", crate::wire::encode_segment(v)))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!("{}/services/oauth2/token", self.login_url);
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .observed(crate::metrics::Target::Crm)
            .send()
            .await
            .map_err(|e| CrmError::Unavailable {
                status: None,
                detail: format!(
                    "Salesforce token request failed: {}",
                    without_url(&e, "<salesforce>")
                ),
                retry_after: None,
            })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 500 {
            return Err(CrmError::Unavailable {
                status: Some(status),
                detail: "the Salesforce token endpoint is unavailable".into(),
                retry_after: None,
            });
        }
        if status != 200 {
            let error = v.get("error").and_then(Value::as_str).unwrap_or("error");
            let why = v
                .get("error_description")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| truncate(&String::from_utf8_lossy(&bytes), 200));
            return Err(CrmError::Rejected {
                status,
                message: format!(
                    "Salesforce refused the credentials ({error}: {why}); check SALESFORCE_LOGIN_URL and the {} settings",
                    match self.grant {
                        Grant::ClientCredentials { .. } =>
                            "SALESFORCE_CLIENT_ID / SALESFORCE_CLIENT_SECRET",
                        Grant::JwtBearer { .. } =>
                            "SALESFORCE_CLIENT_ID / SALESFORCE_USERNAME / SALESFORCE_PRIVATE_KEY",
                    }
                ),
            });
        }
        let token = v.get("access_token").and_then(Value::as_str);
        let instance = v.get("instance_url").and_then(Value::as_str);
        match (token, instance) {
            (Some(t), Some(i)) => Ok(Session {
                access_token: Secret::new(t),
                instance_url: i.trim_end_matches('/').to_owned(),
            }),
            _ => Err(CrmError::Unavailable {
                status: Some(status),
                detail: "Salesforce's token answer has no access_token or instance_url".into(),
                retry_after: None,
            }),
        }
    }
}

/// How long an assertion is valid: Salesforce accepts at most about three minutes.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(170);

/// The JWT bearer assertion: RS256 over base64url(header).base64url(claims).
pub fn assertion(
    client_id: &str,
    username: &str,
    audience: &str,
    key: &RsaKeyPair,
) -> Result<String, CrmError> {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
    let claims = json!({
        "iss": client_id,
        "sub": username,
        "aud": audience,
        "exp": crate::timefmt::now_unix() + ASSERTION_LIFETIME.as_secs() as i64,
    });
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| CrmError::Rejected {
        status: 0,
        message: "signing the Salesforce JWT assertion failed".into(),
    })?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}
