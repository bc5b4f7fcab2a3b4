//! Proto conversions: events in (what an `EventEnvelope` contributes) and
//! `omninode.reducer.v1` messages out. The only place that knows both.

use omninode_proto::{
    events::v1::{EventEnvelope, event_envelope::Payload},
    reducer::v1 as pb,
};
use omninode_runtime::convert::{to_timestamp as timestamp, workflow_state_from_proto};

use crate::domain::aggregate::{Aggregate, Item, ItemKind};

/// What an envelope contributes; `None` for events the reducer does not count.
pub fn item_from(envelope: EventEnvelope) -> Option<Item> {
    let kind = match envelope.payload? {
        Payload::StampCreated(stamp) => {
            ItemKind::Stamp { file_size: stamp.file_size, content_type: stamp.content_type }
        }
        Payload::WorkflowStateChanged(change) => {
            let state = workflow_state_from_proto(change.to_state).ok().flatten()?;
            let from = workflow_state_from_proto(change.from_state).ok().flatten();
            ItemKind::Workflow { workflow_id: change.workflow_id, state, from }
        }
        Payload::AggregateUpdated(_) => return None,
    };
    Some(Item { event_id: envelope.event_id, namespace: envelope.namespace, kind })
}

/// The proto form of an aggregate.
pub fn to_proto(a: Aggregate) -> pb::NamespaceStats {
    pb::NamespaceStats {
        namespace: a.namespace,
        total_stamps: a.total_stamps,
        total_size_bytes: a.total_size_bytes,
        file_type_counts: a.file_type_counts.into_iter().collect(),
        unique_workflows: a.unique_workflows,
        workflow_state_counts: a.workflow_state_counts.into_iter().collect(),
        window_start: a.window_start.map(timestamp),
        window_end: a.window_end.map(timestamp),
        items_per_second: a.items_per_second,
        last_updated: Some(timestamp(a.last_aggregation_at)),
        version: a.version.max(0) as u64,
    }
}
