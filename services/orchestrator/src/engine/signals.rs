//! Signals from people and clients: approve or reject the approval step a
//! workflow waits on, retry a failed workflow from the step that failed,
//! pause and resume. Each is one conditional write on the state the signal
//! was checked against (no worker is involved, so a signal is applied even
//! while every orchestrator restarts but the one that took it); a lost race
//! reads again. A repeated approval or rejection by the same approver
//! answers with the workflow it already produced: applied once.

use omninode_core::{limits, time::now};
use serde_json::json;

use super::{
    WorkflowEngine,
    flow::{advance, waiting_since},
};
use crate::{
    domain::{
        WorkflowState,
        definition::StepKind,
        workflow::{StepOutcome, StepRecord, Workflow},
    },
    error::OrchestratorError,
    store::Updated,
};

/// A signal to a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Decide the approval step `step`: approve (the workflow runs on) or reject (it fails).
    Decide { step: String, approved: bool, approver: String, comment: String },
    /// FAILED → PENDING: run again from the failed step.
    Retry { reason: String },
    /// PENDING, PROCESSING or WAITING → PAUSED.
    Pause { reason: String },
    /// PAUSED → PENDING.
    Resume { reason: String },
}

impl WorkflowEngine {
    /// Applies `signal` to workflow `id` for `caller` (an authenticated
    /// identity, or `None` when authentication is off).
    pub async fn signal(&self, id: &str, signal: Signal, caller: Option<&str>) -> Result<Workflow, OrchestratorError> {
        check_signal(&signal)?;
        // Another writer (the worker, another signal) may move the workflow
        // between our read and our write: read again then.
        for _ in 0..10 {
            let mut workflow = self.get(id).await?;
            let from = workflow.state;
            match self.apply(&mut workflow, &signal, caller).await? {
                Applied::Already => return Ok(workflow),
                Applied::Changed => {}
            }
            if self.inner.store.update(&mut workflow, from, None).await? != Updated::Written {
                continue;
            }
            if from == WorkflowState::Processing {
                // Paused: interrupt the step; it runs again on resume.
                self.interrupt(id);
            }
            if workflow.state.is_terminal() {
                self.finished(&workflow);
            } else {
                self.publish(&workflow);
            }
            if workflow.state == WorkflowState::Pending {
                self.wake_claimer();
            }
            return Ok(workflow);
        }
        Err(OrchestratorError::Store(format!("workflow {id} kept changing while a signal was applied")))
    }

