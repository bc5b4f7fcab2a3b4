//! The one error model: each crate keeps its own error enum and implements
//! [`ServiceError`] for it (code, reason, public message); the conversions to
//! a gRPC status and an HTTP status live here, once, with the registry of
//! reasons ([`reason`]).

use tonic::{Code, Status, metadata::MetadataValue};

/// The kinds of failure a caller can act on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    DeadlineExceeded,
    Unauthenticated,
    PermissionDenied,
    Unavailable,
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
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Unavailable => Code::Unavailable,
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

/// Every reason a caller can see, in one registry: services name their
/// errors with these constants, and the README documents exactly this list
/// (a test compares them).
pub mod reason {
    /// A field of the request is not acceptable.
    pub const VALIDATION_ERROR: &str = "VALIDATION_ERROR";
    /// The namespace is not lowercase dotted segments.
    pub const NAMESPACE_INVALID: &str = "NAMESPACE_INVALID";
    /// A hash is not 64 lowercase hex characters.
    pub const INVALID_HASH_FORMAT: &str = "INVALID_HASH_FORMAT";
    /// A BatchStamp without items.
    pub const EMPTY_BATCH_REQUEST: &str = "EMPTY_BATCH_REQUEST";
    /// No stamp for that hash in that namespace.
    pub const STAMP_NOT_FOUND: &str = "STAMP_NOT_FOUND";
    /// No workflow with that id.
    pub const WORKFLOW_NOT_FOUND: &str = "WORKFLOW_NOT_FOUND";
    /// No workflow definition of that name (and version).
    pub const DEFINITION_NOT_FOUND: &str = "DEFINITION_NOT_FOUND";
    /// No aggregates for that namespace yet.
    pub const NAMESPACE_NOT_FOUND: &str = "NAMESPACE_NOT_FOUND";
    /// An idempotency key reused for other content.
    pub const OPERATION_ID_CONFLICT: &str = "OPERATION_ID_CONFLICT";
    /// The workflow queue is full.
    pub const QUEUE_FULL: &str = "QUEUE_FULL";
    /// The workflow already ended.
    pub const WORKFLOW_TERMINAL: &str = "WORKFLOW_TERMINAL";
    /// A workflow state change the state machine does not allow.
    pub const ILLEGAL_TRANSITION: &str = "ILLEGAL_TRANSITION";
    /// A signal (approve, reject, retry, pause, resume) the workflow's state does not allow.
    pub const WRONG_WORKFLOW_STATE: &str = "WRONG_WORKFLOW_STATE";
    /// A RunWorkflow did not see its workflow end in time.
    pub const WORKFLOW_TIMEOUT: &str = "WORKFLOW_TIMEOUT";
    /// An aggregate changed concurrently (retried internally).
    pub const VERSION_MISMATCH: &str = "VERSION_MISMATCH";
    /// The process is shutting down.
    pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
    /// The database is unreachable or failed.
    pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";
    /// A dependency (broker, service) could not be set up.
    pub const DEPENDENCY_UNAVAILABLE: &str = "DEPENDENCY_UNAVAILABLE";
    /// No valid credentials.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The caller's grants do not cover the permission and namespace.
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";

    /// The whole registry.
    pub const ALL: &[&str] = &[
        VALIDATION_ERROR,
        NAMESPACE_INVALID,
        INVALID_HASH_FORMAT,
        EMPTY_BATCH_REQUEST,
        STAMP_NOT_FOUND,
        WORKFLOW_NOT_FOUND,
        DEFINITION_NOT_FOUND,
        NAMESPACE_NOT_FOUND,
        OPERATION_ID_CONFLICT,
        QUEUE_FULL,
        WORKFLOW_TERMINAL,
        ILLEGAL_TRANSITION,
        WRONG_WORKFLOW_STATE,
        WORKFLOW_TIMEOUT,
        VERSION_MISMATCH,
        SHUTTING_DOWN,
        STORE_UNAVAILABLE,
        DEPENDENCY_UNAVAILABLE,
        UNAUTHENTICATED,
        PERMISSION_DENIED,
    ];
}

/// An error a service answers with: each crate's error enum implements this
/// once, and every transport converts through it.
pub trait ServiceError: std::error::Error {
    /// The kind of failure.
    fn code(&self) -> ErrorCode;

    /// The stable reason, one of [`reason::ALL`].
    fn reason(&self) -> &'static str;

    /// What the caller is told. Defaults to the error's text; errors whose
    /// text holds internal detail override it (the detail is then logged).
    fn public_message(&self) -> String {
        self.to_string()
    }

    /// The error as a transport-neutral value.
    fn to_api(&self) -> ApiError {
        let message = self.public_message();
        if self.code() == ErrorCode::Unavailable {
            tracing::error!(reason = self.reason(), detail = %self, "request failed");
        }
        ApiError::new(self.code(), self.reason(), message)
    }

    /// The gRPC status: code, public message, reason in metadata.
    fn into_status(self) -> Status
    where
        Self: Sized,
    {
        self.to_api().into()
    }
}

/// Implements `From<$error> for tonic::Status` through [`ServiceError`], so
/// `?` works in gRPC handlers. The conversion itself is written once, above.
#[macro_export]
macro_rules! grpc_status_from {
    ($error:ty) => {
        impl From<$error> for ::tonic::Status {
            fn from(err: $error) -> Self {
                $crate::error::ServiceError::into_status(err)
            }
        }
    };
}

/// An error ready for a transport: its kind, a stable reason and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    /// Stable, upper-snake-case reason, e.g. `VALIDATION_ERROR`.
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into() }
    }

    /// The HTTP status of this error.
    pub fn http(&self) -> http::StatusCode {
        self.code.http()
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
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
        let status: Status = ApiError::new(ErrorCode::NotFound, reason::STAMP_NOT_FOUND, "no stamp for abc").into();
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
            (ErrorCode::DeadlineExceeded, 504),
            (ErrorCode::Unauthenticated, 401),
            (ErrorCode::PermissionDenied, 403),
            (ErrorCode::Unavailable, 503),
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

    /// The README's table of reasons lists exactly the registry.
    #[test]
    fn readme_documents_every_reason_in_the_registry() {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("<!-- reasons:start -->")
            .nth(1)
            .and_then(|rest| rest.split("<!-- reasons:end -->").next())
            .expect("README has a reasons table between <!-- reasons:start --> and <!-- reasons:end -->");
        let mut documented: Vec<&str> = table
            .lines()
            .filter_map(|line| line.split('`').nth(1))
            .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        let mut registry = reason::ALL.to_vec();
        documented.sort_unstable();
        registry.sort_unstable();
        assert_eq!(documented, registry);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("database said: {0}")]
    struct StoreDown(&'static str);

    impl ServiceError for StoreDown {
        fn code(&self) -> ErrorCode {
            ErrorCode::Unavailable
        }
        fn reason(&self) -> &'static str {
            reason::STORE_UNAVAILABLE
        }
        fn public_message(&self) -> String {
            "the store is unavailable; retry later".into()
        }
    }

    #[test]
    fn internal_detail_stays_out_of_the_status() {
        let status = StoreDown("password authentication failed").into_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "the store is unavailable; retry later");
        assert_eq!(status.metadata().get(REASON_METADATA_KEY).unwrap(), "STORE_UNAVAILABLE");
    }
}
