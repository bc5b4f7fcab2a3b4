//! Event kinds and their topics — the one place topic names are defined.
//!
//! Topic = `<KAFKA_TOPIC_PREFIX>.evt.<event-type>.v1`, prefix default
//! `dev.omninode_bridge.onex`:
//! - `….evt.stamp-created.v1` (key: stamp hash)
//! - `….evt.workflow-state-changed.v1` (key: workflow id)
//! - `….evt.aggregate-updated.v1` (key: namespace)

/// Default `KAFKA_TOPIC_PREFIX`.
pub const DEFAULT_TOPIC_PREFIX: &str = "dev.omninode_bridge.onex";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    StampCreated,
    WorkflowStateChanged,
    AggregateUpdated,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [Self::StampCreated, Self::WorkflowStateChanged, Self::AggregateUpdated];

    /// `event_type` of the envelope.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::StampCreated => "stamp-created",
            Self::WorkflowStateChanged => "workflow-state-changed",
            Self::AggregateUpdated => "aggregate-updated",
        }
    }

    /// The topic of this kind under `prefix`.
    pub fn topic(self, prefix: &str) -> String {
        format!("{prefix}.evt.{}.v1", self.event_type())
    }

    /// Version of the payload schema.
    pub fn version(self) -> u32 {
        1
    }
}

/// Every topic under `prefix`.
pub fn all_topics(prefix: &str) -> Vec<String> {
    EventKind::ALL.iter().map(|kind| kind.topic(prefix)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_design() {
        assert_eq!(
            EventKind::StampCreated.topic(DEFAULT_TOPIC_PREFIX),
            "dev.omninode_bridge.onex.evt.stamp-created.v1"
        );
        assert_eq!(
            all_topics("prod.x"),
            ["prod.x.evt.stamp-created.v1", "prod.x.evt.workflow-state-changed.v1", "prod.x.evt.aggregate-updated.v1"]
        );
    }
}
