//! The failure taxonomy every boundary understands: retry later, dead-letter with a reason, or
//! (on HTTP) a problem+json answer. Causes are kept as sources, never flattened into strings.

use std::time::Duration;

/// Why a piece of work did not complete, classified for the boundary that has to decide what to do.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Worth retrying: timeouts, 429, 5xx, an unreachable table or queue, an install not created yet.
    #[error("transient: {reason}")]
    Transient {
        reason: String,
        /// Earliest sensible retry, when the other side said (`Retry-After`).
        retry_after: Option<Duration>,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Retrying cannot help: malformed event, a 4xx rejection, a mapping that lacks its entity id.
    #[error("permanent: {reason}")]
    Permanent {
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl SyncError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after: None,
            source: None,
        }
    }

    pub fn transient_after(reason: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after,
            source: None,
        }
    }

    pub fn transient_from(
        reason: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after: None,
            source: Some(Box::new(source)),
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
            source: None,
        }
    }

    pub fn permanent_from(
        reason: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Permanent {
            reason: reason.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            Self::Permanent { .. } => None,
        }
    }

    /// The reason for a log line: [`describe`](Self::describe) without what another system
    /// answered ([`RemoteAnswer`]), which may quote the customer data we sent it.
    pub fn log_reason(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            if cause.downcast_ref::<RemoteAnswer>().is_none() {
                out.push_str(": ");
                out.push_str(&cause.to_string());
            }
            source = cause.source();
        }
        out
    }

    /// The reason with its chain of causes, for a DLQ entry or the event log.
    pub fn describe(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            source = cause.source();
        }
        out
    }
}

/// What another system answered to a failed call (its error body, as text). It may quote the
/// customer data we sent, so it rides as the cause of a [`SyncError`]: in the DLQ reason and the
/// event log (which hold the event itself anyway), never in a log line
/// ([`SyncError::log_reason`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RemoteAnswer(pub String);

impl RemoteAnswer {
    /// The answer as a cause, when there is one.
    pub fn boxed(text: Option<&str>) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        text.filter(|t| !t.trim().is_empty())
            .map(|t| Box::new(Self(t.to_owned())) as Box<dyn std::error::Error + Send + Sync>)
    }
}

/// Errors from a store or queue adapter. `Unavailable` is never to be read as "not found".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("store rejected the request: {0}")]
    Invalid(String),
    #[error("concurrent update of {0}; retry")]
    Conflict(String),
}

impl StoreError {
    pub fn unavailable(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl From<StoreError> for SyncError {
    fn from(err: StoreError) -> Self {
        // Every store failure is worth a retry: an invalid item is a bug we want to see in the DLQ
        // only after the retry budget, with the reason intact.
        let reason = format!("state store: {err}");
        SyncError::Transient {
            reason,
            retry_after: None,
            source: Some(Box::new(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::CrmError;
    use crate::enerflo::EnerfloError;

    const QUOTED: &str = "Contact Pat Placeholder <pat@example.com> already exists";

    #[test]
    fn a_crm_answer_reaches_the_dlq_reason_but_not_the_log_reason() {
        let err: SyncError = CrmError::Rejected {
            status: 422,
            message: QUOTED.into(),
        }
        .into();
        assert_eq!(
            err.describe(),
            format!("permanent: CRM rejected the event with 422: {QUOTED}")
        );
        assert_eq!(
            err.log_reason(),
            "permanent: CRM rejected the event with 422"
        );

        let err: SyncError = CrmError::Unavailable {
            status: Some(503),
            detail: QUOTED.into(),
            retry_after: None,
        }
        .into();
        assert!(
            err.describe()
                .starts_with("transient: CRM unavailable: HTTP 503: Contact")
        );
        assert_eq!(err.log_reason(), "transient: CRM unavailable: HTTP 503");
    }

    #[test]
    fn an_enerflo_answer_is_never_in_the_error_text_logs_print() {
        for e in [
            EnerfloError::Rejected {
                status: 422,
                message: QUOTED.into(),
            },
            EnerfloError::Unavailable {
                status: Some(502),
                detail: QUOTED.into(),
                retry_after: None,
            },
            EnerfloError::BadBody {
                status: 200,
                problem: crate::enerflo::client::BodyProblem::NotJson {
                    content_type: Some("text/html".into()),
                },
                snippet: QUOTED.into(),
            },
        ] {
            assert!(!e.to_string().contains("Pat"), "{e}");
            assert_eq!(e.answer(), Some(QUOTED));
            let err = SyncError::from(e);
            assert!(err.describe().ends_with(QUOTED), "{}", err.describe());
            assert!(!err.log_reason().contains("Pat"), "{}", err.log_reason());
        }
        // Without an answer (a timeout), the detail is ours and is logged.
        let timeout = EnerfloError::Unavailable {
            status: None,
            detail: "request timed out".into(),
            retry_after: None,
        };
        assert_eq!(
            timeout.to_string(),
            "Enerflo unavailable (request timed out)"
        );
        assert_eq!(timeout.answer(), None);
    }

    #[test]
    fn other_causes_stay_in_the_log_reason() {
        let err = SyncError::transient_from("lookup failed", StoreError::Invalid("item x".into()));
        assert_eq!(err.log_reason(), err.describe());
    }
}
