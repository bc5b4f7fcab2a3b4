//! The gRPC adapter: proto messages in, [`Stamper`] calls, proto messages out.

use std::time::Instant;

use futures::StreamExt;
use omninode_proto::stamping::v1::{
    self as pb,
    stamping_service_server::{StampingService, StampingServiceServer},
};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    domain::{hash::hash_bytes, record::StampRecord, stamp::StampFormat, validate::Validation},
    error::StampingError,
    stamper::{StampInput, StampOutcome, Stamper},
};

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
        let mut stream = request.into_inner();
        let mut hasher = blake3::Hasher::new();
        let (mut size, mut chunks) = (0u64, 0u64);
        while let Some(message) = stream.next().await {
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
        let r = request.into_inner();
        let input = StampInput {
            content: r.content,
            file_path: r.file_path,
            content_type: r.content_type,
            format: format_from_proto(r.format),
            version: non_empty(r.version),
            idempotency_key: non_empty(r.idempotency_key),
        };
        let correlation_id = (!r.correlation_id.is_empty()).then_some(r.correlation_id.as_str());
        let outcome = self.stamper.stamp(&r.namespace, input, correlation_id).await?;
        tracing::debug!(correlation_id = %r.correlation_id, hash = %outcome.record.file_hash, created = outcome.created, "stamped");
        Ok(Response::new(stamp_response(outcome)))
    }

    async fn validate(&self, request: Request<pb::ValidateRequest>) -> Result<Response<pb::ValidateResponse>, Status> {
        let r = request.into_inner();
        let validation = self.stamper.validate(&r.content, &r.expected_hash)?;
        Ok(Response::new(validate_response(validation)))
    }

    async fn get_stamp(&self, request: Request<pb::GetStampRequest>) -> Result<Response<pb::GetStampResponse>, Status> {
        let r = request.into_inner();
        let record = self.stamper.get(&r.namespace, &r.file_hash).await?;
        Ok(Response::new(pb::GetStampResponse { stamp: Some(record_to_proto(record)) }))
    }

    async fn list_stamps(
        &self,
        request: Request<pb::ListStampsRequest>,
    ) -> Result<Response<pb::ListStampsResponse>, Status> {
        let r = request.into_inner();
        let page = self.stamper.list(&r.namespace, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListStampsResponse {
            stamps: page.records.into_iter().map(record_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn batch_stamp(
        &self,
        request: Request<pb::BatchStampRequest>,
    ) -> Result<Response<pb::BatchStampResponse>, Status> {
        let r = request.into_inner();
        let default_format = format_from_proto(r.format);
        let version = non_empty(r.version);
        let inputs = r
            .items
            .into_iter()
            .map(|item| StampInput {
                content: item.content,
                file_path: item.file_path,
                content_type: item.content_type,
                format: format_from_proto(item.format).or(default_format),
                version: version.clone(),
                idempotency_key: non_empty(item.idempotency_key),
            })
            .collect();
        let correlation_id = (!r.correlation_id.is_empty()).then_some(r.correlation_id.as_str());
        let outcomes = self.stamper.stamp_batch(&r.namespace, inputs, correlation_id).await?;
        let mut response = pb::BatchStampResponse::default();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            let outcome = match outcome {
                Ok(done) => {
                    response.succeeded += 1;
                    pb::batch_stamp_result::Outcome::Stamp(stamp_response(done))
                }
                Err(err) => {
                    response.failed += 1;
                    pb::batch_stamp_result::Outcome::Error(item_error(err))
                }
            };
            response.results.push(pb::BatchStampResult { index: index as u32, outcome: Some(outcome) });
        }
        Ok(Response::new(response))
    }
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn format_from_proto(raw: i32) -> Option<StampFormat> {
    match pb::StampFormat::try_from(raw).unwrap_or(pb::StampFormat::Unspecified) {
        pb::StampFormat::Unspecified => None,
        pb::StampFormat::Lightweight => Some(StampFormat::Lightweight),
        pb::StampFormat::Rich => Some(StampFormat::Rich),
    }
}

fn format_to_proto(format: StampFormat) -> i32 {
    match format {
        StampFormat::Lightweight => pb::StampFormat::Lightweight as i32,
        StampFormat::Rich => pb::StampFormat::Rich as i32,
    }
}

use omninode_mesh::time::to_timestamp as timestamp;

/// The proto form of a record.
pub fn record_to_proto(record: StampRecord) -> pb::StampRecord {
    pb::StampRecord {
        stamp_id: record.id,
        namespace: record.namespace,
        file_hash: record.file_hash,
        file_path: record.file_path,
        file_size: record.file_size,
        content_type: record.content_type,
        format: format_to_proto(record.format),
        version: record.version.unwrap_or_default(),
        protocol_version: record.protocol_version,
        metadata_version: record.metadata_version,
        idempotency_key: record.idempotency_key.unwrap_or_default(),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
    }
}

fn stamp_response(outcome: StampOutcome) -> pb::StampResponse {
    pb::StampResponse {
        stamp: Some(record_to_proto(outcome.record)),
        stamped_content: outcome.stamped_content,
        stamp_text: outcome.stamp_text,
        created: outcome.created,
    }
}

fn validate_response(validation: Validation) -> pb::ValidateResponse {
    pb::ValidateResponse {
        valid: validation.is_valid(),
        reason: validation.problem.unwrap_or_default(),
        current_hash: validation.current_hash,
        stamps: validation
            .stamps
            .into_iter()
            .map(|s| pb::StampCheck {
                format: format_to_proto(s.format),
                stamp_id: s.uid,
                stamped_hash: s.stamped_hash,
                timestamp: s.timestamp,
                valid: s.problem.is_none(),
                reason: s.problem.unwrap_or_default(),
            })
            .collect(),
    }
}

fn item_error(err: StampingError) -> pb::ItemError {
    let mesh = omninode_mesh::MeshError::from(err);
    pb::ItemError { code: mesh.code.grpc() as i32, reason: mesh.reason.to_owned(), message: mesh.message }
}
