//! `WorkflowEngine`: accepts workflows, runs them on a bounded set of
//! workers, and answers reads, cancels and watches. Workflows belong to no
//! process: each instance claims runnable ones with a lease in the database
//! (see [`claimer`] and [`crate::store::lease`]), so any instance finishes
//! any workflow. The store is the arbiter of every state change.

mod claimer;
mod definitions;
mod flow;
mod runner;
mod signals;

pub use signals::Signal;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use omninode_core::{
    limits::{self, MAX_FIELD},
    namespace::resolve_namespace,
};
use omninode_runtime::{
    paging::{Page, PageRequest},
    watch::{KeyedUpdates, Subscription, Versioned, watch_versioned},
};
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    clients::{http::HttpClient, intelligence::IntelligenceClient, llm::LlmClient, stamping::StampingClient},
    config::OrchestratorConfig,
    domain::{
        WorkflowState,
        definition::Definition,
        workflow::{Workflow, WorkflowInput},
    },
    error::OrchestratorError,
    store::{Admission, Fence, Inserted, Updated, WorkflowStore},
};

/// ListWorkflows page sizes: (default, maximum).
const PAGE_SIZES: (u32, u32) = (50, 500);
/// How often a watcher re-reads the store, for changes made by other instances.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// A request to start a workflow.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub namespace: String,
    pub input: WorkflowInput,
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// The definition to run (`name` or `name@version`); `None` runs the built-in stamping pipeline.
    pub definition: Option<String>,
    /// Set for a request read from Kafka: where its answers go.
    pub reply_to: Option<crate::ingress::ReplyTo>,
}

/// Runs workflows: the built-in stamping pipeline and stored definitions. Cheap to clone.
#[derive(Clone)]
pub struct WorkflowEngine {
    inner: Arc<Inner>,
}

/// A workflow this process is running: how to interrupt it, the fencing
/// token of its lease (updated if this process claims it again), and, for a
/// worker started beside the workflow's insert, whether that insert stored it.
struct Running {
    token: CancellationToken,
    fence: Fence,
    stored: Option<Stored>,
}

/// Turns `true` once the insert of a workflow whose worker started beside it
/// has stored the workflow. Closed while `false`, the insert's outcome is
/// not known here (it failed, or its caller went away during it): the
/// worker then asks the store.
type Stored = watch::Receiver<bool>;

struct Inner {
    store: WorkflowStore,
    config: OrchestratorConfig,
    stamping: StampingClient,
    intelligence: Option<IntelligenceClient>,
    /// The client of `http` steps.
    http: HttpClient,
    /// The endpoint of `llm` steps, when configured.
    llm: Option<LlmClient>,
    /// Definitions read so far by `name@version` (versions are immutable).
    definitions: Mutex<HashMap<String, Arc<Definition>>>,
    /// This process's lease owner id: the instance id and a random suffix,
    /// unique even when two processes share an instance id.
    owner: String,
    /// One permit per worker (`ORCHESTRATOR_CONCURRENCY`).
    slots: Arc<Semaphore>,
    /// Wakes the claimer: a workflow was queued, or a worker freed up while
    /// runnable workflows may be waiting.
    wake: Notify,
    /// Whether runnable workflows may be waiting in the database: set by
    /// whatever queues one (here, or — PostgreSQL — a `NOTIFY` from another
    /// instance) and by a claim that took as many as it could; cleared when a
    /// claim finds fewer. A finished worker wakes the claimer only while it
    /// is set: with nothing queued, a claim per finished workflow would only
    /// scan for work that is not there (the periodic poll still finds
    /// expired leases).
    backlog: AtomicBool,
    /// The workflows being run now.
    running: Mutex<HashMap<String, Running>>,
    /// Every stored change, for the workflow's watchers in this process.
    updates: KeyedUpdates<Workflow>,
    /// Cancelled when the process stops: new workflows are then left to the other instances.
    stopping: CancellationToken,
}

