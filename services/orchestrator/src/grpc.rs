//! The gRPC adapter: proto messages in, [`WorkflowEngine`] calls, proto messages out.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use omninode_proto::{
    orchestrator::v1::{
        self as pb,
        orchestrator_service_server::{OrchestratorService, OrchestratorServiceServer},
    },
    stamping::v1::StampFormat,
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        fsm::WorkflowState,
        workflow::{StepOutcome, Workflow, WorkflowInput},
    },
    engine::{StartRequest, WorkflowEngine},
    error::OrchestratorError,
};

/// `omninode.orchestrator.v1.OrchestratorService` over a [`WorkflowEngine`].
#[derive(Clone)]
pub struct OrchestratorGrpc {
    engine: WorkflowEngine,
    max_message_bytes: usize,
}

impl OrchestratorGrpc {
    pub fn new(engine: WorkflowEngine, max_content_bytes: usize) -> Self {
        Self { engine, max_message_bytes: max_content_bytes.saturating_mul(3).saturating_add(64 * 1024) }
    }

    pub fn into_server(self) -> OrchestratorServiceServer<Self> {
        let max = self.max_message_bytes;
        OrchestratorServiceServer::new(self).max_decoding_message_size(max).max_encoding_message_size(max)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchWorkflowResponse, Status>> + Send>>;

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    async fn start_workflow(
        &self,
        request: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        let r = request.into_inner();
        let start = start_request(r.namespace, r.input, r.correlation_id, r.idempotency_key)?;
        let (workflow, created) = self.engine.start(start).await?;
        Ok(Response::new(pb::StartWorkflowResponse { workflow: Some(workflow_to_proto(workflow)), created }))
    }

    async fn run_workflow(
        &self,
        request: Request<pb::RunWorkflowRequest>,
    ) -> Result<Response<pb::RunWorkflowResponse>, Status> {
        let r = request.into_inner();
        let start = start_request(r.namespace, r.input, r.correlation_id, r.idempotency_key)?;
        let (workflow, created) = self.engine.run(start).await?;
        Ok(Response::new(pb::RunWorkflowResponse { workflow: Some(workflow_to_proto(workflow)), created }))
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        let workflow = self.engine.get(&checked_id(&request.into_inner().workflow_id)?).await?;
        Ok(Response::new(pb::GetWorkflowResponse { workflow: Some(workflow_to_proto(workflow)) }))
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let r = request.into_inner();
        let state = match pb::WorkflowState::try_from(r.state) {
            Ok(pb::WorkflowState::Unspecified) => None,
            Ok(state) => Some(state_from_proto(state)),
            Err(_) => {
                return Err(OrchestratorError::Validation(format!("state {} is not a workflow state", r.state)).into());
            }
        };
        let page = self.engine.list(&r.namespace, state, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListWorkflowsResponse {
            workflows: page.workflows.into_iter().map(workflow_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn cancel_workflow(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::CancelWorkflowResponse>, Status> {
        let r = request.into_inner();
        let workflow = self.engine.cancel(&checked_id(&r.workflow_id)?, &r.reason).await?;
        Ok(Response::new(pb::CancelWorkflowResponse { workflow: Some(workflow_to_proto(workflow)) }))
    }

    type WatchWorkflowStream = WatchStream;

    async fn watch_workflow(
        &self,
        request: Request<pb::WatchWorkflowRequest>,
    ) -> Result<Response<Self::WatchWorkflowStream>, Status> {
        let id = checked_id(&request.into_inner().workflow_id)?;
        // Fail the call itself, not the stream, for an unknown workflow.
        self.engine.get(&id).await?;
        let stream = self.engine.watch(&id).map(|item| {
            item.map(|w| pb::WatchWorkflowResponse { workflow: Some(workflow_to_proto(w)) }).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn checked_id(id: &str) -> Result<String, OrchestratorError> {
    uuid::Uuid::parse_str(id)
        .map(|_| id.to_owned())
        .map_err(|_| OrchestratorError::Validation(format!("workflow_id {id:?} is not a UUID")))
}

fn start_request(
    namespace: String,
    input: Option<pb::WorkflowInput>,
    correlation_id: String,
    idempotency_key: String,
) -> Result<StartRequest, OrchestratorError> {
    let input = input.ok_or_else(|| OrchestratorError::Validation("input is required".into()))?;
    let format = match StampFormat::try_from(input.format) {
        Ok(StampFormat::Rich) => "rich",
        Ok(_) => "lightweight",
        Err(_) => return Err(OrchestratorError::Validation(format!("format {} is not a stamp format", input.format))),
    };
    Ok(StartRequest {
        namespace,
        input: WorkflowInput {
            content: input.content,
            file_path: input.file_path,
            content_type: input.content_type,
            format: format.to_owned(),
            enable_intelligence: input.enable_intelligence,
            context: input.context.into_iter().collect(),
        },
        correlation_id: (!correlation_id.is_empty()).then_some(correlation_id),
        idempotency_key: (!idempotency_key.is_empty()).then_some(idempotency_key),
    })
}

fn state_from_proto(state: pb::WorkflowState) -> WorkflowState {
    match state {
        pb::WorkflowState::Unspecified | pb::WorkflowState::Pending => WorkflowState::Pending,
        pb::WorkflowState::Processing => WorkflowState::Processing,
        pb::WorkflowState::Completed => WorkflowState::Completed,
        pb::WorkflowState::Failed => WorkflowState::Failed,
        pb::WorkflowState::Cancelled => WorkflowState::Cancelled,
    }
}

/// The proto value of a state.
pub fn state_to_proto(state: WorkflowState) -> pb::WorkflowState {
    match state {
        WorkflowState::Pending => pb::WorkflowState::Pending,
        WorkflowState::Processing => pb::WorkflowState::Processing,
        WorkflowState::Completed => pb::WorkflowState::Completed,
        WorkflowState::Failed => pb::WorkflowState::Failed,
        WorkflowState::Cancelled => pb::WorkflowState::Cancelled,
    }
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

use omninode_mesh::time::to_timestamp as timestamp;

/// The proto form of a workflow.
pub fn workflow_to_proto(w: Workflow) -> pb::Workflow {
    pb::Workflow {
        workflow_id: w.id,
        namespace: w.namespace,
        workflow_type: w.workflow_type,
        state: state_to_proto(w.state) as i32,
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
