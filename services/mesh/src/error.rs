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
        http_status(self.grpc())
    }
}

/// The HTTP status grpc-gateway answers for a gRPC status code (its
/// `HTTPStatusFromCode` table); the gateway and the error type share it.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as H;
    match code {
        Code::Ok => H::OK,
        // 499: client closed request.
        Code::Cancelled => H::from_u16(499).expect("499 is a valid status"),
        Code::Unknown | Code::Internal | Code::DataLoss => H::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => H::BAD_REQUEST,
        Code::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        Code::NotFound => H::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => H::CONFLICT,
        Code::PermissionDenied => H::FORBIDDEN,
        Code::Unauthenticated => H::UNAUTHORIZED,
        Code::ResourceExhausted => H::TOO_MANY_REQUESTS,
        Code::Unimplemented => H::NOT_IMPLEMENTED,
        Code::Unavailable => H::SERVICE_UNAVAILABLE,
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

    #[test]
    fn every_grpc_code_has_grpc_gateways_http_status() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        assert_eq!(table.len(), 17, "every gRPC code");
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }
}