/// A workflow accepted by [`WorkflowEngine::admit`].
struct Admitted {
    workflow: Workflow,
    /// `false`: an idempotency key's earlier workflow.
    created: bool,
    /// The new workflow's changes, subscribed before any could be made
    /// (asked for by a caller that waits for it to settle).
    updates: Option<Subscription<Workflow>>,
}

impl WorkflowEngine {
    /// Starts claiming and running workflows as `instance_id`; on `stop` it
    /// interrupts its workers and releases their leases to the other
    /// instances. The returned task ends when that hand-over is done.
    pub fn start(
        store: WorkflowStore,
        config: OrchestratorConfig,
        stamping: StampingClient,
        instance_id: &str,
        stop: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let intelligence = config.onextree_url.as_deref().map(IntelligenceClient::new);
        let http = HttpClient::default();
        let llm = config.llm.as_ref().map(|llm| LlmClient::new(llm, http.clone()));
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let engine = Self {
            inner: Arc::new(Inner {
                store,
                stamping,
                intelligence,
                http,
                llm,
                definitions: Mutex::new(HashMap::new()),
                owner: format!("{instance_id}/{}", &suffix[..8]),
                slots: Arc::new(Semaphore::new(config.concurrency)),
                wake: Notify::new(),
                backlog: AtomicBool::new(true),
                running: Mutex::new(HashMap::new()),
                updates: KeyedUpdates::default(),
                stopping: stop.clone(),
                config,
            }),
        };
        let handover = claimer::spawn(engine.clone(), stop);
        (engine, handover)
    }

    /// This process's lease owner id.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Accepts a workflow (PENDING): claimed at once when a worker is free,
    /// else queued for whichever instance frees up first. With a known
    /// idempotency key, returns the workflow it started instead (`false`).
    /// A named definition is pinned to its version now.
    pub async fn submit(&self, request: StartRequest) -> Result<(Workflow, bool), OrchestratorError> {
        let admitted = self.admit(request, false).await?;
        Ok((admitted.workflow, admitted.created))
    }

