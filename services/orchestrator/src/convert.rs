//! Proto conversions: `omninode.orchestrator.v1` messages to and from the
//! domain's types. The only place that knows both.

use omninode_core::limits;
use omninode_proto::orchestrator::v1 as pb;
use omninode_runtime::convert::{
    stamp_format_from_proto, stamp_format_to_proto, to_timestamp as timestamp, workflow_state_from_proto,
    workflow_state_to_proto,
};

use crate::{
    domain::{
        WorkflowState,
        definition::{BUILT_IN, Definition, StepDefinition, StepKind, StepRetry, TimerWait},
        workflow::{StepOutcome, StepRecord, Transition, Workflow, WorkflowInput},
    },
    engine::StartRequest,
    error::OrchestratorError,
};

/// A workflow id from a request: it must be a UUID.
pub(crate) fn checked_id(id: &str) -> Result<String, OrchestratorError> {
    uuid::Uuid::parse_str(id)
        .map(|_| id.to_owned())
        .map_err(|_| OrchestratorError::Validation(format!("workflow_id {:?} is not a UUID", limits::prefix(id, 40))))
}

/// The fields StartWorkflow and RunWorkflow share.
pub(crate) fn start_request(
    namespace: String,
    input: Option<pb::WorkflowInput>,
    correlation_id: String,
    idempotency_key: String,
    definition: String,
) -> Result<StartRequest, OrchestratorError> {
    let input = input.ok_or_else(|| OrchestratorError::Validation("input is required".into()))?;
    let format = stamp_format_from_proto(input.format).map_err(OrchestratorError::Validation)?.unwrap_or_default();
    Ok(StartRequest {
        namespace,
        input: WorkflowInput {
            content: input.content,
            file_path: input.file_path,
            content_type: input.content_type,
            format,
            enable_intelligence: input.enable_intelligence,
            context: input.context.into_iter().collect(),
        },
        correlation_id: (!correlation_id.is_empty()).then_some(correlation_id),
        idempotency_key: (!idempotency_key.is_empty()).then_some(idempotency_key),
        // The built-in pipeline may be named too.
        definition: (!definition.is_empty() && definition != BUILT_IN).then_some(definition),
        reply_to: None,
    })
}

/// A ListWorkflows state filter: `None` for unspecified.
pub(crate) fn state_filter(raw: i32) -> Result<Option<WorkflowState>, OrchestratorError> {
    workflow_state_from_proto(raw).map_err(OrchestratorError::Validation)
}

fn outcome_to_proto(outcome: StepOutcome) -> pb::StepOutcome {
    match outcome {
        StepOutcome::Succeeded => pb::StepOutcome::Succeeded,
        StepOutcome::Failed => pb::StepOutcome::Failed,
        StepOutcome::Skipped => pb::StepOutcome::Skipped,
        StepOutcome::Degraded => pb::StepOutcome::Degraded,
        StepOutcome::Cancelled => pb::StepOutcome::Cancelled,
    }
}

/// The proto form of a workflow.
/// Whether a proto workflow state is terminal (COMPLETED, FAILED, CANCELLED).
pub(crate) fn is_terminal_proto(state: i32) -> bool {
    matches!(
        pb::WorkflowState::try_from(state),
        Ok(pb::WorkflowState::Completed | pb::WorkflowState::Failed | pb::WorkflowState::Cancelled)
    )
}

pub fn workflow_to_proto(w: Workflow) -> pb::Workflow {
    pb::Workflow {
        workflow_id: w.id,
        namespace: w.namespace,
        workflow_type: w.workflow_type,
        state: workflow_state_to_proto(w.state) as i32,
        correlation_id: w.correlation_id.unwrap_or_default(),
        idempotency_key: w.idempotency_key.unwrap_or_default(),
        file_path: w.input.file_path,
        file_hash: w.file_hash.unwrap_or_default(),
        stamp_id: w.stamp_id.unwrap_or_default(),
        error_message: w.error_message.unwrap_or_default(),
        steps: w.steps.into_iter().map(step_to_proto).collect(),
        transitions: w.transitions.into_iter().map(transition_to_proto).collect(),
        definition: w.definition.unwrap_or_else(|| BUILT_IN.to_owned()),
        current_step: w.current_step.unwrap_or_default(),
        wake_at: w.wake_at.map(timestamp),
        intelligence_data: w.intelligence_data.unwrap_or_default(),
        stamped_content: w.stamped_content.unwrap_or_default(),
        created_at: Some(timestamp(w.created_at)),
        started_at: w.started_at.map(timestamp),
        completed_at: w.completed_at.map(timestamp),
        execution_time_ms: w.execution_time_ms.unwrap_or_default(),
    }
}

fn step_to_proto(s: StepRecord) -> pb::WorkflowStep {
    pb::WorkflowStep {
        name: s.name,
        outcome: outcome_to_proto(s.outcome) as i32,
        started_at: Some(timestamp(s.started_at)),
        duration_ms: s.duration_ms,
        attempts: s.attempts,
        message: s.message,
        owner: s.owner,
        output: s.output.map(json_to_value),
        actor: s.actor,
        attempt_history: s
            .tries
            .into_iter()
            .zip(1..)
            .map(|(a, attempt)| pb::StepAttempt {
                attempt,
                started_at: Some(timestamp(a.started_at)),
                duration_ms: a.duration_ms,
                error: a.error,
            })
            .collect(),
    }
}

