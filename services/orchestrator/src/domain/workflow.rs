//! A workflow as the engine sees it: input, state, steps and transitions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use omninode_core::{IllegalTransition, StampFormat, WorkflowState, time::now};

/// The workflow type of the built-in stamping pipeline (a definition's
/// workflows carry the definition's name).
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

/// One attempt of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// Why it failed; empty when it succeeded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One recorded step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// What a definition's step produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Who decided an approval step.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub actor: String,
    /// Every attempt of a definition's step, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tries: Vec<Attempt>,
}

impl StepRecord {
    /// A record with no output, actor or attempt history.
    pub fn new(
        name: &str,
        outcome: StepOutcome,
        started_at: DateTime<Utc>,
        duration_ms: u64,
        attempts: u32,
        message: String,
    ) -> Self {
        Self {
            name: name.to_owned(),
            outcome,
            started_at,
            duration_ms,
            attempts,
            message,
            owner: String::new(),
            output: None,
            actor: String::new(),
            tries: Vec::new(),
        }
    }
}

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: WorkflowState,
    pub to: WorkflowState,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Who asked for it (approve, reject, retry, pause, resume, cancel).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub actor: String,
}

/// A workflow and everything recorded about it.
#[derive(Debug, Clone, PartialEq)]
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
    /// The definition run (`name@version`); `None` for the built-in stamping pipeline.
    pub definition: Option<String>,
    /// The index of the step a definition's workflow is at.
    pub cursor: u32,
    /// The name of that step (`None` past the last one, and for the built-in pipeline).
    pub current_step: Option<String>,
    /// WAITING: what for ("approval", "timer"); said in the state-change
    /// event, not stored (the definition says it).
    pub waiting_for: Option<&'static str>,
    /// The deadline of the wait at `cursor`: when the timer fires or the
    /// approval times out. Kept through a pause; cleared when the step ends.
    pub wake_at: Option<DateTime<Utc>>,
    /// The trace of the request that started it: every run of its steps, on
    /// any instance, is a span of that trace (`None` when tracing was off).
    pub trace_context: Option<String>,
    /// Where its answers go, when it was started by a request read from Kafka.
    pub reply_to: Option<crate::ingress::ReplyTo>,
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
            definition: None,
            cursor: 0,
            current_step: None,
            waiting_for: None,
            wake_at: None,
            trace_context: omninode_runtime::trace::stored_context(),
            reply_to: None,
        }
    }

    /// The output of the last successful run of step `name`.
    pub fn output_of(&self, name: &str) -> Option<&serde_json::Value> {
        self.steps.iter().rev().find(|s| s.name == name && s.outcome == StepOutcome::Succeeded)?.output.as_ref()
    }

    /// Moves the workflow to `to`, recording why; refuses an illegal move.
    pub fn transition(&mut self, to: WorkflowState, reason: impl Into<String>) -> Result<(), IllegalTransition> {
        self.transition_by(to, reason, "")
    }

    /// [`Workflow::transition`] asked for by `actor`.
    pub fn transition_by(
        &mut self,
        to: WorkflowState,
        reason: impl Into<String>,
        actor: &str,
    ) -> Result<(), IllegalTransition> {
        self.state.check_transition(to)?;
        let now = now();
        let reason = reason.into();
        let from = self.state;
        self.transitions.push(Transition { from, to, at: now, reason: reason.clone(), actor: actor.to_owned() });
        match to {
            WorkflowState::Processing if self.started_at.is_none() => self.started_at = Some(now),
            WorkflowState::Failed | WorkflowState::Cancelled => self.error_message = Some(reason),
            // A retry: the workflow is open again.
            WorkflowState::Pending if from.is_terminal() => {
                self.error_message = None;
                self.completed_at = None;
                self.execution_time_ms = None;
            }
            _ => {}
        }
        if to.is_terminal() {
            // A wait's deadline lasts through a pause, not past the end.
            self.wake_at = None;
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
