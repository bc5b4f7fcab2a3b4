//! Running a definition's steps, in order, from the workflow's cursor. Each
//! finished step is stored with its output before the next starts (an HTTP
//! call is not idempotent, so progress is durable step by step; a step
//! interrupted by a crash runs again — at least once). An approval or a
//! timer step stores the workflow WAITING with its wake time and ends the
//! worker: no worker and no lease hold a waiting workflow. A claimer wakes
//! it when the time comes (the timer fires, the approval times out) and an
//! approval queues it again (see [`super::signals`]).

use std::{sync::Arc, time::Duration, time::Instant};

use chrono::{DateTime, Utc};
use omninode_core::time::now;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    WorkflowEngine,
    runner::{Attempted, Budget, Flow, step_record},
};
use crate::{
    clients::CallError,
    domain::{
        WorkflowState,
        definition::{Definition, StepDefinition, StepKind, TimerWait},
        retry::RetryPolicy,
        template::{Target, render},
        workflow::{StepOutcome, StepRecord, Workflow, WorkflowInput, step},
    },
    error::OrchestratorError,
};

impl WorkflowEngine {
    /// The definition `workflow` runs (read once per process: versions are immutable).
    pub(super) async fn pinned(&self, workflow: &Workflow) -> Result<Arc<Definition>, OrchestratorError> {
        let reference = workflow.definition.as_deref().unwrap_or_default();
        if let Some(found) = self.inner.definitions.lock().expect("definitions cache").get(reference) {
            return Ok(found.clone());
        }
        let definition = Arc::new(self.definition(reference).await?);
        self.inner.definitions.lock().expect("definitions cache").insert(reference.to_owned(), definition.clone());
        Ok(definition)
    }

    /// Runs a definition's workflow from where it is until it ends or waits.
    pub(super) async fn flow(
        &self,
        workflow: &mut Workflow,
        token: &CancellationToken,
    ) -> Result<(), OrchestratorError> {
        let definition = match self.pinned(workflow).await {
            Ok(definition) => definition,
            Err(OrchestratorError::Store(err)) => return Err(OrchestratorError::Store(err)),
            Err(err) => return self.end(workflow, WorkflowState::Failed, format!("cannot run: {err}")).await.map(drop),
        };
        match workflow.state {
            WorkflowState::Pending => {
                let from = workflow.state;
                workflow.transition(WorkflowState::Processing, "")?;
                if let Flow::Stop = self.save(workflow, from).await? {
                    return Ok(());
                }
            }
            WorkflowState::Processing => {
                let note = format!(
                    "picked up by {} after its previous owner stopped; the step it was at runs again",
                    self.inner.owner
                );
                workflow.steps.push(StepRecord::new(step::RESUME, StepOutcome::Succeeded, now(), 0, 1, note));
            }
            WorkflowState::Waiting => {
                if let Flow::Stop = self.wake(workflow, &definition).await? {
                    return Ok(());
                }
            }
            _ => return Ok(()),
        }
        while let Some(step) = definition.steps.get(workflow.cursor as usize) {
            let flow = match &step.kind {
                StepKind::Approval { .. } => return self.wait(workflow, step, approval_deadline(workflow, step)).await,
                StepKind::Timer(wait) => match fire_time(workflow, wait) {
                    at if at > now() => return self.wait(workflow, step, Some(at)).await,
                    _ => self.fire_timer(workflow, &definition, WorkflowState::Processing).await?,
                },
                _ => self.work(workflow, &definition, token).await?,
            };
            if let Flow::Stop = flow {
                return Ok(());
            }
        }
        self.end(workflow, WorkflowState::Completed, "").await.map(drop)
    }

