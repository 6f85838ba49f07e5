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
