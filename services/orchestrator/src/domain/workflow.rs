//! A workflow as the engine sees it: input, state, steps and transitions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use omninode_core::{IllegalTransition, StampFormat, WorkflowState, time::now};

/// The one workflow type the orchestrator runs today.
pub const STAMPING_WORKFLOW: &str = "metadata_stamping";

/// Step names, in the order they run.
pub mod step {
    pub const VALIDATE_INPUT: &str = "validate_input";
    pub const HASH_GENERATION: &str = "hash_generation";
    pub const STAMP_CREATION: &str = "stamp_creation";
    pub const INTELLIGENCE: &str = "onextree_intelligence";
    /// Not a step of the pipeline: marks where a workflow was picked up again after a restart.
    pub const RESUME: &str = "resume";
}

/// What a workflow stamps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowInput {
    pub content: String,
    pub file_path: String,
    pub content_type: String,
    pub format: StampFormat,
    pub enable_intelligence: bool,
    pub context: BTreeMap<String, String>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepOutcome {
    Succeeded,
    Failed,
    Skipped,
    /// Failed without failing the workflow.
    Degraded,
    Cancelled,
}

/// One recorded step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub outcome: StepOutcome,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The orchestrator instance (lease owner) that ran the step.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: WorkflowState,
    pub to: WorkflowState,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A workflow and everything recorded about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    pub id: String,
    pub namespace: String,
    pub workflow_type: String,
    pub state: WorkflowState,
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub input_hash: String,
    pub input: WorkflowInput,
    pub file_hash: Option<String>,
    pub stamp_id: Option<String>,
    pub stamped_content: Option<String>,
    pub error_message: Option<String>,
    pub steps: Vec<StepRecord>,
    pub transitions: Vec<Transition>,
    pub intelligence_data: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub execution_time_ms: Option<u64>,
    /// Incremented by every stored change.
    pub version: i32,
}

impl Workflow {
    /// A new stamping workflow, PENDING, nothing run yet; `id` is a UUID v7.
    pub fn pending(namespace: String, input: WorkflowInput, input_hash: String) -> Self {
        let now = now();
        Workflow {
            id: uuid::Uuid::now_v7().to_string(),
            namespace,
            workflow_type: STAMPING_WORKFLOW.to_owned(),
            state: WorkflowState::Pending,
            correlation_id: None,
            idempotency_key: None,
            input_hash,
            input,
            file_hash: None,
            stamp_id: None,
            stamped_content: None,
            error_message: None,
            steps: Vec::new(),
            transitions: Vec::new(),
            intelligence_data: None,
            created_at: now,
            started_at: None,
            completed_at: None,
            updated_at: now,
            execution_time_ms: None,
            version: 1,
        }
    }

    /// Moves the workflow to `to`, recording why; refuses an illegal move.
    pub fn transition(&mut self, to: WorkflowState, reason: impl Into<String>) -> Result<(), IllegalTransition> {
        self.state.check_transition(to)?;
        let now = now();
        let reason = reason.into();
        self.transitions.push(Transition { from: self.state, to, at: now, reason: reason.clone() });
        match to {
            WorkflowState::Processing => self.started_at = Some(now),
            WorkflowState::Failed | WorkflowState::Cancelled => self.error_message = Some(reason),
            _ => {}
        }
        if to.is_terminal() {
            self.completed_at = Some(now);
            let since = self.started_at.unwrap_or(self.created_at);
            self.execution_time_ms = Some((now - since).num_milliseconds().max(0) as u64);
        }
        self.state = to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_recorded_and_terminal_ones_close_the_workflow() {
        let mut wf = Workflow::pending("n".into(), WorkflowInput::default(), String::new());
        wf.transition(WorkflowState::Processing, "").unwrap();
        assert!(wf.started_at.is_some() && wf.completed_at.is_none());
        wf.transition(WorkflowState::Failed, "stamping unavailable").unwrap();
        assert_eq!(wf.error_message.as_deref(), Some("stamping unavailable"));
        assert!(wf.completed_at.is_some() && wf.execution_time_ms.is_some());
        assert_eq!(wf.transitions.len(), 2);
        let err = wf.transition(WorkflowState::Completed, "").unwrap_err();
        assert_eq!((err.from, err.to), (WorkflowState::Failed, WorkflowState::Completed));
        assert_eq!(wf.state, WorkflowState::Failed, "a refused move changes nothing");
        assert_eq!(wf.transitions.len(), 2);
    }
}