    /// A claimed WAITING workflow whose time came: its timer fires, or its
    /// approval times out (the workflow fails).
    async fn wake(&self, workflow: &mut Workflow, definition: &Definition) -> Result<Flow, OrchestratorError> {
        let Some(step) = definition.steps.get(workflow.cursor as usize) else {
            return self.end(workflow, WorkflowState::Failed, "waiting past the last step").await;
        };
        match &step.kind {
            StepKind::Timer(_) => self.fire_timer(workflow, definition, WorkflowState::Waiting).await,
            StepKind::Approval { .. } => {
                let waited = waiting_since(workflow);
                let message = format!("no decision within {} ms (timeout_ms)", step.timeout_ms.unwrap_or_default());
                let mut record = StepRecord::new(
                    &step.name,
                    StepOutcome::Failed,
                    waited,
                    (now() - waited).num_milliseconds().max(0) as u64,
                    1,
                    message.clone(),
                );
                record.output = Some(json!({"approved": false, "timed_out": true}));
                workflow.steps.push(record);
                let reason = format!("approval step {} timed out: {message}", step.name);
                // Stored or overtaken by another writer: either way nothing more runs here.
                let _ = self.end(workflow, WorkflowState::Failed, reason).await?;
                Ok(Flow::Stop)
            }
            // Not a waiting step (cannot happen with an immutable definition): run on.
            _ => {
                let from = workflow.state;
                workflow.transition(WorkflowState::Processing, "")?;
                self.save(workflow, from).await
            }
        }
    }

    /// Stores the workflow WAITING on `step` until `until` (or a decision),
    /// holding no lease; the worker ends.
    async fn wait(
        &self,
        workflow: &mut Workflow,
        step: &StepDefinition,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), OrchestratorError> {
        let reason = match (&step.kind, until) {
            (StepKind::Approval { .. }, Some(at)) => {
                format!("step {} waits for an approval until {}", step.name, at.to_rfc3339())
            }
            (StepKind::Approval { .. }, None) => format!("step {} waits for an approval", step.name),
            (_, at) => {
                format!("timer step {} waits until {}", step.name, at.map(|at| at.to_rfc3339()).unwrap_or_default())
            }
        };
        workflow.wake_at = until;
        workflow.waiting_for = Some(step.kind.name());
        let from = workflow.state;
        workflow.transition(WorkflowState::Waiting, reason)?;
        let _ = self.save(workflow, from).await?;
        Ok(())
    }

    /// Records the timer step at the cursor as fired and moves on (from
    /// `from`: PROCESSING when it was already due, WAITING when woken).
    async fn fire_timer(
        &self,
        workflow: &mut Workflow,
        definition: &Definition,
        from: WorkflowState,
    ) -> Result<Flow, OrchestratorError> {
        let step = &definition.steps[workflow.cursor as usize];
        let (fired, since) = (now(), waiting_since(workflow));
        let waited = (fired - since).num_milliseconds().max(0) as u64;
        let mut record = StepRecord::new(&step.name, StepOutcome::Succeeded, since, waited, 1, String::new());
        record.output = Some(json!({"fired_at": fired.to_rfc3339()}));
        workflow.steps.push(record);
        advance(workflow, definition);
        if from != WorkflowState::Processing {
            workflow.transition(WorkflowState::Processing, format!("timer step {} fired", step.name))?;
        }
        self.save(workflow, from).await
    }

    /// Runs a working step (hash, stamp, http, llm) with its retries and
    /// stores the outcome: the output and the next cursor, or the failure.
    async fn work(
        &self,
        workflow: &mut Workflow,
        definition: &Definition,
        token: &CancellationToken,
    ) -> Result<Flow, OrchestratorError> {
        let step = &definition.steps[workflow.cursor as usize];
        let started = (now(), Instant::now());
        let budget = self.step_budget(step);
        let (tries, result) = {
            use tracing::Instrument;
            let snapshot = &*workflow;
            let span = super::runner::step_span(snapshot, &step.name);
            self.with_retries(token, &budget, || self.call(snapshot, step)).instrument(span).await
        };
        match result {
            Attempted::Done(output) => {
                match &step.kind {
                    StepKind::Hash => workflow.file_hash = output["file_hash"].as_str().map(str::to_owned),
                    StepKind::Stamp { .. } => {
                        workflow.file_hash = output["file_hash"].as_str().map(str::to_owned);
                        workflow.stamp_id = output["stamp_id"].as_str().map(str::to_owned);
                        workflow.stamped_content = output["stamped_content"].as_str().map(str::to_owned);
                    }
                    _ => {}
                }
                let mut record = step_record(&step.name, StepOutcome::Succeeded, started, tries, String::new());
                record.output = Some(output);
                workflow.steps.push(record);
                advance(workflow, definition);
                self.save(workflow, WorkflowState::Processing).await
            }
            Attempted::Failed(message) => {
                let reason = format!("step {} failed after {} attempt(s): {message}", step.name, tries.len());
                workflow.steps.push(step_record(&step.name, StepOutcome::Failed, started, tries, message));
                let _ = self.end(workflow, WorkflowState::Failed, reason).await?;
                Ok(Flow::Stop)
            }
            Attempted::Cancelled => Ok(Flow::Stop),
        }
    }

