//! Errors in REST form: the `google.rpc.Status` JSON grpc-gateway writes,
//! its `details` holding the `google.rpc.ErrorInfo` and `google.rpc.BadRequest`
//! of the gRPC status (`grpc-status-details-bin`), in proto3 JSON with `@type`,
//! and a `google.rpc.RequestInfo` naming the request id and trace id to quote.

use omninode_runtime::{ApiError, ErrorCode, error::REASON_METADATA_KEY, reason};
use serde_json::{Map, Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";
const REQUEST_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RequestInfo";

/// A status the gateway itself answers with, carrying its reason like the services' do.
pub fn refusal(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> Status {
    ApiError::new(code, reason, message).into()
}

/// A request the gateway could not turn into the RPC's message: a field
/// violation for the field the message names (or the request as a whole).
pub fn bad_request(message: impl Into<String>) -> Status {
    let message = message.into();
    let field = omninode_runtime::error::leading_field(&message).unwrap_or_default();
    ApiError::new(ErrorCode::InvalidArgument, reason::VALIDATION_ERROR, message).with_field(field).into()
}

/// The JSON body of `status`. A status that carries no `ErrorInfo` (one a
/// transport or framework produced) gets one from the reason trailer, or
/// `INTERNAL_ERROR`, so that every error names a reason.
pub fn status_json(status: &Status) -> Value {
    let details = status.get_error_details();
    let mut out = Vec::new();
    match details.error_info() {
        Some(info) => {
            let metadata: Map<String, Value> =
                info.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            out.push(
                json!({"@type": ERROR_INFO_TYPE, "reason": info.reason, "domain": info.domain, "metadata": metadata}),
            );
        }
        None => {
            let reason = status
                .metadata()
                .get(REASON_METADATA_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| fallback_reason(status.code()).to_owned());
            out.push(json!({"@type": ERROR_INFO_TYPE, "reason": reason, "domain": omninode_runtime::error::ERROR_DOMAIN, "metadata": {}}));
        }
    }
    if let Some(bad) = details.bad_request() {
        let violations: Vec<Value> =
            bad.field_violations.iter().map(|v| json!({"field": v.field, "description": v.description})).collect();
        out.push(json!({"@type": BAD_REQUEST_TYPE, "fieldViolations": violations}));
    }
    if let Some(request) = crate::request_id::current() {
        let serving = request.trace_id.map(|id| format!("trace_id={id}")).unwrap_or_default();
        out.push(json!({"@type": REQUEST_INFO_TYPE, "requestId": request.request_id, "servingData": serving}));
    }

    json!({"code": status.code() as i32, "message": status.message(), "details": out})
}

/// The HTTP status of an error: grpc-gateway's mapping of its code, except
/// that a request the resource's current state does not allow (a finished
/// workflow cancelled, a signal its state refuses) is 409 Conflict, as HTTP
/// says, rather than grpc-gateway's 400 for FAILED_PRECONDITION.
pub fn http_status(status: &Status) -> axum::http::StatusCode {
    const STATE_CONFLICTS: [&str; 3] =
        [reason::WORKFLOW_TERMINAL, reason::WRONG_WORKFLOW_STATE, reason::ILLEGAL_TRANSITION];
    let conflict = status.code() == Code::FailedPrecondition
        && status.get_error_details().error_info().is_some_and(|info| STATE_CONFLICTS.contains(&info.reason.as_str()));
    if conflict { axum::http::StatusCode::CONFLICT } else { omninode_runtime::error::http_status(status.code()) }
}

/// The reason of a status that named none.
fn fallback_reason(code: Code) -> &'static str {
    match code {
        Code::Unavailable => reason::DEPENDENCY_UNAVAILABLE,
        Code::Unauthenticated => reason::UNAUTHENTICATED,
        Code::PermissionDenied => reason::PERMISSION_DENIED,
        Code::ResourceExhausted => reason::PAYLOAD_TOO_LARGE,
        Code::InvalidArgument | Code::OutOfRange => reason::VALIDATION_ERROR,
        _ => reason::INTERNAL_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_of_the_registry_reaches_the_rest_body_with_its_details() {
        for &name in reason::ALL {
            let mut api = ApiError::new(ErrorCode::InvalidArgument, name, "namespace \"X\" is not valid");
            api.metadata.push(("namespace".into(), "X".into()));
            let body = status_json(&api.with_field("namespace").into());
            assert_eq!(body["details"][0]["@type"], ERROR_INFO_TYPE);
            assert_eq!(body["details"][0]["reason"], name);
            assert_eq!(body["details"][0]["domain"], "omninode");
            assert_eq!(body["details"][0]["metadata"]["namespace"], "X");
            assert_eq!(body["details"][1]["@type"], BAD_REQUEST_TYPE);
            assert_eq!(body["details"][1]["fieldViolations"][0]["field"], "namespace");
        }
    }

    #[test]
    fn a_status_without_details_still_names_a_reason() {
        let body = status_json(&Status::internal("boom"));
        assert_eq!(body["details"][0]["reason"], "INTERNAL_ERROR");
        assert_eq!(body["details"].as_array().unwrap().len(), 1);
        let body = status_json(&bad_request("page_size: \"x\" is not an unsigned integer"));
        assert_eq!(body["details"][0]["reason"], "VALIDATION_ERROR");
        assert_eq!(body["details"][1]["fieldViolations"][0]["field"], "page_size");
    }
}
