//! The events the reducer emits: `aggregate-updated`, written to the outbox
//! in the transaction of the update.

use omninode_proto::events::v1::{AggregateUpdated, event_envelope::Payload};
use omninode_runtime::{
    convert::to_timestamp,
    events::{EventKind, NewEvent},
};

use crate::domain::aggregate::Aggregate;

/// The `aggregate-updated` event of a stored aggregate.
pub(crate) fn aggregate_updated(aggregate: &Aggregate) -> NewEvent {
    let at = aggregate.last_aggregation_at;
    NewEvent {
        kind: EventKind::AggregateUpdated,
        namespace: aggregate.namespace.clone(),
        partition_key: aggregate.namespace.clone(),
        correlation_id: None,
        causation_id: None,
        trace_context: omninode_runtime::trace::stored_context(),
        payload: Payload::AggregateUpdated(AggregateUpdated {
            total_stamps: aggregate.total_stamps,
            total_size_bytes: aggregate.total_size_bytes,
            unique_workflows: aggregate.unique_workflows,
            version: aggregate.version as u64,
            updated_at: Some(to_timestamp(at)),
        }),
    }
}