    /// One attempt of a working step; its output.
    async fn call(&self, workflow: &Workflow, step: &StepDefinition) -> Result<Value, CallError> {
        let render = |text: &str, target| {
            render(text, workflow, target).map_err(|e| CallError::permanent(format!("template: {e}")))
        };
        match &step.kind {
            StepKind::Hash => {
                let hash = self.inner.stamping.hash(&workflow.input.content).await?;
                Ok(json!({"file_hash": hash}))
            }
            StepKind::Stamp { format } => {
                let input = WorkflowInput { format: *format, ..workflow.input.clone() };
                // One stamp per workflow and step, however often the step runs.
                let key = format!("{}:{}", omninode_core::stamp::workflow_idempotency_key(&workflow.id), step.name);
                let correlation = workflow.correlation_id.clone().unwrap_or_default();
                let stamp = self.inner.stamping.stamp(&workflow.namespace, &input, &key, &correlation).await?;
                Ok(json!({
                    "stamp_id": stamp.stamp_id,
                    "file_hash": stamp.file_hash,
                    "stamped_content": stamp.stamped_content,
                }))
            }
            StepKind::Http { method, url, headers, body } => {
                let url = render(url, Target::Url)?;
                let headers = headers
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), render(value, Target::Text)?)))
                    .collect::<Result<_, CallError>>()?;
                let body = render(body, Target::Json)?;
                let answer = self.inner.http.call(method, &url, &headers, body).await?;
                Ok(json!({"status": answer.status, "body": answer.body}))
            }
            StepKind::Llm { model, prompt, system } => {
                let Some(llm) = &self.inner.llm else {
                    return Err(CallError::permanent("no chat-completions endpoint is configured (LLM_BASE_URL)"));
                };
                let answer = llm.ask(model, &render(system, Target::Text)?, &render(prompt, Target::Text)?).await?;
                Ok(Value::String(answer))
            }
            StepKind::Approval { .. } | StepKind::Timer(_) => {
                Err(CallError::permanent(format!("a {} step does no work", step.kind.name())))
            }
        }
    }

    /// A step's retries and attempt limit: its own, else the orchestrator's.
    fn step_budget(&self, step: &StepDefinition) -> Budget {
        let mut budget = self.budget();
        if let Some(ms) = step.timeout_ms {
            budget.timeout = Duration::from_millis(u64::from(ms));
            budget.timeout_source = "the step's timeout_ms";
        }
        if let Some(retry) = step.retry {
            budget.policy = RetryPolicy {
                max_attempts: retry.max_attempts,
                base_delay: Duration::from_millis(u64::from(retry.initial_backoff_ms)),
                max_delay: Duration::from_millis(u64::from(retry.max_backoff_ms)),
            };
        }
        budget
    }
}

/// Moves the workflow to the step after the one at its cursor (its wait, if
/// any, is over).
pub(super) fn advance(workflow: &mut Workflow, definition: &Definition) {
    workflow.cursor += 1;
    workflow.current_step = definition.steps.get(workflow.cursor as usize).map(|s| s.name.clone());
    workflow.wake_at = None;
}

/// When an approval step times out: the deadline it already has (it was
/// paused while waiting), else its timeout from now; none without a timeout.
fn approval_deadline(workflow: &Workflow, step: &StepDefinition) -> Option<DateTime<Utc>> {
    workflow.wake_at.or_else(|| step.timeout_ms.map(|ms| now() + chrono::Duration::milliseconds(i64::from(ms))))
}

/// When a timer step fires: the time it already has (it was paused while
/// waiting), else its duration from now, or its fixed time.
fn fire_time(workflow: &Workflow, wait: &TimerWait) -> DateTime<Utc> {
    workflow.wake_at.unwrap_or_else(|| match wait {
        TimerWait::Duration { ms } => {
            now() + chrono::Duration::milliseconds(i64::try_from(*ms).unwrap_or(i64::MAX / 2))
        }
        TimerWait::Until { at } => *at,
    })
}

/// When the workflow last started waiting (now, if it never did).
pub(super) fn waiting_since(workflow: &Workflow) -> DateTime<Utc> {
    workflow.transitions.iter().rev().find(|t| t.to == WorkflowState::Waiting).map_or_else(now, |t| t.at)
}
