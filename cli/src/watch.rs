//! `omninode events`: prints the mesh's events from Kafka as JSON lines.

use std::time::Duration;

use anyhow::Context;
use omninode_mesh::events::topics::all_topics;
use omninode_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use prost::Message as _;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use serde_json::{Value, json};

/// Follows every event topic under `prefix` and prints one JSON object per
/// event; stops after `max` events when given.
pub async fn watch(bootstrap: &str, prefix: &str, from_beginning: bool, max: Option<usize>) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("omninode-events-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", if from_beginning { "earliest" } else { "latest" })
        .create()
        .context("cannot create a Kafka consumer")?;
    let topics = all_topics(prefix);
    let start = if from_beginning { Offset::Beginning } else { Offset::End };
    let mut assignment = TopicPartitionList::new();
    for topic in &topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("cannot read the metadata of {topic} from {bootstrap}"))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            assignment.add_partition_offset(topic, partition.id(), start)?;
        }
    }
    consumer.assign(&assignment)?;
    eprintln!("watching {} on {bootstrap} (Ctrl-C to stop)", topics.join(", "));
    let mut seen = 0;
    while max.is_none_or(|max| seen < max) {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(err) => {
                eprintln!("warning: {err}");
                continue;
            }
        };
        let envelope = EventEnvelope::decode(message.payload().unwrap_or_default());
        let line = match envelope {
            Ok(envelope) => envelope_json(&envelope, message.topic(), message.partition(), message.offset()),
            Err(err) => {
                json!({"topic": message.topic(), "offset": message.offset(), "error": format!("not an EventEnvelope: {err}")})
            }
        };
        println!("{line}");
        seen += 1;
    }
    Ok(())
}

/// An envelope as JSON with proto3 JSON names.
pub fn envelope_json(e: &EventEnvelope, topic: &str, partition: i32, offset: i64) -> Value {
    let time = |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| t.to_string()).unwrap_or_default();
    let payload = match &e.payload {
        Some(Payload::StampCreated(p)) => json!({"stampCreated": {
            "stampId": p.stamp_id, "fileHash": p.file_hash, "filePath": p.file_path, "fileSize": p.file_size.to_string(),
            "contentType": p.content_type, "workflowId": p.workflow_id, "createdAt": time(&p.created_at)}}),
        Some(Payload::WorkflowStateChanged(p)) => json!({"workflowStateChanged": {
            "workflowId": p.workflow_id, "fromState": state_name(p.from_state), "toState": state_name(p.to_state),
            "reason": p.reason, "fileHash": p.file_hash, "stampId": p.stamp_id, "changedAt": time(&p.changed_at)}}),
        Some(Payload::AggregateUpdated(p)) => json!({"aggregateUpdated": {
            "totalStamps": p.total_stamps.to_string(), "totalSizeBytes": p.total_size_bytes.to_string(),
            "uniqueWorkflows": p.unique_workflows.to_string(), "version": p.version.to_string(), "updatedAt": time(&p.updated_at)}}),
        None => Value::Null,
    };
    json!({
        "topic": topic, "partition": partition, "offset": offset,
        "eventId": e.event_id, "eventType": e.event_type, "eventVersion": e.event_version,
        "occurredAt": time(&e.occurred_at), "sourceService": e.source_service, "sourceInstance": e.source_instance,
        "correlationId": e.correlation_id, "causationId": e.causation_id, "namespace": e.namespace,
        "partitionKey": e.partition_key, "payload": payload,
    })
}

fn state_name(raw: i32) -> &'static str {
    omninode_proto::orchestrator::v1::WorkflowState::try_from(raw).map(|s| s.as_str_name()).unwrap_or("UNKNOWN")
}
