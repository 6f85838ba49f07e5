//! Configuration: one typed struct, read from the environment once at start-up and validated.
//! A missing or malformed value stops start-up with a message naming the variable. The same
//! names work in Lambda and in the local runner (DESIGN 3.4).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;

use crate::classify::{DEFAULT_INSTALL_ID_PATHS, Stage};
use crate::retry::RetryPolicy;
use crate::secret::{Secret, SecretSet};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// The CRM connector in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrmConnectorKind {
    Webhook,
}

/// A Standard Webhooks signing secret (`whsec_<base64>`); holds the decoded key.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let b64 = raw.trim().strip_prefix("whsec_").unwrap_or(raw.trim());
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "is not `whsec_` followed by base64".to_owned())?;
        if key.len() < 16 {
            return Err("decodes to fewer than 16 bytes; use at least 24 random bytes".into());
        }
        Ok(Self(key))
    }

    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageQueueUrls {
    pub url: String,
    pub dlq_url: String,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub enerflo_base_url: String,
    pub enerflo_api_key: Option<Secret>,
    pub enerflo_timeout: Duration,
    /// Longest an inbound HTTP route waits on Enerflo before answering 429/503 (API Gateway cuts
    /// requests at 29 s).
    pub inbound_wait_budget: Duration,
    pub webhook_tokens: SecretSet,
    pub crm_connector: CrmConnectorKind,
    pub crm_webhook_url: Option<String>,
    pub crm_webhook_secret: Option<SigningSecret>,
    pub crm_timeout: Duration,
    pub crm_inbound_tokens: SecretSet,
    pub crm_include_raw: bool,
    pub table_name: Option<String>,
    pub queues: BTreeMap<Stage, StageQueueUrls>,
    pub aws_endpoint_url: Option<String>,
    pub max_body_bytes: usize,
    pub retry: RetryPolicy,
    pub event_log_ttl: Duration,
    pub idempotency_ttl: Duration,
    pub install_id_paths: Vec<String>,
    pub listen_addr: String,
    pub data_dir: PathBuf,
}