    /// [`Self::submit`]; `answered_when_settled`: the caller hears of the
    /// workflow only once it settles (see [`Admission::Claimed`]), and
    /// follows its changes from before it is stored.
    async fn admit(&self, request: StartRequest, answered_when_settled: bool) -> Result<Admitted, OrchestratorError> {
        let namespace = resolve_namespace(&request.namespace).map_err(OrchestratorError::NamespaceInvalid)?;
        self.check_request(&request)?;
        let input_hash = input_hash(&request.input, request.definition.as_deref());
        if let Some(key) = &request.idempotency_key
            && let Some(existing) = self.inner.store.find_by_key(&namespace, key).await?
        {
            return same_input(existing, &input_hash, key);
        }
        let definition = match request.definition.as_deref() {
            Some(reference) => Some(self.definition(reference).await?),
            None => None,
        };
        let mut workflow = Workflow {
            correlation_id: request.correlation_id,
            idempotency_key: request.idempotency_key,
            reply_to: request.reply_to,
            ..Workflow::pending(namespace, request.input, input_hash)
        };
        if let Some(definition) = definition {
            workflow.workflow_type.clone_from(&definition.name);
            workflow.definition = Some(definition.reference());
            workflow.current_step = definition.steps.first().map(|s| s.name.clone());
        }
        let config = &self.inner.config;
        let slot = match self.inner.stopping.is_cancelled() {
            true => None,
            false => self.inner.slots.clone().try_acquire_owned().ok(),
        };
        let admission = match &slot {
            Some(_) => {
                Admission::Claimed { owner: self.inner.owner.clone(), lease: config.lease, answered_when_settled }
            }
            None => Admission::Queued { limit: config.max_queue as u64 },
        };
        // Claimed here with valid input: the built-in pipeline starts in its
        // insert (PENDING → PROCESSING, both events in that transaction),
        // saving the worker a commit of its own.
        if slot.is_some() && workflow.definition.is_none() {
            self.start_at_insert(&mut workflow)?;
        }
        let updates = answered_when_settled.then(|| self.inner.updates.subscribe(&workflow.id));
        // Started at its insert, the built-in pipeline needs nothing of the
        // insert until it writes: its worker hashes and stamps beside the
        // trip, and its first write waits until the insert has stored the
        // workflow (see `Running::stored`). Its steps are idempotent, and
        // none writes the workflow, so a workflow whose insert fails has
        // left at most a stamp of the content it was asked to stamp.
        let (slot, stored) = match slot {
            Some(slot) if workflow.state == WorkflowState::Processing => {
                let (stored, gate) = watch::channel(false);
                self.spawn_worker(workflow.id.clone(), Fence { attempt: 1 }, slot, Some(workflow.clone()), Some(gate));
                (None, Some(stored))
            }
            other => (other, None),
        };
        let inserted = self.inner.store.insert(&workflow, &admission).await?;
        if stored.is_some() && !matches!(inserted, Inserted::Created(_)) {
            self.interrupt(&workflow.id);
        }
        match inserted {
            Inserted::Created(workflow) => {
                self.publish(&workflow);
                if matches!(admission, Admission::Claimed { .. }) {
                    metrics::counter!("workflow_claimed_total").increment(1);
                }
                match (slot, stored) {
                    (_, Some(stored)) => {
                        // Published first: the worker's changes follow it.
                        stored.send_replace(true);
                    }
                    (Some(slot), None) => {
                        self.spawn_worker(
                            workflow.id.clone(),
                            Fence { attempt: 1 },
                            slot,
                            Some(workflow.clone()),
                            None,
                        );
                    }
                    (None, None) => {
                        self.wake_claimer();
                        // The backlog just grew: say so now, not at the next periodic refresh.
                        self.report_backlog().await;
                    }
                }
                Ok(Admitted { workflow, created: true, updates })
            }
            Inserted::ExistingKey(existing) => {
                let key = workflow.idempotency_key.unwrap_or_default();
                same_input(existing, &workflow.input_hash, &key)
            }
            Inserted::QueueFull { limit } => Err(OrchestratorError::QueueFull(limit as usize)),
        }
    }

    /// Starts a workflow and waits until it stops running: terminal,
    /// WAITING (an approval or a timer) or PAUSED.
    pub async fn run(&self, request: StartRequest) -> Result<(Workflow, bool), OrchestratorError> {
        let Admitted { workflow, created, updates } = self.admit(request, true).await?;
        // Allow the worker's whole-workflow timeout to fire first.
        let patience = self.inner.config.workflow_timeout + Duration::from_secs(5);
        let id = workflow.id.clone();
        let (updates, first) = match updates {
            // Listening since before the start, the wait begins from the
            // workflow as submitted: no store read, and no change can slip by.
            Some(updates) => (updates, Some(workflow)),
            // An earlier workflow of the same idempotency key: from the store.
            None => (self.inner.updates.subscribe(&id), None),
        };
        let stream = self.watch_from(&id, updates, first);
        Ok((self.wait_on(stream, &id, patience, is_settled).await?, created))
    }

    pub async fn get(&self, id: &str) -> Result<Workflow, OrchestratorError> {
        self.inner.store.get(id).await?.ok_or_else(|| OrchestratorError::NotFound(id.to_owned()))
    }

