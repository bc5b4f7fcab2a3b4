//! Every way a reducer call can fail, and its code and reason (the
//! conversions to gRPC and HTTP are `omninode_runtime::error`'s).

use omninode_core::limits;
use omninode_runtime::{ErrorCode, ServiceError, reason};

/// A reducer failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReducerError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NamespaceInvalid(String),
    #[error("no aggregates for namespace {0} yet")]
    NotFound(String),
    /// Another writer updated the aggregate first; the batch is retried.
    #[error("aggregate of {0} changed concurrently")]
    Conflict(String),
    /// The event input (Kafka) could not be set up.
    #[error("{0}")]
    Dependency(String),
    #[error("aggregate store failure: {0}")]
    Store(String),
}

impl ServiceError for ReducerError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Validation(_) => reason::VALIDATION_ERROR,
            Self::NamespaceInvalid(_) => reason::NAMESPACE_INVALID,
            Self::NotFound(_) => reason::NAMESPACE_NOT_FOUND,
            Self::Conflict(_) => reason::VERSION_MISMATCH,
            Self::Dependency(_) => reason::DEPENDENCY_UNAVAILABLE,
            Self::Store(_) => reason::STORE_UNAVAILABLE,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            Self::Validation(_) | Self::NamespaceInvalid(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) | Self::Dependency(_) | Self::Store(_) => ErrorCode::Unavailable,
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::Store(_) => "the aggregate store is unavailable; retry later".to_owned(),
            other => other.to_string(),
        }
    }

    fn error_metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::NotFound(namespace) | Self::Conflict(namespace) => vec![("namespace", namespace.clone())],
            _ => Vec::new(),
        }
    }
}

omninode_runtime::grpc_status_from!(ReducerError);

impl From<sea_orm::DbErr> for ReducerError {
    fn from(err: sea_orm::DbErr) -> Self {
        // A value the database refused is the caller's input, not an outage.
        if omninode_runtime::db::is_refused_value(&err) {
            return Self::Validation(format!(
                "the store refused a value of the request: {}",
                limits::prefix(&err.to_string(), 200)
            ));
        }
        Self::Store(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_that_cannot_be_reached_is_not_the_callers_mistake() {
        let err = ReducerError::Dependency("cannot create the Kafka consumer".into());
        assert_eq!((err.code(), err.reason()), (ErrorCode::Unavailable, reason::DEPENDENCY_UNAVAILABLE));
    }
}