fn transition_to_proto(t: Transition) -> pb::WorkflowTransition {
    pb::WorkflowTransition {
        from_state: workflow_state_to_proto(t.from) as i32,
        to_state: workflow_state_to_proto(t.to) as i32,
        at: Some(timestamp(t.at)),
        reason: t.reason,
        actor: t.actor,
    }
}

/// A JSON value as `google.protobuf.Value`.
fn json_to_value(json: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.into_iter().map(json_to_value).collect() })
        }
        serde_json::Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A definition from its proto form: name, description and steps (a step
/// without a kind is refused, naming it).
pub(crate) fn definition_from_proto(
    definition: Option<pb::WorkflowDefinition>,
) -> Result<(String, String, Vec<StepDefinition>), OrchestratorError> {
    let definition = definition.ok_or_else(|| OrchestratorError::Validation("definition is required".into()))?;
    let steps = definition.steps.into_iter().map(step_from_proto).collect::<Result<_, _>>()?;
    Ok((definition.name, definition.description, steps))
}

fn step_from_proto(step: pb::StepDefinition) -> Result<StepDefinition, OrchestratorError> {
    use pb::step_definition::Kind;
    let name = step.name;
    let missing = |what: &str| OrchestratorError::Validation(format!("step {:?}: {what}", limits::prefix(&name, 70)));
    let kind = match step.kind.ok_or_else(|| missing("kind: set one of hash, stamp, http, approval, timer, llm"))? {
        Kind::Hash(_) => StepKind::Hash,
        Kind::Stamp(stamp) => StepKind::Stamp {
            format: stamp_format_from_proto(stamp.format)
                .map_err(|e| missing(&format!("stamp.format: {e}")))?
                .unwrap_or_default(),
        },
        Kind::Http(http) => StepKind::Http {
            method: http.method.to_ascii_uppercase(),
            url: http.url,
            headers: http.headers.into_iter().collect(),
            body: http.body,
        },
        Kind::Approval(approval) => StepKind::Approval { description: approval.description },
        Kind::Timer(timer) => {
            StepKind::Timer(match timer.wait.ok_or_else(|| missing("timer: set duration_ms or until"))? {
                pb::timer_step::Wait::DurationMs(ms) => TimerWait::Duration { ms },
                pb::timer_step::Wait::Until(at) => TimerWait::Until {
                    at: chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or_default())
                        .ok_or_else(|| missing("timer.until: not a time"))?,
                },
            })
        }
        Kind::Llm(llm) => StepKind::Llm { model: llm.model, prompt: llm.prompt, system: llm.system },
    };
    Ok(StepDefinition {
        timeout_ms: (step.timeout_ms > 0).then_some(step.timeout_ms),
        retry: step.retry.map(|r| StepRetry {
            max_attempts: r.max_attempts,
            initial_backoff_ms: r.initial_backoff_ms,
            max_backoff_ms: r.max_backoff_ms,
        }),
        name,
        kind,
    })
}

/// The proto form of a stored definition.
pub(crate) fn definition_to_proto(definition: Definition) -> pb::WorkflowDefinition {
    use pb::step_definition::Kind;
    let steps = definition
        .steps
        .into_iter()
        .map(|step| pb::StepDefinition {
            name: step.name,
            timeout_ms: step.timeout_ms.unwrap_or_default(),
            retry: step.retry.map(|r| pb::StepRetryPolicy {
                max_attempts: r.max_attempts,
                initial_backoff_ms: r.initial_backoff_ms,
                max_backoff_ms: r.max_backoff_ms,
            }),
            kind: Some(match step.kind {
                StepKind::Hash => Kind::Hash(pb::HashStep {}),
                StepKind::Stamp { format } => {
                    Kind::Stamp(pb::StampStep { format: stamp_format_to_proto(format) as i32 })
                }
                StepKind::Http { method, url, headers, body } => {
                    Kind::Http(pb::HttpStep { method, url, headers: headers.into_iter().collect(), body })
                }
                StepKind::Approval { description } => Kind::Approval(pb::ApprovalStep { description }),
                StepKind::Timer(wait) => Kind::Timer(pb::TimerStep {
                    wait: Some(match wait {
                        TimerWait::Duration { ms } => pb::timer_step::Wait::DurationMs(ms),
                        TimerWait::Until { at } => pb::timer_step::Wait::Until(timestamp(at)),
                    }),
                }),
                StepKind::Llm { model, prompt, system } => Kind::Llm(pb::LlmStep { model, prompt, system }),
            }),
        })
        .collect();
    pb::WorkflowDefinition {
        name: definition.name,
        version: definition.version,
        description: definition.description,
        steps,
        created_at: Some(timestamp(definition.created_at)),
    }
}