    /// One page of a namespace's workflows, newest first.
    pub async fn list(
        &self,
        namespace: &str,
        state: Option<WorkflowState>,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<Workflow>, OrchestratorError> {
        let namespace = resolve_namespace(namespace).map_err(OrchestratorError::NamespaceInvalid)?;
        let request = PageRequest::parse(page_size, page_token, PAGE_SIZES, |id| uuid::Uuid::parse_str(id).is_ok())
            .map_err(|e| OrchestratorError::Validation(e.into()))?;
        // Newest first: the token carries the id the next page is older than.
        let workflows =
            self.inner.store.list(&namespace, state, request.after.as_deref(), request.fetch_limit()).await?;
        Ok(request.page(workflows, |workflow| &workflow.id))
    }

    /// Cancels a workflow that is not terminal; a running step is interrupted.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<Workflow, OrchestratorError> {
        limits::check_note("reason", reason, limits::MAX_NOTE).map_err(OrchestratorError::Validation)?;
        let reason = match reason.trim() {
            "" => "cancelled by request".to_owned(),
            given => format!("cancelled: {given}"),
        };
        // The worker may move the workflow between our read and our write; try again then.
        for _ in 0..10 {
            let mut workflow = self.get(id).await?;
            if workflow.state.is_terminal() {
                return Err(OrchestratorError::AlreadyTerminal { id: id.to_owned(), state: workflow.state });
            }
            let from = workflow.state;
            workflow.transition(WorkflowState::Cancelled, reason.clone())?;
            if self.inner.store.update(&mut workflow, from, None).await? == Updated::Written {
                self.interrupt(id);
                self.finished(&workflow);
                return Ok(workflow);
            }
        }
        Err(OrchestratorError::Store(format!("workflow {id} kept changing while being cancelled")))
    }

