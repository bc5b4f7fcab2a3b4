//! Proto conversions: `omninode.orchestrator.v1` messages to and from the
//! domain's types. The only place that knows both.

use omninode_core::limits;
use omninode_proto::orchestrator::v1 as pb;
use omninode_runtime::convert::{
    stamp_format_from_proto, to_timestamp as timestamp, workflow_state_from_proto, workflow_state_to_proto,
};

use crate::{
    domain::{
        WorkflowState,
        workflow::{StepOutcome, Workflow, WorkflowInput},
    },
    engine::StartRequest,
    error::OrchestratorError,
};

/// A workflow id from a request: it must be a UUID.
pub(crate) fn checked_id(id: &str) -> Result<String, OrchestratorError> {
    uuid::Uuid::parse_str(id)
        .map(|_| id.to_owned())
        .map_err(|_| OrchestratorError::Validation(format!("workflow_id {:?} is not a UUID", limits::prefix(id, 40))))
}

/// The fields StartWorkflow and RunWorkflow share.
pub(crate) fn start_request(
    namespace: String,
    input: Option<pb::WorkflowInput>,
    correlation_id: String,
    idempotency_key: String,
) -> Result<StartRequest, OrchestratorError> {
    let input = input.ok_or_else(|| OrchestratorError::Validation("input is required".into()))?;
    let format = stamp_format_from_proto(input.format).map_err(OrchestratorError::Validation)?.unwrap_or_default();
    Ok(StartRequest {
        namespace,
        input: WorkflowInput {
            content: input.content,
            file_path: input.file_path,
            content_type: input.content_type,
            format,
            enable_intelligence: input.enable_intelligence,
            context: input.context.into_iter().collect(),
        },
        correlation_id: (!correlation_id.is_empty()).then_some(correlation_id),
        idempotency_key: (!idempotency_key.is_empty()).then_some(idempotency_key),
    })
}

/// A ListWorkflows state filter: `None` for unspecified.
pub(crate) fn state_filter(raw: i32) -> Result<Option<WorkflowState>, OrchestratorError> {
    workflow_state_from_proto(raw).map_err(OrchestratorError::Validation)
}

fn outcome_to_proto(outcome: StepOutcome) -> pb::StepOutcome {
    match outcome {
        StepOutcome::Succeeded => pb::StepOutcome::Succeeded,
        StepOutcome::Failed => pb::StepOutcome::Failed,
        StepOutcome::Skipped => pb::StepOutcome::Skipped,
        StepOutcome::Degraded => pb::StepOutcome::Degraded,
        StepOutcome::Cancelled => pb::StepOutcome::Cancelled,
    }
}

/// The proto form of a workflow.
pub fn workflow_to_proto(w: Workflow) -> pb::Workflow {
    pb::Workflow {
        workflow_id: w.id,
        namespace: w.namespace,
        workflow_type: w.workflow_type,
        state: workflow_state_to_proto(w.state) as i32,
        correlation_id: w.correlation_id.unwrap_or_default(),
        idempotency_key: w.idempotency_key.unwrap_or_default(),
        file_path: w.input.file_path,
        file_hash: w.file_hash.unwrap_or_default(),
        stamp_id: w.stamp_id.unwrap_or_default(),
        error_message: w.error_message.unwrap_or_default(),
        steps: w
            .steps
            .into_iter()
            .map(|s| pb::WorkflowStep {
                name: s.name,
                outcome: outcome_to_proto(s.outcome) as i32,
                started_at: Some(timestamp(s.started_at)),
                duration_ms: s.duration_ms,
                attempts: s.attempts,
                message: s.message,
                owner: s.owner,
            })
            .collect(),
        intelligence_data: w.intelligence_data.unwrap_or_default(),
        stamped_content: w.stamped_content.unwrap_or_default(),
        created_at: Some(timestamp(w.created_at)),
        started_at: w.started_at.map(timestamp),
        completed_at: w.completed_at.map(timestamp),
        execution_time_ms: w.execution_time_ms.unwrap_or_default(),
    }
}
