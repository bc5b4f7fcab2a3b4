//! Running one workflow: the built-in pipeline validate_input →
//! hash_generation → stamp_creation → onextree_intelligence (a definition's
//! steps are [`super::flow`]'s), each step recorded and stored as it ends,
//! with per-attempt timeouts, retries of transient failures, a
//! whole-workflow timeout, and cancellation between and during steps.

use std::{future::Future, sync::atomic::Ordering, time::Duration, time::Instant};

use omninode_core::{limits, time::now, validate::hash_content};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Running, Stored, WorkflowEngine};
use crate::{
    clients::CallError,
    domain::{
        WorkflowState,
        retry::RetryPolicy,
        workflow::{Attempt, StepOutcome, StepRecord, Workflow, step},
    },
    error::OrchestratorError,
    store::{Fence, Updated},
};

/// How an attempted step ended.
pub(super) enum Attempted<T> {
    Done(T),
    Failed(String),
    /// The workflow was cancelled while the step ran.
    Cancelled,
}

/// How patient a step is: its retries and the limit of one attempt.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    pub policy: RetryPolicy,
    pub timeout: Duration,
    /// Where the limit is set, for the message of an attempt that ran out of time.
    pub timeout_source: &'static str,
}

/// Whether the workflow may go on after a store write.
#[must_use]
pub(super) enum Flow {
    Continue,
    /// Another writer (a cancel) moved the workflow: stop quietly.
    Stop,
}

