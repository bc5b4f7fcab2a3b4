//! Every way an orchestrator call can fail, and its code and reason (the
//! conversions to gRPC and HTTP are `omninode_runtime::error`'s).

use omninode_core::limits;
use omninode_core::{IllegalTransition, WorkflowState};
use omninode_runtime::{ErrorCode, ServiceError, reason};

/// An orchestrator failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrchestratorError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NamespaceInvalid(String),
    #[error("no workflow {0}")]
    NotFound(String),
    #[error("no workflow definition {0}")]
    DefinitionNotFound(String),
    #[error("step_name: definition {definition} has no step {step:?}")]
    StepNotFound { workflow_id: String, definition: String, step: String },
    #[error("the workflow queue is full ({0} waiting; MAX_WORKFLOW_QUEUE_SIZE); retry later")]
    QueueFull(usize),
    #[error("workflow {id} is already {state}")]
    AlreadyTerminal { id: String, state: WorkflowState },
    #[error(
        "idempotency key {key:?} was already used in namespace {namespace} for workflow {workflow_id} with different input"
    )]
    IdempotencyConflict { namespace: String, key: String, workflow_id: String },
    /// A signal the workflow's current state does not allow.
    #[error("workflow {id} is {state}: {why}")]
    WrongState { id: String, state: WorkflowState, why: String },
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

impl ServiceError for OrchestratorError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Validation(_) => reason::VALIDATION_ERROR,
            Self::NamespaceInvalid(_) => reason::NAMESPACE_INVALID,
            Self::NotFound(_) => reason::WORKFLOW_NOT_FOUND,
            Self::DefinitionNotFound(_) => reason::DEFINITION_NOT_FOUND,
            Self::StepNotFound { .. } => reason::STEP_NOT_FOUND,
            Self::QueueFull(_) => reason::QUEUE_FULL,
            Self::AlreadyTerminal { .. } => reason::WORKFLOW_TERMINAL,
            Self::IdempotencyConflict { .. } => reason::OPERATION_ID_CONFLICT,
            Self::WrongState { .. } => reason::WRONG_WORKFLOW_STATE,
            Self::IllegalTransition(_) => reason::ILLEGAL_TRANSITION,
            Self::Timeout(_) => reason::WORKFLOW_TIMEOUT,
            Self::ShuttingDown => reason::SHUTTING_DOWN,
            Self::Store(_) => reason::STORE_UNAVAILABLE,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            Self::Validation(_) | Self::NamespaceInvalid(_) => ErrorCode::InvalidArgument,
            Self::NotFound(_) | Self::DefinitionNotFound(_) | Self::StepNotFound { .. } => ErrorCode::NotFound,
            Self::QueueFull(_) => ErrorCode::ResourceExhausted,
            Self::AlreadyTerminal { .. } | Self::WrongState { .. } | Self::IllegalTransition(_) => {
                ErrorCode::FailedPrecondition
            }
            Self::IdempotencyConflict { .. } => ErrorCode::AlreadyExists,
            Self::Timeout(_) => ErrorCode::DeadlineExceeded,
            Self::ShuttingDown | Self::Store(_) => ErrorCode::Unavailable,
        }
    }

    fn public_message(&self) -> String {
        match self {
            Self::Store(_) => "the workflow store is unavailable; retry later".to_owned(),
            other => other.to_string(),
        }
    }

    fn error_metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::NotFound(id) | Self::Timeout(id) => vec![("workflow_id", id.clone())],
            Self::DefinitionNotFound(name) => vec![("definition", name.clone())],
            Self::StepNotFound { workflow_id, definition, step } => vec![
                ("workflow_id", workflow_id.clone()),
                ("definition", definition.clone()),
                ("step_name", step.clone()),
            ],
            Self::QueueFull(waiting) => vec![("queued", waiting.to_string())],
            Self::AlreadyTerminal { id, state } | Self::WrongState { id, state, .. } => {
                vec![("workflow_id", id.clone()), ("state", state.to_string())]
            }
            Self::IdempotencyConflict { namespace, key, workflow_id } => vec![
                ("namespace", namespace.clone()),
                ("idempotency_key", key.clone()),
                ("workflow_id", workflow_id.clone()),
            ],
            Self::IllegalTransition(illegal) => vec![("transition", illegal.to_string())],
            _ => Vec::new(),
        }
    }
}

omninode_runtime::grpc_status_from!(OrchestratorError);

impl From<sea_orm::DbErr> for OrchestratorError {
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