    /// The workflow now, then each stored change, ending after a terminal state.
    /// Changes made by another instance arrive at once on PostgreSQL (the
    /// listener reads the workflows watched here when they change), else by
    /// polling every half second.
    pub fn watch(
        &self,
        id: &str,
    ) -> impl futures::Stream<Item = Result<Workflow, OrchestratorError>> + Send + Unpin + 'static {
        self.watch_from(id, self.inner.updates.subscribe(id), None)
    }

    /// [`Self::watch`] on `updates` (subscribed to `id`), starting from
    /// `first` when given (else from the store).
    fn watch_from(
        &self,
        id: &str,
        updates: Subscription<Workflow>,
        first: Option<Workflow>,
    ) -> impl futures::Stream<Item = Result<Workflow, OrchestratorError>> + Send + Unpin + 'static {
        let (store, id) = (self.inner.store.clone(), id.to_owned());
        let first = Arc::new(Mutex::new(first));
        let read = move || {
            let (store, id, first) = (store.clone(), id.clone(), first.lock().expect("first read").take());
            async move {
                match first {
                    Some(workflow) => Ok(Some(workflow)),
                    None => store.get(&id).await?.map(Some).ok_or(OrchestratorError::NotFound(id)),
                }
            }
        };
        watch_versioned(updates, read, WATCH_POLL)
    }

    /// Wakes the claimer: a runnable workflow may be waiting.
    pub(crate) fn wake_claimer(&self) {
        self.inner.backlog.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    /// Whether a watcher in this process follows `id`.
    pub(crate) fn is_watched(&self, id: &str) -> bool {
        self.inner.updates.is_watched(id)
    }

    /// Waits up to `patience` for the workflow to be terminal.
    pub async fn wait_terminal(&self, id: &str, patience: Duration) -> Result<Workflow, OrchestratorError> {
        self.wait_until(id, patience, |w| w.state.is_terminal()).await
    }

    /// Waits up to `patience` for the workflow to satisfy `done` (or be terminal).
    async fn wait_until(
        &self,
        id: &str,
        patience: Duration,
        done: fn(&Workflow) -> bool,
    ) -> Result<Workflow, OrchestratorError> {
        self.wait_on(self.watch(id), id, patience, done).await
    }

    /// Waits up to `patience` for `stream` (a watch of `id`) to satisfy `done` (or end).
    async fn wait_on(
        &self,
        mut stream: impl futures::Stream<Item = Result<Workflow, OrchestratorError>> + Unpin,
        id: &str,
        patience: Duration,
        done: fn(&Workflow) -> bool,
    ) -> Result<Workflow, OrchestratorError> {
        use futures::StreamExt;
        let wait = async {
            let mut last = None;
            while let Some(item) = stream.next().await {
                let workflow = item?;
                if done(&workflow) {
                    return Ok(workflow);
                }
                last = Some(workflow);
            }
            last.ok_or_else(|| OrchestratorError::NotFound(id.to_owned()))
        };
        tokio::time::timeout(patience, wait).await.map_err(|_| OrchestratorError::Timeout(id.to_owned()))?
    }

    /// Field checks a StartWorkflow is refused for outright (nothing stored).
    fn check_request(&self, request: &StartRequest) -> Result<(), OrchestratorError> {
        let input = &request.input;
        limits::check_content_size(input.content.len(), self.inner.config.max_content_bytes)
            .map_err(OrchestratorError::Validation)?;
        // What no store can hold is refused outright; other bad input fails the workflow (validate_input).
        for (field, value) in
            [("content", &input.content), ("file_path", &input.file_path), ("content_type", &input.content_type)]
        {
            limits::check_no_nul(field, value).map_err(OrchestratorError::Validation)?;
        }
        if input.context.len() > limits::MAX_CONTEXT_ENTRIES {
            return Err(OrchestratorError::Validation(format!(
                "context has {} entries; the limit is {}",
                input.context.len(),
                limits::MAX_CONTEXT_ENTRIES
            )));
        }
        for (key, value) in &input.context {
            limits::check_text("context key", key, MAX_FIELD).map_err(OrchestratorError::Validation)?;
            limits::check_note("context value", value, limits::MAX_NOTE).map_err(OrchestratorError::Validation)?;
        }
        for (field, value) in [
            ("idempotency_key", &request.idempotency_key),
            ("correlation_id", &request.correlation_id),
            ("definition", &request.definition),
        ] {
            if let Some(value) = value {
                limits::check_text(field, value, MAX_FIELD).map_err(OrchestratorError::Validation)?;
            }
        }
        Ok(())
    }

    /// Publishes how many runnable workflows wait unclaimed, across instances.
    pub(crate) async fn report_backlog(&self) {
        if let Ok(backlog) = self.inner.store.backlog().await {
            metrics::gauge!("workflow_backlog").set(backlog as f64);
            metrics::gauge!("workflow_queue_size").set(backlog as f64);
        }
    }

    pub(crate) fn publish(&self, workflow: &Workflow) {
        self.inner.updates.publish(&workflow.id, workflow);
    }

    /// Publishes a terminal workflow and counts it.
    fn finished(&self, workflow: &Workflow) {
        self.publish(workflow);
        self.count_finished(workflow);
    }

    /// Counts a terminal workflow in the metrics.
    fn count_finished(&self, workflow: &Workflow) {
        let state = workflow.state.as_str();
        metrics::counter!("workflow_orchestration_total", "state" => state).increment(1);
        if workflow.state == WorkflowState::Failed {
            metrics::counter!("workflow_orchestration_errors_total").increment(1);
        }
        if let Some(ms) = workflow.execution_time_ms {
            metrics::histogram!("workflow_orchestration_duration_ms", "state" => state).record(ms as f64);
        }
    }
}

/// A reused idempotency key returns its workflow only for the same input.
fn same_input(existing: Workflow, input_hash: &str, key: &str) -> Result<Admitted, OrchestratorError> {
    if existing.input_hash == input_hash {
        Ok(Admitted { workflow: existing, created: false, updates: None })
    } else {
        Err(OrchestratorError::IdempotencyConflict {
            namespace: existing.namespace,
            key: key.to_owned(),
            workflow_id: existing.id,
        })
    }
}

/// What an idempotency key is bound to: the input, and the definition as named.
fn input_hash(input: &WorkflowInput, definition: Option<&str>) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&serde_json::to_vec(input).expect("WorkflowInput serialises"));
    if let Some(definition) = definition {
        hasher.update(b"\0definition=");
        hasher.update(definition.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

/// Stopped running: terminal, waiting for a decision or a timer, or paused.
fn is_settled(workflow: &Workflow) -> bool {
    workflow.state.is_terminal() || matches!(workflow.state, WorkflowState::Waiting | WorkflowState::Paused)
}

impl Versioned for Workflow {
    fn version(&self) -> i64 {
        i64::from(self.version)
    }

    fn is_final(&self) -> bool {
        self.state.is_terminal()
    }
}