impl WorkflowEngine {
    /// Runs the claimed workflow `id` on a worker holding `slot`, from
    /// `inserted` when this process has just stored it (else as stored);
    /// `stored`: started beside that insert, see [`Self::is_stored`]. If
    /// this process already runs it (it claimed it again after its own lease
    /// lapsed), the running worker takes the new fencing token instead.
    pub(super) fn spawn_worker(
        &self,
        id: String,
        fence: Fence,
        slot: OwnedSemaphorePermit,
        inserted: Option<Workflow>,
        stored: Option<Stored>,
    ) {
        let token = CancellationToken::new();
        {
            let mut running = self.inner.running.lock().expect("running map");
            if let Some(current) = running.get_mut(&id) {
                current.fence = fence;
                return;
            }
            running.insert(id.clone(), Running { token: token.clone(), fence, stored });
        }
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(err) = engine.drive(&id, &token, inserted).await {
                tracing::error!(workflow_id = %id, error = %err, "workflow interrupted; another claim resumes it");
            }
            engine.inner.running.lock().expect("running map").remove(&id);
            drop(slot);
            if engine.inner.backlog.load(Ordering::SeqCst) {
                engine.inner.wake.notify_one();
            }
        });
    }

    /// The fencing token this process holds for `id` now.
    pub(super) fn fence(&self, id: &str) -> Option<Fence> {
        self.inner.running.lock().expect("running map").get(id).map(|r| r.fence)
    }

    /// Interrupts this process's worker of `id`, if it has one.
    pub(super) fn interrupt(&self, id: &str) {
        if let Some(running) = self.inner.running.lock().expect("running map").get(id) {
            running.token.cancel();
        }
    }

    /// Whether workflow `id` is stored, for its worker's first write: at
    /// once, unless the worker started beside the workflow's insert; then
    /// once that insert has stored it. If the insert ended without saying so
    /// (it failed, or its caller went away during it), the store tells.
    async fn is_stored(&self, id: &str) -> Result<bool, OrchestratorError> {
        let gate = self.inner.running.lock().expect("running map").get(id).and_then(|r| r.stored.clone());
        let Some(mut gate) = gate else { return Ok(true) };
        if gate.wait_for(|stored| *stored).await.is_ok() {
            return Ok(true);
        }
        Ok(self.inner.store.get(id).await?.is_some())
    }

    async fn drive(
        &self,
        id: &str,
        token: &CancellationToken,
        inserted: Option<Workflow>,
    ) -> Result<(), OrchestratorError> {
        let fresh = inserted.is_some();
        let mut workflow = match inserted {
            Some(workflow) => workflow,
            None => match self.inner.store.get(id).await? {
                Some(workflow) => workflow,
                None => return Ok(()),
            },
        };
        if workflow.state.is_terminal() || workflow.state == WorkflowState::Paused {
            return Ok(());
        }
        let span = run_span(&workflow, &self.inner.owner);
        self.drive_in(&mut workflow, token, fresh).instrument(span).await
    }

    /// [`Self::drive`] inside the run's span; `fresh`: stored by this process just now.
    async fn drive_in(
        &self,
        workflow: &mut Workflow,
        token: &CancellationToken,
        fresh: bool,
    ) -> Result<(), OrchestratorError> {
        let id = workflow.id.clone();
        // Each run between waits is bounded; waiting (for an approval, a timer) is not.
        let limit = self.inner.config.workflow_timeout;
        let run = async {
            match workflow.definition {
                None => self.steps(workflow, token, fresh).await,
                Some(_) => self.flow(workflow, token).await,
            }
        };
        if tokio::time::timeout(limit, run).await.is_ok() {
            return Ok(());
        }
        // Timed out: fail it from what is stored (the interrupted step was not).
        let reason = format!("workflow timed out after {} ms (ORCHESTRATOR_WORKFLOW_TIMEOUT_MS)", limit.as_millis());
        let Some(mut stored) = self.inner.store.get(&id).await? else { return Ok(()) };
        if !matches!(stored.state, WorkflowState::Pending | WorkflowState::Processing) {
            return Ok(());
        }
        let from = stored.state;
        stored.transition(WorkflowState::Failed, reason)?;
        // Stopped: a cancel or a new owner got there first.
        if let Flow::Continue = self.save(&mut stored, from).await? {
            self.finished(&stored);
        }
        Ok(())
    }

    /// Runs the steps. A finished step is stored with the next state change,
    /// not in a commit of its own: steps are idempotent and run again after a
    /// crash, so storing each one bought only a progress view, at two extra
    /// commits (fsyncs) per workflow.
    async fn steps(
        &self,
        workflow: &mut Workflow,
        token: &CancellationToken,
        fresh: bool,
    ) -> Result<(), OrchestratorError> {
        if workflow.state == WorkflowState::Processing && fresh {
            // Validated and started in its insert (see `start_at_insert`).
        } else if workflow.state == WorkflowState::Processing {
            let note = format!(
                "picked up by {} after its previous owner stopped; steps run again (they are idempotent)",
                self.inner.owner
            );
            workflow.steps.push(StepRecord::new(step::RESUME, StepOutcome::Succeeded, now(), 0, 1, note));
        } else {
            let started = (now(), Instant::now());
            let check = self.validate_input(workflow);
            let (outcome, message) = match &check {
                Ok(()) => (StepOutcome::Succeeded, String::new()),
                Err(reason) => (StepOutcome::Failed, reason.clone()),
            };
            workflow.steps.push(step_record(step::VALIDATE_INPUT, outcome, started, Vec::new(), message));
            let flow = match check {
                Err(reason) => self.end(workflow, WorkflowState::Failed, format!("invalid input: {reason}")).await?,
                Ok(()) => self.start_processing(workflow).await?,
            };
            if matches!(flow, Flow::Stop) || workflow.state.is_terminal() {
                return Ok(());
            }
        }

        let content = workflow.input.content.clone();
        let hash =
            match self.attempt(workflow, step::HASH_GENERATION, token, || self.inner.stamping.hash(&content)).await? {
                Some(hash) => hash,
                None => return Ok(()),
            };
        workflow.file_hash = Some(hash.clone());

        let (namespace, input) = (workflow.namespace.clone(), workflow.input.clone());
        let key = omninode_core::stamp::workflow_idempotency_key(&workflow.id);
        let correlation = workflow.correlation_id.clone().unwrap_or_default();
        let stamping = &self.inner.stamping;
        let stamp_call = || stamping.stamp(&namespace, &input, &key, &correlation);
        let stamp = match self.attempt(workflow, step::STAMP_CREATION, token, stamp_call).await? {
            Some(stamp) => stamp,
            None => return Ok(()),
        };
        if stamp.file_hash != hash {
            let reason = format!("stamping recorded hash {} but hash_generation computed {hash}", stamp.file_hash);
            return self.end(workflow, WorkflowState::Failed, reason).await.map(drop);
        }
        workflow.stamp_id = Some(stamp.stamp_id);
        workflow.stamped_content = Some(stamp.stamped_content);

        // Calls beyond the mesh wait for the workflow to be stored.
        if !self.is_stored(&workflow.id).await? {
            return Ok(());
        }
        if let Flow::Stop = self.intelligence(workflow, token).await? {
            return Ok(());
        }
        self.end(workflow, WorkflowState::Completed, "").await.map(drop)
    }

    /// The optional OnexTree step: skipped when not asked for or not
    /// configured; a failure degrades it but never fails the workflow.
    async fn intelligence(
        &self,
        workflow: &mut Workflow,
        token: &CancellationToken,
    ) -> Result<Flow, OrchestratorError> {
        let started = (now(), Instant::now());
        let skip =
            |message: &str| step_record(step::INTELLIGENCE, StepOutcome::Skipped, started, Vec::new(), message.into());
        let Some(client) = self.inner.intelligence.clone().filter(|_| workflow.input.enable_intelligence) else {
            let why = if workflow.input.enable_intelligence {
                "ONEXTREE_SERVICE_URL is not set"
            } else {
                "enable_intelligence is false"
            };
            workflow.steps.push(skip(why));
            return Ok(Flow::Continue);
        };
        let snapshot = workflow.clone();
        let (tries, result) = self.with_retries(token, &self.budget(), || client.analyze(&snapshot)).await;
        let record = match result {
            Attempted::Done(data) => {
                workflow.intelligence_data = Some(data);
                step_record(step::INTELLIGENCE, StepOutcome::Succeeded, started, tries, String::new())
            }
            Attempted::Failed(message) => {
                step_record(step::INTELLIGENCE, StepOutcome::Degraded, started, tries, message)
            }
            Attempted::Cancelled => return Ok(Flow::Stop),
        };
        workflow.steps.push(record);
        Ok(Flow::Continue)
    }

    /// Runs a required step with retries and records it; `None` means the
    /// workflow ended (failed, cancelled) and nothing more should run.
    async fn attempt<T, F, Fut>(
        &self,
        workflow: &mut Workflow,
        name: &str,
        token: &CancellationToken,
        call: F,
    ) -> Result<Option<T>, OrchestratorError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let started = (now(), Instant::now());
        let (tries, result) =
            self.with_retries(token, &self.budget(), call).instrument(step_span(workflow, name)).await;
        match result {
            Attempted::Done(value) => {
                let record = step_record(name, StepOutcome::Succeeded, started, tries, String::new());
                workflow.steps.push(record);
                Ok(Some(value))
            }
            Attempted::Failed(message) => {
                let reason = format!("{name} failed after {} attempt(s): {message}", tries.len());
                workflow.steps.push(step_record(name, StepOutcome::Failed, started, tries, message));
                // Stored or overtaken by a cancel: either way the workflow has ended.
                let _ = self.end(workflow, WorkflowState::Failed, reason).await?;
                Ok(None)
            }
            Attempted::Cancelled => Ok(None),
        }
    }

    /// The built-in pipeline's budget: the orchestrator's settings.
    pub(super) fn budget(&self) -> Budget {
        let config = &self.inner.config;
        Budget { policy: config.retry, timeout: config.step_timeout, timeout_source: "ORCHESTRATOR_STEP_TIMEOUT_MS" }
    }

    /// Calls until success, a permanent failure, the last attempt, or
    /// cancellation; returns every attempt made.
    pub(super) async fn with_retries<T, F, Fut>(
        &self,
        token: &CancellationToken,
        budget: &Budget,
        mut call: F,
    ) -> (Vec<Attempt>, Attempted<T>)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let Budget { policy, timeout, timeout_source } = *budget;
        let mut tries = Vec::new();
        loop {
            let (started_at, clock) = (now(), Instant::now());
            let result = tokio::select! {
                _ = token.cancelled() => return (tries, Attempted::Cancelled),
                result = tokio::time::timeout(timeout, call()) => result.unwrap_or_else(|_| {
                    Err(CallError::retryable(format!("no answer within {} ms ({timeout_source})", timeout.as_millis())))
                }),
            };
            let duration_ms = clock.elapsed().as_millis() as u64;
            let error = match result {
                Ok(value) => {
                    tries.push(Attempt { started_at, duration_ms, error: String::new() });
                    return (tries, Attempted::Done(value));
                }
                Err(error) => error,
            };
            tries.push(Attempt { started_at, duration_ms, error: error.message.clone() });
            let attempt = tries.len() as u32;
            if !error.retryable || attempt >= policy.max_attempts {
                return (tries, Attempted::Failed(error.message));
            }
            let pause = policy.delay(attempt, fastrand::f64());
            tracing::debug!(attempt, pause_ms = pause.as_millis() as u64, error = %error.message, "retrying");
            tokio::select! {
                _ = token.cancelled() => return (tries, Attempted::Cancelled),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Starts a new built-in workflow before its insert when its input is
    /// valid: the validation step recorded, PENDING → PROCESSING. Invalid
    /// input is left PENDING for the worker to fail, as stored.
    pub(super) fn start_at_insert(&self, workflow: &mut Workflow) -> Result<(), OrchestratorError> {
        let started = (now(), Instant::now());
        if self.validate_input(workflow).is_err() {
            return Ok(());
        }
        let mut record = step_record(step::VALIDATE_INPUT, StepOutcome::Succeeded, started, Vec::new(), String::new());
        record.owner.clone_from(&self.inner.owner);
        workflow.steps.push(record);
        workflow.transition(WorkflowState::Processing, "")?;
        Ok(())
    }

    /// Input problems that fail the workflow (PENDING → FAILED).
    fn validate_input(&self, workflow: &Workflow) -> Result<(), String> {
        let input = &workflow.input;
        limits::check_stampable(
            &input.content,
            &input.file_path,
            &input.content_type,
            self.inner.config.max_content_bytes,
        )?;
        if hash_content(&input.content).is_empty {
            return Err("content is empty once stamps and surrounding whitespace are removed".into());
        }
        Ok(())
    }

    /// PENDING → PROCESSING, stored.
    async fn start_processing(&self, workflow: &mut Workflow) -> Result<Flow, OrchestratorError> {
        let from = workflow.state;
        workflow.transition(WorkflowState::Processing, "")?;
        self.save(workflow, from).await
    }

    /// A terminal move, stored and counted.
    pub(super) async fn end(
        &self,
        workflow: &mut Workflow,
        to: WorkflowState,
        reason: impl Into<String>,
    ) -> Result<Flow, OrchestratorError> {
        let from = workflow.state;
        workflow.transition(to, reason)?;
        let flow = self.save(workflow, from).await?;
        if let Flow::Continue = flow {
            // `save` published it.
            self.count_finished(workflow);
        }
        Ok(flow)
    }

    /// Stores a worker's change under its fencing token.
    pub(super) async fn save(
        &self,
        workflow: &mut Workflow,
        expected: WorkflowState,
    ) -> Result<Flow, OrchestratorError> {
        let Some(fence) = self.fence(&workflow.id) else { return Ok(Flow::Stop) };
        if !self.is_stored(&workflow.id).await? {
            return Ok(Flow::Stop);
        }
        for step in workflow.steps.iter_mut().filter(|step| step.owner.is_empty()) {
            step.owner.clone_from(&self.inner.owner);
        }
        match self.inner.store.update(workflow, expected, Some(&fence)).await? {
            Updated::Written => {
                self.publish(workflow);
                Ok(Flow::Continue)
            }
            Updated::Moved => {
                tracing::info!(workflow_id = %workflow.id, "workflow changed by another writer (cancelled, paused); stopping");
                Ok(Flow::Stop)
            }
            Updated::Fenced => {
                metrics::counter!("workflow_fenced_writes_total").increment(1);
                tracing::warn!(
                    workflow_id = %workflow.id,
                    attempt = fence.attempt,
                    owner = %self.inner.owner,
                    "write refused: this instance's lease was taken over by another; stopping"
                );
                Ok(Flow::Stop)
            }
        }
    }
}

/// The record of a step started at `started` (time, clock) after `tries`.
pub(super) fn step_record(
    name: &str,
    outcome: StepOutcome,
    (started_at, clock): (chrono::DateTime<chrono::Utc>, Instant),
    tries: Vec<Attempt>,
    message: String,
) -> StepRecord {
    let duration_ms = clock.elapsed().as_millis() as u64;
    metrics::histogram!("workflow_step_duration_ms", "step" => name.to_owned(), "outcome" => format!("{outcome:?}"))
        .record(duration_ms as f64);
    // A step run in place (validation) is one attempt; a skipped one none.
    let attempts = match (tries.len(), outcome) {
        (0, StepOutcome::Skipped) => 0,
        (0, _) => 1,
        (n, _) => n as u32,
    };
    StepRecord { tries, ..StepRecord::new(name, outcome, started_at, duration_ms, attempts, message) }
}

/// The span of one run of `workflow` (from a claim to its end or its next
/// wait): a child of the request that started it, however many instances
/// and restarts lie between.
fn run_span(workflow: &Workflow, owner: &str) -> tracing::Span {
    if !omninode_runtime::trace::enabled() {
        return tracing::Span::none();
    }
    let name = workflow.definition.as_deref().unwrap_or(crate::domain::definition::BUILT_IN);
    let span = tracing::info_span!(
        target: omninode_runtime::trace::TARGET,
        "workflow.run",
        otel.name = format!("workflow {name}"),
        otel.kind = "internal",
        workflow.id = workflow.id.as_str(),
        workflow.definition = name,
        workflow.namespace = workflow.namespace.as_str(),
        workflow.owner = owner,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    omninode_runtime::trace::continue_from_stored(&span, workflow.trace_context.as_deref());
    span
}

/// The span of one step (all its attempts), a child of the run's.
pub(super) fn step_span(workflow: &Workflow, step: &str) -> tracing::Span {
    if !omninode_runtime::trace::enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: omninode_runtime::trace::TARGET,
        "workflow.step",
        otel.name = format!("step {step}"),
        otel.kind = "internal",
        workflow.id = workflow.id.as_str(),
        workflow.step = step,
    )
}