    /// Changes `workflow` in memory as `signal` asks, or says why not.
    async fn apply(
        &self,
        workflow: &mut Workflow,
        signal: &Signal,
        caller: Option<&str>,
    ) -> Result<Applied, OrchestratorError> {
        let wrong = |workflow: &Workflow, why: String| OrchestratorError::WrongState {
            id: workflow.id.clone(),
            state: workflow.state,
            why,
        };
        let by = |who: &str| match caller {
            Some(caller) if caller != who => format!("{who} ({caller})"),
            _ => who.to_owned(),
        };
        match signal {
            Signal::Decide { step, approved, approver, comment } => {
                let Some(_) = workflow.definition else {
                    return Err(wrong(workflow, "the built-in stamping workflow has no approval steps".into()));
                };
                let definition = self.pinned(workflow).await?;
                let Some((index, step_definition)) = definition.step(step) else {
                    return Err(OrchestratorError::StepNotFound {
                        workflow_id: workflow.id.clone(),
                        definition: definition.reference(),
                        step: limits::prefix(step, 70).to_owned(),
                    });
                };
                // A workflow only ever waits for a decision on an approval step.
                if !matches!(step_definition.kind, StepKind::Approval { .. }) {
                    let why = format!("step {step:?} is a {} step, not an approval", step_definition.kind.name());
                    return Err(wrong(workflow, why));
                }
                let actor = by(approver);
                let waiting_here = workflow.state == WorkflowState::Waiting && workflow.cursor as usize == index;
                if !waiting_here {
                    // The same decision again (a client retrying): already applied.
                    let decided = workflow.steps.iter().rev().find(|s| s.name == *step && !s.actor.is_empty());
                    if decided.is_some_and(|s| s.actor == actor && (s.outcome == StepOutcome::Succeeded) == *approved) {
                        return Ok(Applied::Already);
                    }
                    return Err(wrong(workflow, format!("it is not waiting on approval step {step:?}")));
                }
                let since = waiting_since(workflow);
                let waited = (now() - since).num_milliseconds().max(0) as u64;
                let outcome = if *approved { StepOutcome::Succeeded } else { StepOutcome::Failed };
                let mut record = StepRecord::new(step, outcome, since, waited, 1, comment.clone());
                let mut output = json!({"approved": approved, "approver": approver, "comment": comment});
                if let Some(caller) = caller {
                    output["caller"] = json!(caller);
                }
                record.output = Some(output);
                record.actor.clone_from(&actor);
                workflow.steps.push(record);
                let said = if comment.is_empty() { String::new() } else { format!(": {comment}") };
                if *approved {
                    advance(workflow, &definition);
                    workflow.transition_by(WorkflowState::Pending, format!("step {step} approved{said}"), &actor)?;
                } else {
                    workflow.wake_at = None;
                    workflow.transition_by(WorkflowState::Failed, format!("step {step} rejected{said}"), &actor)?;
                }
            }
            Signal::Retry { reason } => {
                if workflow.state != WorkflowState::Failed {
                    return Err(wrong(workflow, "only a FAILED workflow can be retried".into()));
                }
                let at = match &workflow.current_step {
                    Some(step) => format!(" from step {step}"),
                    None => String::new(),
                };
                workflow.transition_by(
                    WorkflowState::Pending,
                    noted(&format!("retried{at}"), reason),
                    &by_caller(caller),
                )?;
            }
            Signal::Pause { reason } => {
                if !matches!(
                    workflow.state,
                    WorkflowState::Pending | WorkflowState::Processing | WorkflowState::Waiting
                ) {
                    return Err(wrong(workflow, "only a PENDING, PROCESSING or WAITING workflow can be paused".into()));
                }
                workflow.transition_by(WorkflowState::Paused, noted("paused", reason), &by_caller(caller))?;
            }
            Signal::Resume { reason } => {
                if workflow.state != WorkflowState::Paused {
                    return Err(wrong(workflow, "only a PAUSED workflow can be resumed".into()));
                }
                workflow.transition_by(WorkflowState::Pending, noted("resumed", reason), &by_caller(caller))?;
            }
        }
        Ok(Applied::Changed)
    }
}

/// What a signal did to the workflow in memory.
enum Applied {
    Changed,
    /// Nothing to write: the same signal was applied before.
    Already,
}

fn by_caller(caller: Option<&str>) -> String {
    caller.unwrap_or_default().to_owned()
}

fn noted(what: &str, reason: &str) -> String {
    match reason.trim() {
        "" => format!("{what} by request"),
        given => format!("{what}: {given}"),
    }
}

/// Field checks of a signal: what no store can hold, and a named approver.
fn check_signal(signal: &Signal) -> Result<(), OrchestratorError> {
    let validation = OrchestratorError::Validation;
    match signal {
        Signal::Decide { step, approver, comment, .. } => {
            if step.is_empty() {
                return Err(validation("step_name is required".into()));
            }
            limits::check_text("step_name", step, limits::MAX_FIELD).map_err(validation)?;
            if approver.trim().is_empty() {
                return Err(validation("approver is required: who approves or rejects".into()));
            }
            limits::check_text("approver", approver, limits::MAX_FIELD).map_err(validation)?;
            limits::check_note("comment", comment, limits::MAX_NOTE).map_err(validation)
        }
        Signal::Retry { reason } | Signal::Pause { reason } | Signal::Resume { reason } => {
            limits::check_note("reason", reason, limits::MAX_NOTE).map_err(validation)
        }
    }
}
