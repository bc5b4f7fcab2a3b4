//! Every way a reducer call can fail, and its one mapping onto [`MeshError`].

use omninode_mesh::{ErrorCode, MeshError};

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
    #[error("aggregate store failure: {0}")]
    Store(String),
}

impl ReducerError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Validation(_) => "VALIDATION_ERROR",
            Self::NamespaceInvalid(_) => "NAMESPACE_INVALID",
            Self::NotFound(_) => "NAMESPACE_NOT_FOUND",
            Self::Conflict(_) => "VERSION_MISMATCH",
            Self::Store(_) => "STORE_UNAVAILABLE",
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation(_) | Self::NamespaceInvalid(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) | Self::Store(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<ReducerError> for MeshError {
    fn from(err: ReducerError) -> Self {
        let message = match &err {
            ReducerError::Store(detail) => {
                tracing::error!(%detail, "aggregate store failure");
                "the aggregate store is unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        };
        MeshError::new(err.code(), err.reason(), message)
    }
}

impl From<ReducerError> for tonic::Status {
    fn from(err: ReducerError) -> Self {
        MeshError::from(err).into()
    }
}

impl From<sea_orm::DbErr> for ReducerError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Store(err.to_string())
    }
}
