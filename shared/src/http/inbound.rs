//! Helpers every inbound (CRM -> Enerflo) route shares: JSON body parsing, `{install}`
//! resolution through the cross-reference table, and Enerflo failures as problem+json.

// A `Problem` is the whole answer of a failed request, built once per request: its size is not
// worth boxing for.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use http::StatusCode;
use serde_json::{Map, Value};

use super::{HttpRequest, Problem};
use crate::enerflo::EnerfloError;
use crate::error::StoreError;
use crate::ids::InstallId;
use crate::store::{EntityKind, EntityLink, IdForm, IdRef, XrefStore};

/// The body as a JSON object, or a 400 naming what is wrong.
pub fn json_object(req: &HttpRequest) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::bad_request("The body must be a JSON object.")),
        Err(_) => Err(Problem::bad_request("The body is not valid JSON.")),
    }
}

/// An install addressed by a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallTarget {
    pub install_id: u64,
    /// The cross-reference entity, when the install is linked.
    pub link: Option<EntityLink>,
}

/// Resolves `{install}`: `enerflo:<id>` addresses Enerflo's install id directly; anything else is
/// the CRM's project id, looked up in the cross-reference table. Unlinked -> 404; a failed lookup
/// -> 503 (never "not found", docs/peer-lessons.md 8).
pub async fn resolve_install(xref: &dyn XrefStore, raw: &str) -> Result<InstallTarget, Problem> {
    if let Some(id) = raw.strip_prefix("enerflo:") {
        let install_id = InstallId::parse(id)
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "unknown-install",
                    "Not Found",
                    "`enerflo:` must be followed by a numeric Enerflo install id.",
                )
            })?
            .get();
        let link = xref
            .resolve(
                EntityKind::Project,
                &IdRef::new(IdForm::Install, install_id),
            )
            .await
            .map_err(store_problem)?;
        return Ok(InstallTarget { install_id, link });
    }
    let link = xref
        .resolve(EntityKind::Project, &IdRef::new(IdForm::Crm, raw))
        .await
        .map_err(store_problem)?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unlinked-install",
                "Not Found",
                "No Enerflo install is linked to this CRM project id; use `enerflo:<install id>` or sync the project first.",
            )
        })?;
    let install_id = link
        .id(IdForm::Install)
        .and_then(|v| InstallId::parse(&v))
        .map(InstallId::get)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "unlinked-install",
                "Not Found",
                "The CRM project is linked to an Enerflo deal whose install does not exist yet.",
            )
        })?;
    Ok(InstallTarget {
        install_id,
        link: Some(link),
    })
}

pub fn store_problem(e: StoreError) -> Problem {
    tracing::error!(error = %e, "state store failed on an inbound route");
    Problem::unavailable("State store unavailable; retry.", Duration::from_secs(5))
}

/// Enerflo's failure as the caller's answer: 429 and 5xx/timeouts keep `Retry-After`; a 4xx
/// rejection of the caller's own input is passed back (docs/design.md 3.5) as 422.
pub fn enerflo_problem(e: EnerfloError) -> Problem {
    match e {
        EnerfloError::RateLimited { retry_after } => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "enerflo-rate-limited",
            "Too Many Requests",
            "Enerflo is rate limiting this integration; retry later.",
        )
        .with_retry_after(retry_after.unwrap_or(Duration::from_secs(30))),
        EnerfloError::Unavailable {
            status,
            retry_after,
            ..
        } => {
            let (code, slug) = match status {
                Some(s) if s >= 500 => (StatusCode::BAD_GATEWAY, "enerflo-error"),
                _ => (StatusCode::SERVICE_UNAVAILABLE, "enerflo-unavailable"),
            };
            Problem::new(
                code,
                slug,
                if code == StatusCode::BAD_GATEWAY {
                    "Bad Gateway"
                } else {
                    "Service Unavailable"
                },
                match status {
                    Some(s) => format!("Enerflo answered {s}; retry later."),
                    None => "Enerflo did not answer in time; retry later.".to_owned(),
                },
            )
            .with_retry_after(retry_after.unwrap_or(Duration::from_secs(30)))
        }
        EnerfloError::Rejected { status, message } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "enerflo-rejected",
            "Unprocessable Content",
            format!("Enerflo rejected the request ({status}): {message}"),
        ),
        EnerfloError::NotFound { .. } => Problem::new(
            StatusCode::NOT_FOUND,
            "enerflo-not-found",
            "Not Found",
            "Enerflo has no such record.",
        ),
        EnerfloError::BadBody { status, .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "enerflo-bad-response",
            "Bad Gateway",
            format!("Enerflo answered {status} with a body that is not JSON."),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn an_enerflo_install_address_takes_digits_only() {
        let store = EmbeddedStore::in_memory().unwrap();
        let target = resolve_install(&store, "enerflo: 700001 ").await.unwrap();
        assert_eq!(target.install_id, 700001);
        assert_eq!(target.link, None);
        for bad in [
            "enerflo:",
            "enerflo:7x",
            "enerflo:+7",
            "enerflo:-7",
            "enerflo:7.0",
        ] {
            let problem = resolve_install(&store, bad).await.expect_err(bad);
            let resp = problem.into_response();
            assert_eq!(resp.status, StatusCode::NOT_FOUND, "{bad}");
            assert_eq!(
                resp.body_json()["type"],
                "urn:enerflo-crm-sync:problem:unknown-install",
                "{bad}"
            );
        }
    }
}
