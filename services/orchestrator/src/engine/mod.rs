//! `WorkflowEngine`: accepts workflows into a bounded queue, runs them on a
//! bounded set of workers, and answers reads, cancels and watches. The store
//! is the arbiter of every state change (see [`crate::store`]).

mod runner;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use omninode_core::{
    limits::{self, MAX_FIELD},
    namespace::resolve_namespace,
};
use omninode_runtime::{
    paging::{Page, PageRequest},
    watch::{Versioned, watch_versioned},
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::{
    clients::{intelligence::IntelligenceClient, stamping::StampingClient},
    config::OrchestratorConfig,
    domain::{
        WorkflowState,
        workflow::{Workflow, WorkflowInput},
    },
    error::OrchestratorError,
    store::{Inserted, WorkflowStore},
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
}

/// Runs stamping workflows. Cheap to clone.
#[derive(Clone)]
pub struct WorkflowEngine {
    inner: Arc<Inner>,
}

struct Inner {
    store: WorkflowStore,
    config: OrchestratorConfig,
    stamping: StampingClient,
    intelligence: Option<IntelligenceClient>,
    queue: mpsc::Sender<String>,
    /// Cancellation handles of the workflows being run now.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Every stored change, for watchers in this process.
    updates: broadcast::Sender<Workflow>,
}

impl WorkflowEngine {
    /// Starts `config.concurrency` workers; they stop taking work when `stop` is cancelled.
    pub fn start_workers(
        store: WorkflowStore,
        config: OrchestratorConfig,
        stamping: StampingClient,
        stop: CancellationToken,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(config.max_queue);
        let intelligence = config.onextree_url.as_deref().map(IntelligenceClient::new);
        let engine = Self {
            inner: Arc::new(Inner {
                store,
                stamping,
                intelligence,
                queue,
                running: Mutex::new(HashMap::new()),
                updates: broadcast::channel(1024).0,
                config,
            }),
        };
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..engine.inner.config.concurrency {
            let (engine, receiver, stop) = (engine.clone(), receiver.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        _ = stop.cancelled() => None,
                        id = async { receiver.lock().await.recv().await } => id,
                    };
                    let Some(id) = next else { return };
                    engine.report_queue_size();
                    engine.execute(id).await;
                }
            });
        }
        engine
    }

    /// Queues every workflow a previous process left unfinished; returns how many.
    pub async fn recover(&self) -> Result<usize, OrchestratorError> {
        let ids = self.inner.store.unfinished().await?;
        let count = ids.len();
        if count > 0 {
            tracing::info!(count, "resuming unfinished workflows");
        }
        let queue = self.inner.queue.clone();
        // More may be waiting than the queue holds: feed it as workers free up.
        tokio::spawn(async move {
            for id in ids {
                if queue.send(id).await.is_err() {
                    return;
                }
            }
        });
        Ok(count)
    }

    /// Accepts a workflow (PENDING) and queues it; with a known idempotency
    /// key, returns the workflow it started instead (`false`).
    pub async fn start(&self, request: StartRequest) -> Result<(Workflow, bool), OrchestratorError> {
        let namespace = resolve_namespace(&request.namespace).map_err(OrchestratorError::NamespaceInvalid)?;
        self.check_request(&request)?;
        let input_hash = input_hash(&request.input);
        if let Some(key) = &request.idempotency_key
            && let Some(existing) = self.inner.store.find_by_key(&namespace, key).await?
        {
            return same_input(existing, &input_hash, key);
        }
        // Reserve a queue slot before writing, so a full queue writes nothing.
        let permit =
            self.inner.queue.try_reserve().map_err(|_| OrchestratorError::QueueFull(self.inner.config.max_queue))?;
        let workflow = Workflow {
            correlation_id: request.correlation_id,
            idempotency_key: request.idempotency_key,
            ..Workflow::pending(namespace, request.input, input_hash)
        };
        match self.inner.store.insert(&workflow).await? {
            Inserted::Created(workflow) => {
                permit.send(workflow.id.clone());
                self.report_queue_size();
                self.publish(&workflow);
                Ok((workflow, true))
            }
            Inserted::ExistingKey(existing) => {
                let key = workflow.idempotency_key.unwrap_or_default();
                same_input(existing, &workflow.input_hash, &key)
            }
        }
    }

    /// Starts a workflow and waits until it is terminal.
    pub async fn run(&self, request: StartRequest) -> Result<(Workflow, bool), OrchestratorError> {
        let (workflow, created) = self.start(request).await?;
        // Allow the worker's whole-workflow timeout to fire first.
        let patience = self.inner.config.workflow_timeout + Duration::from_secs(5);
        Ok((self.wait_terminal(&workflow.id, patience).await?, created))
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
            if self.inner.store.update(&mut workflow, from).await? {
                if let Some(token) = self.inner.running.lock().expect("running map").get(id) {
                    token.cancel();
                }
                self.finished(&workflow);
                return Ok(workflow);
            }
        }
        Err(OrchestratorError::Store(format!("workflow {id} kept changing while being cancelled")))
    }

    /// The workflow now, then each stored change, ending after a terminal state.
    pub fn watch(&self, id: &str) -> ReceiverStream<Result<Workflow, OrchestratorError>> {
        let (store, id) = (self.inner.store.clone(), id.to_owned());
        let watched = id.clone();
        let read = move || {
            let (store, id) = (store.clone(), id.clone());
            async move { store.get(&id).await?.map(Some).ok_or(OrchestratorError::NotFound(id)) }
        };
        watch_versioned(self.inner.updates.subscribe(), move |w: &Workflow| w.id == watched, read, WATCH_POLL)
    }

    /// Waits up to `patience` for the workflow to be terminal.
    pub async fn wait_terminal(&self, id: &str, patience: Duration) -> Result<Workflow, OrchestratorError> {
        use futures::StreamExt;
        let mut stream = self.watch(id);
        let wait = async {
            let mut last = None;
            while let Some(item) = stream.next().await {
                last = Some(item?);
            }
            last.ok_or_else(|| OrchestratorError::NotFound(id.to_owned()))
        };
        tokio::time::timeout(patience, wait).await.map_err(|_| OrchestratorError::Timeout(id.to_owned()))?
    }

    /// Field checks a StartWorkflow is refused for outright (nothing stored).
    fn check_request(&self, request: &StartRequest) -> Result<(), OrchestratorError> {
        limits::check_content_size(request.input.content.len(), self.inner.config.max_content_bytes)
            .map_err(OrchestratorError::Validation)?;
        for (field, value) in
            [("idempotency_key", &request.idempotency_key), ("correlation_id", &request.correlation_id)]
        {
            if let Some(value) = value {
                limits::check_text(field, value, MAX_FIELD).map_err(OrchestratorError::Validation)?;
            }
        }
        Ok(())
    }

    fn publish(&self, workflow: &Workflow) {
        let _ = self.inner.updates.send(workflow.clone());
    }

    /// Publishes a terminal workflow and counts it.
    fn finished(&self, workflow: &Workflow) {
        self.publish(workflow);
        let state = workflow.state.as_str();
        metrics::counter!("workflow_orchestration_total", "state" => state).increment(1);
        if workflow.state == WorkflowState::Failed {
            metrics::counter!("workflow_orchestration_errors_total").increment(1);
        }
        if let Some(ms) = workflow.execution_time_ms {
            metrics::histogram!("workflow_orchestration_duration_ms", "state" => state).record(ms as f64);
        }
    }

    fn report_queue_size(&self) {
        let queue = &self.inner.queue;
        metrics::gauge!("workflow_queue_size").set((queue.max_capacity() - queue.capacity()) as f64);
    }
}

/// A reused idempotency key returns its workflow only for the same input.
fn same_input(existing: Workflow, input_hash: &str, key: &str) -> Result<(Workflow, bool), OrchestratorError> {
    if existing.input_hash == input_hash {
        Ok((existing, false))
    } else {
        Err(OrchestratorError::IdempotencyConflict {
            namespace: existing.namespace,
            key: key.to_owned(),
            workflow_id: existing.id,
        })
    }
}

fn input_hash(input: &WorkflowInput) -> String {
    let canonical = serde_json::to_vec(input).expect("WorkflowInput serialises");
    blake3::hash(&canonical).to_hex().to_string()
}

impl Versioned for Workflow {
    fn version(&self) -> i64 {
        i64::from(self.version)
    }

    fn is_final(&self) -> bool {
        self.state.is_terminal()
    }
}
