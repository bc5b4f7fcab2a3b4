//! Every way a stamping call can fail, and its code and reason (the
//! conversions to gRPC and HTTP are `omninode_runtime::error`'s).

use omninode_core::limits;
use omninode_runtime::{ErrorCode, ServiceError, reason};

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

impl ServiceError for StampingError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Validation(_) | Self::TooLarge(_) => reason::VALIDATION_ERROR,
            Self::NamespaceInvalid(_) => reason::NAMESPACE_INVALID,
            Self::InvalidHashFormat(_) => reason::INVALID_HASH_FORMAT,
            Self::StampNotFound { .. } => reason::STAMP_NOT_FOUND,
            Self::EmptyBatch => reason::EMPTY_BATCH_REQUEST,
            Self::OperationIdConflict { .. } => reason::OPERATION_ID_CONFLICT,
            Self::Store(_) => reason::STORE_UNAVAILABLE,
        }
    }

    fn code(&self) -> ErrorCode {
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

    fn public_message(&self) -> String {
        match self {
            Self::Store(_) => "the stamp store is unavailable; retry later".to_owned(),
            other => other.to_string(),
        }
    }

    fn error_metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::StampNotFound { namespace, file_hash } => {
                vec![("namespace", namespace.clone()), ("file_hash", file_hash.clone())]
            }
            Self::OperationIdConflict { namespace, key, existing_hash } => vec![
                ("namespace", namespace.clone()),
                ("idempotency_key", key.clone()),
                ("file_hash", existing_hash.clone()),
            ],
            _ => Vec::new(),
        }
    }
}

omninode_runtime::grpc_status_from!(StampingError);

impl From<sea_orm::DbErr> for StampingError {
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
