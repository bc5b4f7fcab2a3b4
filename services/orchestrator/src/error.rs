//! Every way an orchestrator call can fail, and its one mapping onto [`MeshError`].

use omninode_mesh::{ErrorCode, MeshError};

use crate::domain::fsm::{IllegalTransition, WorkflowState};

/// An orchestrator failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrchestratorError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NamespaceInvalid(String),
    #[error("no workflow {0}")]
    NotFound(String),
    #[error("the workflow queue is full ({0} waiting; MAX_WORKFLOW_QUEUE_SIZE); retry later")]
    QueueFull(usize),
    #[error("workflow {id} is already {state}")]
    AlreadyTerminal { id: String, state: WorkflowState },
    #[error(
        "idempotency key {key:?} was already used in namespace {namespace} for workflow {workflow_id} with different input"
    )]
    IdempotencyConflict { namespace: String, key: String, workflow_id: String },
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("workflow {0} did not finish in time")]
    Timeout(String),
    #[error("the orchestrator is shutting down")]
    ShuttingDown,
    /// The store failed; the message is for logs, not for callers.
    #[error("workflow store failure: {0}")]
    Store(String),
}

impl OrchestratorError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Validation(_) => "VALIDATION_ERROR",
            Self::NamespaceInvalid(_) => "NAMESPACE_INVALID",
            Self::NotFound(_) => "WORKFLOW_NOT_FOUND",
            Self::QueueFull(_) => "QUEUE_FULL",
            Self::AlreadyTerminal { .. } => "WORKFLOW_TERMINAL",
            Self::IdempotencyConflict { .. } => "OPERATION_ID_CONFLICT",
            Self::IllegalTransition(_) => "ILLEGAL_TRANSITION",
            Self::Timeout(_) => "WORKFLOW_TIMEOUT",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Store(_) => "STORE_UNAVAILABLE",
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Validation(_) | Self::NamespaceInvalid(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::QueueFull(_) => ErrorCode::ResourceExhausted,
            Self::AlreadyTerminal { .. } | Self::IllegalTransition(_) => ErrorCode::FailedPrecondition,
            Self::IdempotencyConflict { .. } => ErrorCode::AlreadyExists,
            Self::Timeout(_) => ErrorCode::DeadlineExceeded,
            Self::ShuttingDown | Self::Store(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<OrchestratorError> for MeshError {
    fn from(err: OrchestratorError) -> Self {
        let message = match &err {
            OrchestratorError::Store(detail) => {
                tracing::error!(%detail, "workflow store failure");
                "the workflow store is unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        };
        MeshError::new(err.code(), err.reason(), message)
    }
}

impl From<OrchestratorError> for tonic::Status {
    fn from(err: OrchestratorError) -> Self {
        MeshError::from(err).into()
    }
}

impl From<sea_orm::DbErr> for OrchestratorError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Store(err.to_string())
    }
}
