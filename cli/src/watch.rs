//! `omninode events`: prints the mesh's events from Kafka as JSON lines;
//! `omninode request`: sends one request over Kafka and prints its answers.

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

/// What `omninode request` sends, and where.
pub struct Request {
    pub json: String,
    pub topic: String,
    pub answers: String,
    pub key: Option<String>,
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub wait: u64,
}

/// Sends `request` and prints each answer to it (JSON, one per line) until
/// its last: a stamp's or a decision's only answer, a workflow's end. Exits
/// non-zero when the last answer is an error.
pub async fn request(kafka: &KafkaConfig, request: Request) -> anyhow::Result<std::process::ExitCode> {
    let parsed: Value = serde_json::from_str(&request.json).context("the request is not JSON")?;
    let kind = parsed.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default();
    let correlation_id = request.correlation_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let key = request.key.unwrap_or_else(|| correlation_id.clone());
    let mut headers = vec![("content-type", "application/json"), ("correlation_id", correlation_id.as_str())];
    if let Some(idempotency_key) = &request.idempotency_key {
        headers.push(("idempotency_key", idempotency_key));
    }
    let mut failed = false;
    eprintln!("sent {kind} to {} (correlation id {correlation_id}); answers from {}", request.topic, request.answers);
    omninode_kafka::request_reply(
        kafka,
        &request.topic,
        &request.answers,
        &key,
        request.json.as_bytes(),
        &headers,
        std::time::Duration::from_secs(request.wait),
        |payload, _| {
            let Ok(answer) = serde_json::from_slice::<Value>(payload) else { return true };
            if answer["correlationId"] != correlation_id.as_str() {
                return true;
            }
            println!("{answer}");
            failed = answer.get("error").is_some_and(|e| !e.is_null());
            let stage = answer["stage"].as_str().unwrap_or_default();
            // A workflow's first answer (STAGE_ACCEPTED) is followed by its end.
            !(stage == "STAGE_ENDED" || stage == "STAGE_DONE")
        },
    )
    .await
    .with_context(|| format!("no complete answer to {correlation_id} within {} s", request.wait))?;
    Ok(if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS })
}
