//! The one error model: each crate keeps its own error enum and implements
//! [`ServiceError`] for it (code, reason, public message); the conversions to
//! a gRPC status and an HTTP status live here, once, with the registry of
//! reasons ([`reason`]).

use tonic::{Code, Status, metadata::MetadataValue};
use tonic_types::{ErrorDetails, StatusExt};

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
/// Kept for callers written before the reason moved into `google.rpc.ErrorInfo`.
pub const REASON_METADATA_KEY: &str = "omninode-error-reason";

/// The `google.rpc.ErrorInfo` domain of every reason in [`reason`].
pub const ERROR_DOMAIN: &str = "omninode";

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
    /// The workflow's definition has no step of that name.
    pub const STEP_NOT_FOUND: &str = "STEP_NOT_FOUND";
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
    /// A client stream sent nothing for too long.
    pub const STREAM_IDLE: &str = "STREAM_IDLE";
    /// The gateway has no route for the path.
    pub const ROUTE_NOT_FOUND: &str = "ROUTE_NOT_FOUND";
    /// The gateway serves the path, but not with that HTTP method.
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// A request body over the gateway's limit.
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// A request body of a media type the route does not take.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    /// A `Host` or cross-site `Origin` the gateway does not serve.
    pub const HOST_NOT_ALLOWED: &str = "HOST_NOT_ALLOWED";
    /// A failure that named no reason (a transport or framework error).
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";

    /// The whole registry.
    pub const ALL: &[&str] = &[
        VALIDATION_ERROR,
        NAMESPACE_INVALID,
        INVALID_HASH_FORMAT,
        EMPTY_BATCH_REQUEST,
        STAMP_NOT_FOUND,
        WORKFLOW_NOT_FOUND,
        STEP_NOT_FOUND,
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
        STREAM_IDLE,
        ROUTE_NOT_FOUND,
        METHOD_NOT_ALLOWED,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        HOST_NOT_ALLOWED,
        INTERNAL_ERROR,
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

    /// What the error is about, for `google.rpc.ErrorInfo.metadata`: the
    /// offending namespace, workflow id, hash… (keys are proto field names).
    fn error_metadata(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The request field an INVALID_ARGUMENT error is about, for
    /// `google.rpc.BadRequest`. Defaults to the field a reason is about
    /// (`namespace`, a batch's `items`), else the field the message starts
    /// with (validation messages name their field first: "content is …").
    fn field(&self) -> Option<String> {
        match self.reason() {
            reason::NAMESPACE_INVALID => Some("namespace".to_owned()),
            reason::EMPTY_BATCH_REQUEST => Some("items".to_owned()),
            _ => leading_field(&self.public_message()),
        }
    }

    /// The error as a transport-neutral value.
    fn to_api(&self) -> ApiError {
        let message = self.public_message();
        if self.code() == ErrorCode::Unavailable {
            tracing::error!(reason = self.reason(), detail = %self, "request failed");
        }
        let mut api = ApiError::new(self.code(), self.reason(), message);
        api.metadata = self.error_metadata().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if self.code() == ErrorCode::InvalidArgument {
            api = api.with_field(self.field().unwrap_or_default());
        }
        api
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

/// The request field a validation message starts with (`content is …`,
/// `file_hash "…" is not …`, `items[2].file_path must …`), if it starts with one.
pub fn leading_field(message: &str) -> Option<String> {
    let token = message.split([' ', ':']).next()?;
    let field_like = token.starts_with(|c: char| c.is_ascii_lowercase())
        && token.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c));
    // Words validation messages start with that are not fields.
    const NOT_FIELDS: [&str; 10] =
        ["the", "a", "an", "no", "stamp", "step", "workflow", "hash", "idempotency", "invalid"];
    (field_like && !NOT_FIELDS.contains(&token)).then(|| token.to_owned())
}

/// An error ready for a transport: its kind, a stable reason, a message for
/// people, and the structured details every transport carries
/// (`google.rpc.ErrorInfo`, and `google.rpc.BadRequest` for invalid fields).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    /// Stable, upper-snake-case reason, e.g. `VALIDATION_ERROR`.
    pub reason: &'static str,
    pub message: String,
    /// `ErrorInfo.metadata`: what the error is about.
    pub metadata: Vec<(String, String)>,
    /// `BadRequest.field_violations`: (field path, description).
    pub violations: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), metadata: Vec::new(), violations: Vec::new() }
    }

    /// Adds a field violation for `field` (empty: the request as a whole)
    /// described by the message, and names the field in the metadata.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        if !field.is_empty() && !self.metadata.iter().any(|(k, _)| k == "field") {
            self.metadata.push(("field".to_owned(), field.clone()));
        }
        self.violations.push((field, self.message.clone()));
        self
    }

    /// The structured details of this error.
    pub fn details(&self) -> ErrorDetails {
        let metadata = self.metadata.iter().cloned().collect::<std::collections::HashMap<_, _>>();
        let mut details = ErrorDetails::with_error_info(self.reason, ERROR_DOMAIN, metadata);
        for (field, description) in &self.violations {
            details.add_bad_request_violation(field.clone(), description.clone());
        }
        details
    }

    /// The HTTP status of this error.
    pub fn http(&self) -> http::StatusCode {
        self.code.http()
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(REASON_METADATA_KEY, MetadataValue::from_static(err.reason));
        let details = err.details();
        Status::with_error_details_and_metadata(err.code.grpc(), err.message, details, metadata)
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
    fn status_details_carry_error_info_and_field_violations() {
        let mut api = ApiError::new(ErrorCode::InvalidArgument, reason::NAMESPACE_INVALID, "namespace \"A\" is bad");
        api.metadata.push(("namespace".into(), "A".into()));
        let status: Status = api.with_field("namespace").into();
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("NAMESPACE_INVALID", ERROR_DOMAIN));
        assert_eq!(info.metadata.get("namespace").map(String::as_str), Some("A"));
        assert_eq!(info.metadata.get("field").map(String::as_str), Some("namespace"));
        let violations = &details.bad_request().expect("BadRequest").field_violations;
        assert_eq!(violations[0].field, "namespace");
        assert_eq!(violations[0].description, "namespace \"A\" is bad");
        assert_eq!(status.metadata().get(REASON_METADATA_KEY).unwrap(), "NAMESPACE_INVALID");
    }

    #[test]
    fn validation_messages_name_their_field_first() {
        assert_eq!(leading_field("content is 9 bytes; the limit is 8").as_deref(), Some("content"));
        assert_eq!(leading_field("file_hash \"x\" is not a BLAKE3 hash").as_deref(), Some("file_hash"));
        assert_eq!(leading_field("items[2].file_path must not").as_deref(), Some("items[2].file_path"));
        assert_eq!(leading_field("input is required").as_deref(), Some("input"));
        assert_eq!(leading_field("the store refused a value"), None);
        assert_eq!(leading_field("Namespace is bad"), None);
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