/// What a given binary needs; `Config::require` checks exactly these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    WebhookToken,
    EnerfloApi,
    CrmWebhook,
    CrmInboundToken,
    Table,
    Queue(Stage),
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any lookup (tests pass a map, so they never mutate the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let url = |k: &str, problems: &mut Vec<String>| {
            let v = var(k)?;
            if v.starts_with("http://") || v.starts_with("https://") {
                Some(v.trim_end_matches('/').to_owned())
            } else {
                problems.push(format!("{k} must be an http(s) URL"));
                None
            }
        };
        let number =
            |k: &str, default: u64, min: u64, max: u64, problems: &mut Vec<String>| match var(k) {
                None => default,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => n,
                    _ => {
                        problems.push(format!("{k} must be a whole number from {min} to {max}"));
                        default
                    }
                },
            };

        let enerflo_base_url =
            url("ENERFLO_BASE_URL", &mut problems).unwrap_or_else(|| "https://enerflo.io".into());
        let crm_connector = match var("CRM_CONNECTOR").as_deref() {
            None | Some("webhook") => CrmConnectorKind::Webhook,
            Some(_) => {
                problems.push("CRM_CONNECTOR must be `webhook`".into());
                CrmConnectorKind::Webhook
            }
        };
        let crm_webhook_secret =
            var("CRM_WEBHOOK_SECRET").and_then(|s| match SigningSecret::parse(&s) {
                Ok(s) => Some(s),
                Err(why) => {
                    problems.push(format!("CRM_WEBHOOK_SECRET {why}"));
                    None
                }
            });
        let crm_include_raw = match var("CRM_INCLUDE_RAW")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => {
                problems.push("CRM_INCLUDE_RAW must be true or false".into());
                false
            }
        };
        let mut queues = BTreeMap::new();
        for stage in Stage::ALL {
            let (qk, dk) = (
                format!("{}_QUEUE_URL", stage.env_prefix()),
                format!("{}_DLQ_URL", stage.env_prefix()),
            );
            match (url(&qk, &mut problems), url(&dk, &mut problems)) {
                (Some(url), Some(dlq_url)) => {
                    queues.insert(stage, StageQueueUrls { url, dlq_url });
                }
                (None, None) => {}
                _ => problems.push(format!("{qk} and {dk} must be set together")),
            }
        }
        let webhook_tokens = SecretSet::parse(&var("WEBHOOK_TOKEN").unwrap_or_default());
        let crm_inbound_tokens = SecretSet::parse(&var("CRM_INBOUND_TOKEN").unwrap_or_default());
        let max_attempts = number("RETRY_MAX_ATTEMPTS", 18, 1, 1000, &mut problems) as u32;

        let config = Self {
            enerflo_base_url,
            enerflo_api_key: var("ENERFLO_API_KEY").map(Secret::new),
            enerflo_timeout: Duration::from_secs(number(
                "ENERFLO_TIMEOUT_SECS",
                10,
                1,
                120,
                &mut problems,
            )),
            inbound_wait_budget: Duration::from_secs(number(
                "INBOUND_WAIT_SECS",
                20,
                1,
                28,
                &mut problems,
            )),
            webhook_tokens,
            crm_connector,
            crm_webhook_url: url("CRM_WEBHOOK_URL", &mut problems),
            crm_webhook_secret,
            crm_timeout: Duration::from_secs(number("CRM_TIMEOUT_SECS", 10, 1, 120, &mut problems)),
            crm_inbound_tokens,
            crm_include_raw,
            table_name: var("TABLE_NAME"),
            queues,
            aws_endpoint_url: url("AWS_ENDPOINT_URL", &mut problems),
            max_body_bytes: number(
                "MAX_BODY_BYTES",
                1_048_576,
                1024,
                6 * 1_048_576,
                &mut problems,
            ) as usize,
            retry: RetryPolicy {
                max_attempts,
                ..RetryPolicy::default()
            },
            event_log_ttl: Duration::from_secs(
                86_400 * number("EVENT_LOG_TTL_DAYS", 30, 1, 365, &mut problems),
            ),
            idempotency_ttl: Duration::from_secs(
                86_400 * number("IDEMPOTENCY_TTL_DAYS", 14, 1, 365, &mut problems),
            ),
            install_id_paths: var("ENERFLO_INSTALL_ID_PATHS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_else(|| {
                    DEFAULT_INSTALL_ID_PATHS
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect()
                }),
            listen_addr: var("LISTEN_ADDR").unwrap_or_else(|| "127.0.0.1:3000".into()),
            data_dir: var("DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".local-data")),
        };
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Checks that what a binary needs is present; names every missing variable at once.
    pub fn require(&self, needs: &[Need]) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for need in needs {
            match need {
                Need::WebhookToken if self.webhook_tokens.is_empty() => {
                    problems.push("WEBHOOK_TOKEN is required (a long random value; comma-separate two during a rotation)".into())
                }
                Need::EnerfloApi if self.enerflo_api_key.is_none() => problems.push("ENERFLO_API_KEY is required".into()),
                Need::CrmWebhook => {
                    if self.crm_webhook_url.is_none() {
                        problems.push("CRM_WEBHOOK_URL is required for CRM_CONNECTOR=webhook".into());
                    }
                    if self.crm_webhook_secret.is_none() {
                        problems.push("CRM_WEBHOOK_SECRET is required for CRM_CONNECTOR=webhook (whsec_<base64>)".into());
                    }
                }
                Need::CrmInboundToken if self.crm_inbound_tokens.is_empty() => {
                    problems.push("CRM_INBOUND_TOKEN is required".into())
                }
                Need::Table if self.table_name.is_none() => problems.push("TABLE_NAME is required".into()),
                Need::Queue(stage) if !self.queues.contains_key(stage) => problems.push(format!(
                    "{p}_QUEUE_URL and {p}_DLQ_URL are required",
                    p = stage.env_prefix()
                )),
                _ => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_unset() {
        let c = load(&[]).expect("loads");
        assert_eq!(c.enerflo_base_url, "https://enerflo.io");
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.retry.max_attempts, 18);
        assert_eq!(c.listen_addr, "127.0.0.1:3000");
    }

    #[test]
    fn malformed_values_are_all_named() {
        let err = load(&[
            ("ENERFLO_BASE_URL", "enerflo.io"),
            ("MAX_BODY_BYTES", "lots"),
            ("CRM_WEBHOOK_SECRET", "whsec_!!!"),
            ("PROJECT_QUEUE_URL", "http://q"),
        ])
        .expect_err("rejects");
        let text = err.to_string();
        for name in [
            "ENERFLO_BASE_URL",
            "MAX_BODY_BYTES",
            "CRM_WEBHOOK_SECRET",
            "PROJECT_DLQ_URL",
        ] {
            assert!(text.contains(name), "{name} not named in: {text}");
        }
    }

    #[test]
    fn require_names_every_missing_variable_and_never_prints_secrets() {
        let c = load(&[("ENERFLO_API_KEY", "fake-key-value")]).expect("loads");
        let err = c
            .require(&[
                Need::WebhookToken,
                Need::EnerfloApi,
                Need::Table,
                Need::Queue(Stage::Project),
                Need::CrmWebhook,
            ])
            .expect_err("missing");
        let text = err.to_string();
        for name in [
            "WEBHOOK_TOKEN",
            "TABLE_NAME",
            "PROJECT_QUEUE_URL",
            "CRM_WEBHOOK_URL",
            "CRM_WEBHOOK_SECRET",
        ] {
            assert!(text.contains(name), "{name} not named in: {text}");
        }
        assert!(!text.contains("ENERFLO_API_KEY"));
        assert!(!format!("{c:?}").contains("fake-key-value"));
    }
}
