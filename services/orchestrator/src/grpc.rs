//! The gRPC adapter: proto messages in, [`WorkflowEngine`] calls, proto messages out.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use omninode_proto::orchestrator::v1::{
    self as pb,
    orchestrator_service_server::{OrchestratorService, OrchestratorServiceServer},
};
use omninode_runtime::{
    auth::{Caller, Permission, caller_of},
    paging::Page,
};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::{
    convert::{checked_id, definition_from_proto, definition_to_proto, start_request, state_filter, workflow_to_proto},
    engine::{Signal, WorkflowEngine},
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

impl OrchestratorGrpc {
    /// Applies a signal for the caller of `request`, who needs write access
    /// to the workflow's namespace; the workflow as it is after.
    async fn signal<T>(&self, request: &Request<T>, id: &str, signal: Signal) -> Result<pb::Workflow, Status> {
        let caller = caller_of(request);
        let id = checked_id(id)?;
        caller.authorize(Permission::Write, &self.engine.get(&id).await?.namespace)?;
        let identity = (caller.identity != Caller::anonymous().identity).then_some(caller.identity.as_str());
        Ok(workflow_to_proto(self.engine.signal(&id, signal, identity).await?))
    }
}

/// Room left in a message for everything but the listed items.
const RESPONSE_MARGIN: usize = 4096;

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchWorkflowResponse, Status>> + Send>>;

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    async fn start_workflow(
        &self,
        request: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        caller_of(&request).authorize_request(Permission::Write, &request.get_ref().namespace)?;
        // Set in process by the Kafka ingress only (no client can put it in a request).
        let reply_to = request.extensions().get::<crate::ingress::ReplyTo>().cloned();
        let r = request.into_inner();
        let mut start = start_request(r.namespace, r.input, r.correlation_id, r.idempotency_key, r.definition)?;
        start.reply_to = reply_to;
        let (workflow, created) = self.engine.submit(start).await?;
        Ok(Response::new(pb::StartWorkflowResponse { workflow: Some(workflow_to_proto(workflow)), created }))
    }

    async fn run_workflow(
        &self,
        request: Request<pb::RunWorkflowRequest>,
    ) -> Result<Response<pb::RunWorkflowResponse>, Status> {
        caller_of(&request).authorize_request(Permission::Write, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let start = start_request(r.namespace, r.input, r.correlation_id, r.idempotency_key, r.definition)?;
        let (workflow, created) = self.engine.run(start).await?;
        Ok(Response::new(pb::RunWorkflowResponse { workflow: Some(workflow_to_proto(workflow)), created }))
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        let caller = caller_of(&request);
        let workflow = self.engine.get(&checked_id(&request.into_inner().workflow_id)?).await?;
        caller.authorize(Permission::Read, &workflow.namespace)?;
        Ok(Response::new(pb::GetWorkflowResponse { workflow: Some(workflow_to_proto(workflow)) }))
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        caller_of(&request).authorize_request(Permission::Read, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let state = state_filter(r.state)?;
        let page = self.engine.list(&r.namespace, state, r.page_size, &r.page_token).await?;
        let page = Page {
            items: page.items.into_iter().map(workflow_to_proto).collect(),
            next_page_token: page.next_page_token,
        };
        // Large workflows (16 MiB of stamped content each) make a page that must still fit one message.
        let page = page.fit(self.max_message_bytes - RESPONSE_MARGIN, |w| w.encoded_len() + 8, |w| &w.workflow_id);
        Ok(Response::new(pb::ListWorkflowsResponse { workflows: page.items, next_page_token: page.next_page_token }))
    }

    async fn cancel_workflow(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::CancelWorkflowResponse>, Status> {
        let caller = caller_of(&request);
        let r = request.into_inner();
        let id = checked_id(&r.workflow_id)?;
        caller.authorize(Permission::Write, &self.engine.get(&id).await?.namespace)?;
        let workflow = self.engine.cancel(&id, &r.reason).await?;
        Ok(Response::new(pb::CancelWorkflowResponse { workflow: Some(workflow_to_proto(workflow)) }))
    }

    async fn approve_step(
        &self,
        request: Request<pb::ApproveStepRequest>,
    ) -> Result<Response<pb::ApproveStepResponse>, Status> {
        let r = request.get_ref();
        let signal = Signal::Decide {
            step: r.step_name.clone(),
            approved: true,
            approver: r.approver.clone(),
            comment: r.comment.clone(),
        };
        let workflow = self.signal(&request, &r.workflow_id, signal).await?;
        Ok(Response::new(pb::ApproveStepResponse { workflow: Some(workflow) }))
    }

    async fn reject_step(
        &self,
        request: Request<pb::RejectStepRequest>,
    ) -> Result<Response<pb::RejectStepResponse>, Status> {
        let r = request.get_ref();
        let signal = Signal::Decide {
            step: r.step_name.clone(),
            approved: false,
            approver: r.approver.clone(),
            comment: r.comment.clone(),
        };
        let workflow = self.signal(&request, &r.workflow_id, signal).await?;
        Ok(Response::new(pb::RejectStepResponse { workflow: Some(workflow) }))
    }

    async fn retry_workflow(
        &self,
        request: Request<pb::RetryWorkflowRequest>,
    ) -> Result<Response<pb::RetryWorkflowResponse>, Status> {
        let r = request.get_ref();
        let workflow = self.signal(&request, &r.workflow_id, Signal::Retry { reason: r.reason.clone() }).await?;
        Ok(Response::new(pb::RetryWorkflowResponse { workflow: Some(workflow) }))
    }

    async fn pause_workflow(
        &self,
        request: Request<pb::PauseWorkflowRequest>,
    ) -> Result<Response<pb::PauseWorkflowResponse>, Status> {
        let r = request.get_ref();
        let workflow = self.signal(&request, &r.workflow_id, Signal::Pause { reason: r.reason.clone() }).await?;
        Ok(Response::new(pb::PauseWorkflowResponse { workflow: Some(workflow) }))
    }

    async fn resume_workflow(
        &self,
        request: Request<pb::ResumeWorkflowRequest>,
    ) -> Result<Response<pb::ResumeWorkflowResponse>, Status> {
        let r = request.get_ref();
        let workflow = self.signal(&request, &r.workflow_id, Signal::Resume { reason: r.reason.clone() }).await?;
        Ok(Response::new(pb::ResumeWorkflowResponse { workflow: Some(workflow) }))
    }

    type WatchWorkflowStream = WatchStream;

    async fn watch_workflow(
        &self,
        request: Request<pb::WatchWorkflowRequest>,
    ) -> Result<Response<Self::WatchWorkflowStream>, Status> {
        let caller = caller_of(&request);
        let id = checked_id(&request.into_inner().workflow_id)?;
        // Fail the call itself, not the stream, for an unknown workflow.
        caller.authorize(Permission::Read, &self.engine.get(&id).await?.namespace)?;
        let stream = self.engine.watch(&id).map(|item| {
            item.map(|w| pb::WatchWorkflowResponse { workflow: Some(workflow_to_proto(w)) }).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_workflow_definition(
        &self,
        request: Request<pb::CreateWorkflowDefinitionRequest>,
    ) -> Result<Response<pb::CreateWorkflowDefinitionResponse>, Status> {
        // A definition calls any URL it names: creating one is an admin's act.
        caller_of(&request).authorize_any(Permission::Admin)?;
        let (name, description, steps) = definition_from_proto(request.into_inner().definition)?;
        let definition = self.engine.create_definition(&name, &description, steps).await?;
        Ok(Response::new(pb::CreateWorkflowDefinitionResponse { definition: Some(definition_to_proto(definition)) }))
    }

    async fn get_workflow_definition(
        &self,
        request: Request<pb::GetWorkflowDefinitionRequest>,
    ) -> Result<Response<pb::GetWorkflowDefinitionResponse>, Status> {
        caller_of(&request).authorize_any(Permission::Read)?;
        let definition = self.engine.definition(&request.into_inner().name).await?;
        Ok(Response::new(pb::GetWorkflowDefinitionResponse { definition: Some(definition_to_proto(definition)) }))
    }

    async fn list_workflow_definitions(
        &self,
        request: Request<pb::ListWorkflowDefinitionsRequest>,
    ) -> Result<Response<pb::ListWorkflowDefinitionsResponse>, Status> {
        caller_of(&request).authorize_any(Permission::Read)?;
        let r = request.into_inner();
        let page = self.engine.definitions(&r.name, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListWorkflowDefinitionsResponse {
            definitions: page.items.into_iter().map(definition_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
