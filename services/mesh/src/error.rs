//! The one mapping from an error's kind to a gRPC status code and an HTTP
//! status. Each crate keeps its own error enum and converts it into a
//! [`MeshError`]; transports only ever see the result of this table.

use tonic::{Code, Status, metadata::MetadataValue};

/// The kinds of failure a caller can act on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    Cancelled,
    DeadlineExceeded,
    Unauthenticated,
    PermissionDenied,
    Unimplemented,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The gRPC status code.
    pub fn grpc(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::Cancelled => Code::Cancelled,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Unimplemented => Code::Unimplemented,
            Self::Unavailable => Code::Unavailable,
            Self::Internal => Code::Internal,
        }
    }

    /// The HTTP status, as grpc-gateway maps the gRPC code.
    pub fn http(self) -> http::StatusCode {
        use http::StatusCode as H;
        match self {
            Self::InvalidArgument => H::BAD_REQUEST,
            Self::NotFound => H::NOT_FOUND,
            Self::AlreadyExists => H::CONFLICT,
            Self::FailedPrecondition => H::BAD_REQUEST,
            Self::ResourceExhausted => H::TOO_MANY_REQUESTS,
            // grpc-gateway answers a cancelled call with 499 (client closed request).
            Self::Cancelled => H::from_u16(499).expect("499 is a valid status"),
            Self::DeadlineExceeded => H::GATEWAY_TIMEOUT,
            Self::Unauthenticated => H::UNAUTHORIZED,
            Self::PermissionDenied => H::FORBIDDEN,
            Self::Unimplemented => H::NOT_IMPLEMENTED,
            Self::Unavailable => H::SERVICE_UNAVAILABLE,
            Self::Internal => H::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Metadata key carrying the machine-readable reason (e.g. `NAMESPACE_INVALID`).
pub const REASON_METADATA_KEY: &str = "omninode-error-reason";

/// An error ready for a transport: its kind, a stable reason and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct MeshError {
    pub code: ErrorCode,
    /// Stable, upper-snake-case reason, e.g. `VALIDATION_ERROR`.
    pub reason: &'static str,
    pub message: String,
}

impl MeshError {
    pub fn new(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into() }
    }
}

impl From<MeshError> for Status {
    fn from(err: MeshError) -> Self {
        let mut status = Status::new(err.code.grpc(), err.message);
        status.metadata_mut().insert(REASON_METADATA_KEY, MetadataValue::from_static(err.reason));
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_code_message_and_reason() {
        let status: Status = MeshError::new(ErrorCode::NotFound, "STAMP_NOT_FOUND", "no stamp for abc").into();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no stamp for abc");
        assert_eq!(status.metadata().get(REASON_METADATA_KEY).unwrap(), "STAMP_NOT_FOUND");
    }

    #[test]
    fn http_mapping_follows_grpc_gateway() {
        let table = [
            (ErrorCode::InvalidArgument, 400),
            (ErrorCode::NotFound, 404),
            (ErrorCode::AlreadyExists, 409),
            (ErrorCode::FailedPrecondition, 400),
            (ErrorCode::ResourceExhausted, 429),
            (ErrorCode::Cancelled, 499),
            (ErrorCode::DeadlineExceeded, 504),
            (ErrorCode::Unauthenticated, 401),
            (ErrorCode::PermissionDenied, 403),
            (ErrorCode::Unimplemented, 501),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Internal, 500),
        ];
        for (code, http) in table {
            assert_eq!(code.http().as_u16(), http, "{code:?}");
        }
    }
}
