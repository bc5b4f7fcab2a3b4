//! The events stamping emits: `stamp-created`, written to the outbox with
//! the record it announces.

use omninode_core::stamp::workflow_of_key;
use omninode_proto::events::v1::{StampCreated, event_envelope::Payload};
use omninode_runtime::events::{EventKind, NewEvent};

use crate::domain::StampRecord;

/// The `stamp-created` event of a new record.
pub(crate) fn stamp_created(
    record: &StampRecord,
    correlation_id: Option<&str>,
    trace_context: Option<String>,
) -> NewEvent {
    let created_at = omninode_runtime::convert::to_timestamp(record.created_at);
    NewEvent {
        kind: EventKind::StampCreated,
        namespace: record.namespace.clone(),
        partition_key: record.file_hash.clone(),
        correlation_id: correlation_id.map(str::to_owned),
        causation_id: None,
        trace_context,
        payload: Payload::StampCreated(StampCreated {
            stamp_id: record.id.clone(),
            file_hash: record.file_hash.clone(),
            file_path: record.file_path.clone(),
            file_size: record.file_size,
            content_type: record.content_type.clone(),
            workflow_id: record.idempotency_key.as_deref().and_then(workflow_of_key).unwrap_or_default().to_owned(),
            created_at: Some(created_at),
        }),
    }
}
