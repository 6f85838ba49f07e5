//! Stage 4 REST calls: the company's install statuses (`GET /api/v3/install-statuses`, cached in
//! process) and the status write (`PUT /api/v3/installs/{id}`).
//!
//! Status ids are per company (a real `update_install` carried a custom status id 323), so names
//! are mapped to ids through the list, never through hard-coded ids (docs/enerflo-api.md 2.4).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::client::{ApiResponse, EnerfloApi, EnerfloError};
use super::lenient::{value_to_string, value_to_u64};

/// How long the status list is trusted before it is read again.
pub const STATUS_LIST_TTL: Duration = Duration::from_secs(300);
/// A lookup that misses refreshes the list, but not more often than this (an unknown name sent
/// over and over must not turn into one Enerflo call each).
pub const STATUS_MISS_REFRESH: Duration = Duration::from_secs(30);

/// One entry of the company's install status list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallStatus {
    pub id: u64,
    pub name: String,
}

/// Reads the status list tolerantly: a bare array, or the array under `data` / `results` /
/// `statuses` / `install_statuses`; entries `{id, name}`, `{id, status}` or `{id, title}` (ids as
/// numbers or numeric strings). Entries without an id or a name are skipped.
pub fn parse_statuses(body: &Value) -> Vec<InstallStatus> {
    let items = match body {
        Value::Array(items) => items.as_slice(),
        Value::Object(map) => ["data", "results", "statuses", "install_statuses"]
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_array))
            .map(Vec::as_slice)
            .unwrap_or_default(),
        _ => &[],
    };
    items
        .iter()
        .filter_map(|item| {
            let id = item.get("id").and_then(value_to_u64)?;
            let name = ["name", "status", "title", "label"]
                .iter()
                .find_map(|k| item.get(*k).and_then(value_to_string))?;
            Some(InstallStatus { id, name })
        })
        .collect()
}

