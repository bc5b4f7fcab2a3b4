//! The stamping service over gRPC.

use omninode_proto::stamping::v1::{self as pb, stamping_service_client::StampingServiceClient};
use omninode_runtime::server::MeshChannel;
use omninode_runtime::{
    auth::{AuthedChannel, Credential},
    convert::stamp_format_to_proto,
};
use tonic::Code;

use super::CallError;
use crate::domain::workflow::WorkflowInput;

/// A stamp the stamping service recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampResult {
    pub stamp_id: String,
    pub file_hash: String,
    pub stamped_content: String,
}

/// Calls to the stamping service through one channel (HTTP/2, multiplexed,
/// or in process when stamping runs in the same process).
#[derive(Debug, Clone)]
pub struct StampingClient {
    client: StampingServiceClient<AuthedChannel>,
}

impl StampingClient {
    /// Calls carry `credential` (stamping authorizes the orchestrator like any caller).
    pub fn from_channel(channel: MeshChannel, credential: Credential, max_message_bytes: usize) -> Self {
        let client = StampingServiceClient::with_interceptor(channel, credential)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        Self { client }
    }

    /// The generated client itself, for calls made as they come (the Kafka ingress).
    pub fn raw(&self) -> StampingServiceClient<AuthedChannel> {
        self.client.clone()
    }

    /// The hash a Stamp of `content` records.
    pub async fn hash(&self, content: &str) -> Result<String, CallError> {
        let request = pb::HashRequest { content: content.as_bytes().to_vec().into(), normalize: true };
        let response = traced("Hash", self.client.clone().hash(request)).await.map_err(classify)?;
        Ok(response.into_inner().hash)
    }

    /// Stamps the workflow's content; `idempotency_key` makes a repeat safe.
    pub async fn stamp(
        &self,
        namespace: &str,
        input: &WorkflowInput,
        idempotency_key: &str,
        correlation_id: &str,
    ) -> Result<StampResult, CallError> {
        let request = pb::StampRequest {
            namespace: namespace.to_owned(),
            content: input.content.clone(),
            file_path: input.file_path.clone(),
            content_type: input.content_type.clone(),
            format: stamp_format_to_proto(input.format) as i32,
            version: String::new(),
            correlation_id: correlation_id.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
        };
        let response = traced("Stamp", self.client.clone().stamp(request)).await.map_err(classify)?.into_inner();
        let record = response.stamp.ok_or_else(|| CallError::permanent("stamping answered without a record"))?;
        Ok(StampResult {
            stamp_id: record.stamp_id,
            file_hash: record.file_hash,
            stamped_content: response.stamped_content,
        })
    }
}

/// A call to stamping as a client span of the workflow's trace.
async fn traced<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    omninode_runtime::trace::grpc_client("omninode.stamping.v1.StampingService", method, call).await
}

/// Only these codes mean "try again": the rest will not change on a retry.
fn classify(status: tonic::Status) -> CallError {
    let message = format!("stamping answered {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => CallError::retryable(message),
        _ => CallError::permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_codes_are_retryable() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::ResourceExhausted] {
            assert!(classify(tonic::Status::new(code, "x")).retryable, "{code:?}");
        }
        for code in [Code::InvalidArgument, Code::AlreadyExists, Code::Internal, Code::NotFound, Code::Unknown] {
            assert!(!classify(tonic::Status::new(code, "x")).retryable, "{code:?}");
        }
    }
}
