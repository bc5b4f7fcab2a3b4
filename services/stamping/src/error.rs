//! Every way a stamping call can fail, and its one mapping onto [`MeshError`].

use omninode_mesh::{ErrorCode, MeshError};

/// A stamping failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StampingError {
    /// A field of the request is not acceptable.
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NamespaceInvalid(String),
    #[error("{0}")]
    InvalidHashFormat(String),
    #[error("no stamp for hash {file_hash} in namespace {namespace}")]
    StampNotFound { namespace: String, file_hash: String },
    #[error("the batch has no items")]
    EmptyBatch,
    #[error("{0}")]
    TooLarge(String),
    #[error("idempotency key {key:?} was already used in namespace {namespace} for content hash {existing_hash}")]
    OperationIdConflict { namespace: String, key: String, existing_hash: String },
    /// The store failed; the message is for logs, not for callers.
    #[error("stamp store failure: {0}")]
    Store(String),
}

impl StampingError {
    /// The stable reason name callers see.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Validation(_) | Self::TooLarge(_) => "VALIDATION_ERROR",
            Self::NamespaceInvalid(_) => "NAMESPACE_INVALID",
            Self::InvalidHashFormat(_) => "INVALID_HASH_FORMAT",
            Self::StampNotFound { .. } => "STAMP_NOT_FOUND",
            Self::EmptyBatch => "EMPTY_BATCH_REQUEST",
            Self::OperationIdConflict { .. } => "OPERATION_ID_CONFLICT",
            Self::Store(_) => "STORE_UNAVAILABLE",
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation(_)
            | Self::NamespaceInvalid(_)
            | Self::InvalidHashFormat(_)
            | Self::EmptyBatch
            | Self::TooLarge(_) => ErrorCode::InvalidArgument,
            Self::StampNotFound { .. } => ErrorCode::NotFound,
            Self::OperationIdConflict { .. } => ErrorCode::AlreadyExists,
            Self::Store(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<StampingError> for MeshError {
    fn from(err: StampingError) -> Self {
        let message = match &err {
            // Internal details stay in the logs.
            StampingError::Store(detail) => {
                tracing::error!(%detail, "stamp store failure");
                "the stamp store is unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        };
        MeshError::new(err.code(), err.reason(), message)
    }
}

impl From<StampingError> for tonic::Status {
    fn from(err: StampingError) -> Self {
        MeshError::from(err).into()
    }
}

impl From<sea_orm::DbErr> for StampingError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Store(err.to_string())
    }
}
