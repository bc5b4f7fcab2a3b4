//! `omninode events`: prints the mesh's events from Kafka as JSON lines.

use anyhow::Context;
use omninode_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use omninode_runtime::events::{KafkaConfig, topics::all_topics};
use prost::Message as _;
use serde_json::{Value, json};

/// Follows every event topic under `prefix` on `kafka` (its brokers, TLS and
/// SASL settings) and prints one JSON object per event; stops after `max`
/// events when given.
pub async fn watch(kafka: &KafkaConfig, prefix: &str, from_beginning: bool, max: Option<usize>) -> anyhow::Result<()> {
    let bootstrap = &kafka.bootstrap_servers;
    let topics = all_topics(prefix);
    eprintln!("watching {} on {bootstrap} (Ctrl-C to stop)", topics.join(", "));
    let mut seen = 0;
    if max == Some(0) {
        return Ok(());
    }
    omninode_kafka::tail(kafka, &topics, from_beginning, |record| {
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                eprintln!("warning: {err}");
                return true;
            }
        };
        let p = &record.position;
        let line = match EventEnvelope::decode(record.payload.as_slice()) {
            Ok(envelope) => envelope_json(&envelope, &p.topic, p.partition, p.offset),
            Err(err) => json!({"topic": p.topic, "offset": p.offset, "error": format!("not an EventEnvelope: {err}")}),
        };
        println!("{line}");
        seen += 1;
        max.is_none_or(|max| seen < max)
    })
    .await
    .with_context(|| format!("cannot follow the event topics on {bootstrap}"))
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
