//! The gRPC adapter: proto messages in, [`Stamper`] calls, proto messages out.

use std::time::Instant;

use futures::StreamExt;
use omninode_proto::stamping::v1::{
    self as pb,
    stamping_service_server::{StampingService, StampingServiceServer},
};
use tonic::{Request, Response, Status, Streaming};

use omninode_core::hash::hash_bytes;
use omninode_runtime::auth::{Permission, caller_of};
use omninode_runtime::{ErrorCode, reason};

use crate::{
    convert::{
        batch_inputs, batch_response, non_empty, record_to_proto, stamp_input, stamp_response, validate_response,
    },
    stamper::Stamper,
};

/// How long a HashStream may wait for its next chunk.
const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// `omninode.stamping.v1.StampingService` over a [`Stamper`].
#[derive(Debug, Clone)]
pub struct StampingGrpc {
    stamper: Stamper,
}

impl StampingGrpc {
    pub fn new(stamper: Stamper) -> Self {
        Self { stamper }
    }

    /// The tonic service, with message limits sized for the content limit.
    pub fn into_server(self) -> StampingServiceServer<Self> {
        let max = self.stamper.config().max_message_bytes();
        StampingServiceServer::new(self).max_decoding_message_size(max).max_encoding_message_size(max)
    }
}

#[tonic::async_trait]
impl StampingService for StampingGrpc {
    async fn hash(&self, request: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        let started = Instant::now();
        caller_of(&request).authorize_any(Permission::Read)?;
        let request = request.into_inner();
        let hash = if request.normalize {
            self.stamper.normalized_hash(&request.content)?
        } else {
            hash_bytes(&request.content)
        };
        Ok(Response::new(pb::HashResponse {
            hash,
            size_bytes: request.content.len() as u64,
            execution_time_us: started.elapsed().as_micros() as u64,
        }))
    }

    async fn hash_stream(
        &self,
        request: Request<Streaming<pb::HashStreamRequest>>,
    ) -> Result<Response<pb::HashStreamResponse>, Status> {
        let started = Instant::now();
        caller_of(&request).authorize_any(Permission::Read)?;
        let mut stream = request.into_inner();
        let mut hasher = blake3::Hasher::new();
        let (mut size, mut chunks) = (0u64, 0u64);
        loop {
            // A client that stops sending does not hold the call open.
            let next = tokio::time::timeout(STREAM_IDLE, stream.next()).await.map_err(|_| {
                let message = format!("no chunk within {} s; the stream is closed", STREAM_IDLE.as_secs());
                Status::from(omninode_runtime::ApiError::new(ErrorCode::DeadlineExceeded, reason::STREAM_IDLE, message))
            })?;
            let Some(message) = next else { break };
            let chunk = message?.chunk;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            chunks += 1;
        }
        Ok(Response::new(pb::HashStreamResponse {
            hash: hasher.finalize().to_hex().to_string(),
            size_bytes: size,
            chunks,
            execution_time_us: started.elapsed().as_micros() as u64,
        }))
    }

    async fn stamp(&self, request: Request<pb::StampRequest>) -> Result<Response<pb::StampResponse>, Status> {
        caller_of(&request).authorize_request(Permission::Write, &request.get_ref().namespace)?;
        let mut r = request.into_inner();
        let input = stamp_input(&mut r);
        let correlation_id = non_empty(r.correlation_id);
        let outcome = self.stamper.stamp(&r.namespace, input, correlation_id.as_deref()).await?;
        tracing::debug!(correlation_id = correlation_id.as_deref().unwrap_or_default(), hash = %outcome.record.file_hash, created = outcome.created, "stamped");
        Ok(Response::new(stamp_response(outcome)))
    }

    async fn validate(&self, request: Request<pb::ValidateRequest>) -> Result<Response<pb::ValidateResponse>, Status> {
        caller_of(&request).authorize_any(Permission::Read)?;
        let r = request.into_inner();
        let validation = self.stamper.validate(&r.content, &r.expected_hash)?;
        Ok(Response::new(validate_response(validation)))
    }

    async fn get_stamp(&self, request: Request<pb::GetStampRequest>) -> Result<Response<pb::GetStampResponse>, Status> {
        caller_of(&request).authorize_request(Permission::Read, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let record = self.stamper.get(&r.namespace, &r.file_hash).await?;
        Ok(Response::new(pb::GetStampResponse { stamp: Some(record_to_proto(record)) }))
    }

    async fn list_stamps(
        &self,
        request: Request<pb::ListStampsRequest>,
    ) -> Result<Response<pb::ListStampsResponse>, Status> {
        caller_of(&request).authorize_request(Permission::Read, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let page = self.stamper.list(&r.namespace, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListStampsResponse {
            stamps: page.items.into_iter().map(record_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn batch_stamp(
        &self,
        request: Request<pb::BatchStampRequest>,
    ) -> Result<Response<pb::BatchStampResponse>, Status> {
        caller_of(&request).authorize_request(Permission::Write, &request.get_ref().namespace)?;
        let r = request.into_inner();
        let inputs = batch_inputs(r.items, r.format, r.version);
        let correlation_id = non_empty(r.correlation_id);
        let outcomes = self.stamper.stamp_batch(&r.namespace, inputs, correlation_id.as_deref()).await?;
        Ok(Response::new(batch_response(outcomes)))
    }
}