/// A status name as compared: lower case, blanks trimmed and collapsed.
pub fn normalise_name(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Compares status names the way a person would: case-insensitive, blanks trimmed and collapsed.
pub fn same_name(a: &str, b: &str) -> bool {
    normalise_name(a) == normalise_name(b)
}

/// Whether `name` is one of `names` (configuration lists such as `STATUS_VOIDED_NAMES`).
pub fn name_in(name: &str, names: &[String]) -> bool {
    names.iter().any(|n| same_name(n, name))
}

/// Typed calls.
impl dyn EnerfloApi {
    /// `GET /api/v3/install-statuses`.
    pub async fn install_statuses(
        &self,
        budget: Duration,
    ) -> Result<Vec<InstallStatus>, EnerfloError> {
        let resp = self
            .send(Method::GET, "/api/v3/install-statuses", None, budget)
            .await?;
        Ok(parse_statuses(&resp.body))
    }

    /// `PUT /api/v3/installs/{id}` with `{<status_field>: status_id}`. The request field name is
    /// undocumented; it is configuration (`ENERFLO_STATUS_FIELD`, default `status_id`).
    pub async fn set_install_status(
        &self,
        install_id: u64,
        status_field: &str,
        status_id: u64,
        budget: Duration,
    ) -> Result<ApiResponse, EnerfloError> {
        let mut body = serde_json::Map::new();
        body.insert(status_field.to_owned(), json!(status_id));
        self.send(
            Method::PUT,
            &format!("/api/v3/installs/{install_id}"),
            Some(&Value::Object(body)),
            budget,
        )
        .await
    }
}

/// The status list, cached in process for [`STATUS_LIST_TTL`]. One fetch at a time (concurrent
/// callers wait for it instead of each calling Enerflo).
pub struct StatusCatalog {
    ttl: Duration,
    cached: Mutex<Option<(Instant, Arc<Vec<InstallStatus>>)>>,
}

impl Default for StatusCatalog {
    fn default() -> Self {
        Self::new(STATUS_LIST_TTL)
    }
}

impl StatusCatalog {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The list, read from Enerflo when the cached copy is older than `max_age` (or the TTL).
    async fn list_within(
        &self,
        api: &(dyn EnerfloApi + 'static),
        budget: Duration,
        max_age: Duration,
    ) -> Result<Arc<Vec<InstallStatus>>, EnerfloError> {
        let mut slot = self.cached.lock().await;
        if let Some((at, list)) = slot.as_ref()
            && at.elapsed() < max_age.min(self.ttl)
        {
            return Ok(list.clone());
        }
        let list = Arc::new(api.install_statuses(budget).await?);
        if list.is_empty() {
            // An empty or unreadable list is not cached: the next call asks again.
            tracing::warn!("Enerflo's install status list is empty or unreadable");
            *slot = None;
        } else {
            *slot = Some((Instant::now(), list.clone()));
        }
        Ok(list)
    }

    /// The whole list (cached).
    pub async fn list(
        &self,
        api: &(dyn EnerfloApi + 'static),
        budget: Duration,
    ) -> Result<Arc<Vec<InstallStatus>>, EnerfloError> {
        self.list_within(api, budget, self.ttl).await
    }

    /// Finds an entry; a miss in a list older than [`STATUS_MISS_REFRESH`] reads the list again
    /// once (a status created since the last read). Returns the list searched too, for messages.
    pub async fn find(
        &self,
        api: &(dyn EnerfloApi + 'static),
        budget: Duration,
        matches: impl Fn(&InstallStatus) -> bool,
    ) -> Result<(Option<InstallStatus>, Arc<Vec<InstallStatus>>), EnerfloError> {
        let list = self.list(api, budget).await?;
        if let Some(hit) = list.iter().find(|s| matches(s)) {
            return Ok((Some(hit.clone()), list));
        }
        let list = self.list_within(api, budget, STATUS_MISS_REFRESH).await?;
        Ok((list.iter().find(|s| matches(s)).cloned(), list))
    }

    pub async fn by_id(
        &self,
        api: &(dyn EnerfloApi + 'static),
        id: u64,
        budget: Duration,
    ) -> Result<Option<InstallStatus>, EnerfloError> {
        Ok(self.find(api, budget, |s| s.id == id).await?.0)
    }

    pub async fn by_name(
        &self,
        api: &(dyn EnerfloApi + 'static),
        name: &str,
        budget: Duration,
    ) -> Result<Option<InstallStatus>, EnerfloError> {
        Ok(self
            .find(api, budget, |s| same_name(&s.name, name))
            .await?
            .0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn status_lists_are_read_in_every_known_shape() {
        let bare = json!([{"id": 1, "name": "New"}, {"id": "4", "status": "On Hold"}]);
        let wrapped = json!({"data": [{"id": 1, "title": "New"}, {"id": 4, "name": "On Hold"}, {"name": "no id"}]});
        let expect = vec![
            InstallStatus {
                id: 1,
                name: "New".into(),
            },
            InstallStatus {
                id: 4,
                name: "On Hold".into(),
            },
        ];
        assert_eq!(parse_statuses(&bare), expect);
        assert_eq!(parse_statuses(&wrapped), expect);
        assert!(parse_statuses(&json!({"message": "nope"})).is_empty());
    }

    #[test]
    fn names_match_case_and_blank_insensitively() {
        assert!(same_name(" on  hold", "On Hold"));
        assert!(!same_name("On Hold", "Onhold"));
        assert!(name_in("VOIDED", &["Void".into(), "Voided".into()]));
    }

    struct Counting {
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl EnerfloApi for Counting {
        async fn send(
            &self,
            _m: Method,
            path: &str,
            _b: Option<&Value>,
            _budget: Duration,
        ) -> Result<ApiResponse, EnerfloError> {
            assert_eq!(path, "/api/v3/install-statuses");
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(ApiResponse {
                status: 200,
                body: json!({"data": [{"id": 6, "name": "Completed"}]}),
            })
        }
    }

    #[tokio::test]
    async fn the_status_list_is_cached_and_a_miss_refreshes_at_most_every_30s() {
        let api = Counting {
            calls: AtomicUsize::new(0),
        };
        let catalog = StatusCatalog::default();
        let b = Duration::from_secs(1);
        let hit = catalog.by_name(&api, "completed", b).await.expect("list");
        assert_eq!(hit.map(|s| s.id), Some(6));
        let by_id = catalog.by_id(&api, 6, b).await.expect("list");
        assert_eq!(by_id.map(|s| s.name).as_deref(), Some("Completed"));
        // Misses within the refresh window do not call Enerflo again.
        for _ in 0..5 {
            assert!(
                catalog
                    .by_name(&api, "Nope", b)
                    .await
                    .expect("list")
                    .is_none()
            );
        }
        assert!(catalog.by_id(&api, 99, b).await.expect("list").is_none());
        assert_eq!(api.calls.load(Ordering::SeqCst), 1);
    }
}
