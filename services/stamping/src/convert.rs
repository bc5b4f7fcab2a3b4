//! Proto conversions: `omninode.stamping.v1` messages to and from the
//! domain's types. The only place that knows both.

use omninode_core::{StampFormat, validate::Validation};
use omninode_proto::stamping::v1 as pb;
use omninode_runtime::{
    ServiceError,
    convert::{stamp_format_from_proto, stamp_format_to_proto, to_timestamp as timestamp},
};

use crate::{
    domain::StampRecord,
    error::StampingError,
    stamper::{StampInput, StampOutcome},
};

/// A Stamp request's item.
pub(crate) fn stamp_input(r: &mut pb::StampRequest) -> StampInput {
    StampInput {
        content: std::mem::take(&mut r.content),
        file_path: std::mem::take(&mut r.file_path),
        content_type: std::mem::take(&mut r.content_type),
        format: format_from_proto(r.format),
        version: non_empty(std::mem::take(&mut r.version)),
        idempotency_key: non_empty(std::mem::take(&mut r.idempotency_key)),
    }
}

/// A BatchStamp request's items, with the batch's defaults applied.
pub(crate) fn batch_inputs(items: Vec<pb::BatchStampItem>, format: i32, version: String) -> Vec<StampInput> {
    let default_format = format_from_proto(format);
    let version = non_empty(version);
    items
        .into_iter()
        .map(|item| StampInput {
            content: item.content,
            file_path: item.file_path,
            content_type: item.content_type,
            format: format_from_proto(item.format).or(default_format),
            version: version.clone(),
            idempotency_key: non_empty(item.idempotency_key),
        })
        .collect()
}

/// The outcomes of a BatchStamp, counted.
pub(crate) fn batch_response(outcomes: Vec<Result<StampOutcome, StampingError>>) -> pb::BatchStampResponse {
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
    response
}

/// `None` for an empty string.
pub(crate) fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// An unknown number is treated as unspecified, as proto3 does for open enums.
pub(crate) fn format_from_proto(raw: i32) -> Option<StampFormat> {
    stamp_format_from_proto(raw).unwrap_or(None)
}

fn format_to_proto(format: StampFormat) -> i32 {
    stamp_format_to_proto(format) as i32
}

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

pub(crate) fn stamp_response(outcome: StampOutcome) -> pb::StampResponse {
    pb::StampResponse {
        stamp: Some(record_to_proto(outcome.record)),
        stamped_content: outcome.stamped_content,
        stamp_text: outcome.stamp_text,
        created: outcome.created,
    }
}

pub(crate) fn validate_response(validation: Validation) -> pb::ValidateResponse {
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

pub(crate) fn item_error(err: StampingError) -> pb::ItemError {
    let api = err.to_api();
    pb::ItemError { code: api.code.grpc() as i32, reason: api.reason.to_owned(), message: api.message }
}
