//! The events the orchestrator emits: `workflow-state-changed`, written to
//! the outbox in the transaction of the change it announces.

use omninode_proto::events::v1::{WorkflowStateChanged, event_envelope::Payload};
use omninode_runtime::{
    convert::{to_timestamp, workflow_state_to_proto},
    events::{EventKind, NewEvent},
};

use crate::domain::{WorkflowState, definition::BUILT_IN, workflow::Workflow};

/// The `workflow-state-changed` event of `workflow` arriving in its state.
pub(crate) fn state_changed(workflow: &Workflow, from: Option<WorkflowState>) -> NewEvent {
    let to_proto = |state: WorkflowState| workflow_state_to_proto(state) as i32;
    let last = workflow.transitions.last();
    let reason = last.map(|t| t.reason.clone()).unwrap_or_default();
    let actor = last.map(|t| t.actor.clone()).unwrap_or_default();
    // An approval's decision names the step it decided (the cursor has moved past it).
    let step = match (from, workflow.state) {
        (Some(WorkflowState::Waiting), WorkflowState::Pending | WorkflowState::Failed) if !actor.is_empty() => {
            workflow.steps.last().map(|s| s.name.clone())
        }
        _ => workflow.current_step.clone(),
    };
    let at = workflow.updated_at;
    NewEvent {
        kind: EventKind::WorkflowStateChanged,
        namespace: workflow.namespace.clone(),
        partition_key: workflow.id.clone(),
        correlation_id: workflow.correlation_id.clone(),
        causation_id: None,
        trace_context: omninode_runtime::trace::stored_context(),
        payload: Payload::WorkflowStateChanged(WorkflowStateChanged {
            workflow_id: workflow.id.clone(),
            from_state: from.map(to_proto).unwrap_or_default(),
            to_state: to_proto(workflow.state),
            reason,
            file_hash: workflow.file_hash.clone().unwrap_or_default(),
            stamp_id: workflow.stamp_id.clone().unwrap_or_default(),
            changed_at: Some(to_timestamp(at)),
            step: step.unwrap_or_default(),
            actor,
            definition: workflow.definition.clone().unwrap_or_else(|| BUILT_IN.to_owned()),
            waiting_for: match workflow.state {
                WorkflowState::Waiting => workflow.waiting_for.unwrap_or_default().to_owned(),
                _ => String::new(),
            },
        }),
    }
}
