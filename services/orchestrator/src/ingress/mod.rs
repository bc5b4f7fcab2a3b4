//! Requests read from Kafka (`ONEX_INPUT_TOPIC`), answered on
//! `ONEX_OUTPUT_TOPIC`. A record holds an `omninode.ingress.v1.Request`;
//! it is applied through the same service code a gRPC call reaches, and
//! exactly once in effect:
//!
//! - a request is known by its idempotency key (from the request or the
//!   `idempotency_key` header), or by its topic, partition and offset; one
//!   row of `ingress_requests` per applied request is written in the
//!   transaction that queues its answer in the outbox, and a record whose
//!   request is already there is skipped (counted as deduplicated);
//! - a request without a key is given `kafka:<topic>/<partition>/<offset>`
//!   as its idempotency key, so that a replay after a crash between the
//!   service's commit and ours finds the stamp or workflow it made;
//! - a workflow is stored, remembered and answered (ACCEPTED) in one
//!   transaction; its last answer (ENDED) is queued in the transaction of
//!   its terminal state;
//! - the consumer commits a record's offset only after all of that.
//!
//! A record that cannot be decoded, or whose request the service refuses as
//! invalid, goes to `<topic>.dlq` with its reason in the headers (and an
//! error answer when it has a correlation id or a request).

mod codec;
mod entity;
#[cfg(feature = "kafka")]
mod kafka;

#[cfg(feature = "kafka")]
pub use kafka::spawn_consumer;

pub use codec::Encoding;

use omninode_core::time::now;
use omninode_proto::{
    google::rpc::Status as RpcStatus,
    ingress::v1::{self as pb, request::Request as Kind, response::Result as Answer},
    orchestrator::v1::{StartWorkflowRequest, orchestrator_service_server::OrchestratorService as _},
    stamping::v1::stamping_service_client::StampingServiceClient,
};
use omninode_runtime::{
    auth::AuthedChannel,
    convert::to_timestamp,
    db::begin_write,
    events::{IncomingRecord, IngressConfig, Outbox, OutboxRecord, dead_letter_record},
};
use prost::Message as _;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait};
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::{convert::workflow_to_proto, domain::workflow::Workflow, grpc::OrchestratorGrpc};

/// Where the answers of a request go, and what it is known by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// `ONEX_OUTPUT_TOPIC`.
    pub topic: String,
    /// The request record's key: the answers' key.
    pub key: String,
    pub correlation_id: String,
    /// Said in the answers: the idempotency key, or `<topic>/<partition>/<offset>`.
    pub request_id: String,
    /// The `ingress_requests` key of the request.
    pub dedup_key: String,
    /// The request's field name (`start_workflow`, `run_workflow`, …).
    pub kind: String,
    pub encoding: Encoding,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Its request was applied before (a redelivery, a replay, a repeated key).
    Deduplicated,
    /// Sent to the dead-letter topic, for this reason.
    DeadLettered(&'static str),
}

/// Why a record could not be dealt with now; it is read again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Retry(pub String);

impl From<DbErr> for Retry {
    fn from(err: DbErr) -> Self {
        Retry(format!("database: {err}"))
    }
}

/// Dead-letter reasons (the `dlq-reason` header).
pub mod reason {
    pub const UNSUPPORTED_CONTENT_TYPE: &str = "UNSUPPORTED_CONTENT_TYPE";
    pub const UNDECODABLE: &str = "UNDECODABLE";
    pub const EMPTY_REQUEST: &str = "EMPTY_REQUEST";
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    pub const PROCESSING_FAILED: &str = "PROCESSING_FAILED";
}

/// Applies requests read from Kafka. Cheap to clone.
#[derive(Clone)]
pub struct Ingress {
    db: DatabaseConnection,
    outbox: Outbox,
    config: IngressConfig,
    orchestrator: OrchestratorGrpc,
    stamping: StampingServiceClient<AuthedChannel>,
}

/// Tries of a request the service failed internally before it is dead-lettered.
pub const MAX_INTERNAL_FAILURES: u32 = 5;

impl Ingress {
    pub(crate) fn new(
        db: DatabaseConnection,
        outbox: Outbox,
        config: IngressConfig,
        orchestrator: OrchestratorGrpc,
        stamping: StampingServiceClient<AuthedChannel>,
    ) -> Self {
        Self { db, outbox, config, orchestrator, stamping }
    }

    pub fn config(&self) -> &IngressConfig {
        &self.config
    }

    /// Deals with one record. `tries` counts earlier attempts that ended in an
    /// internal failure of the service: past [`MAX_INTERNAL_FAILURES`] the
    /// record is dead-lettered instead of tried again.
    pub async fn handle(&self, record: &IncomingRecord, tries: u32) -> Result<Outcome, Retry> {
        let position = &record.position;
        let position_id = position_id(record);
        let header_correlation = header_correlation(record);
        let Some(encoding) = Encoding::of_content_type(record.header("content-type")) else {
            let message = format!(
                "content-type {:?} is not understood: send protobuf (no header, or application/x-protobuf) or application/json",
                record.header("content-type").unwrap_or_default()
            );
            return self.dead_letter(record, reason::UNSUPPORTED_CONTENT_TYPE, &message, Encoding::Json).await;
        };
        let request = match codec::decode_request(&record.payload, encoding) {
            Ok(request) => request,
            Err(message) => return self.dead_letter(record, reason::UNDECODABLE, &message, encoding).await,
        };
        let Some(mut call) = request.request else {
            let message =
                "the request sets none of stamp, batch_stamp, start_workflow, run_workflow, approve_step, reject_step";
            return self.dead_letter(record, reason::EMPTY_REQUEST, message, encoding).await;
        };
        fill_from_headers(&mut call, header_correlation, record.header("idempotency_key"));
        let kind = kind_name(&call);
        let given_key = idempotency_key(&call).filter(|k| !k.is_empty()).map(str::to_owned);
        let dedup_key = match &given_key {
            Some(key) => bounded(format!("key:{kind}:{}:{key}", namespace_of(&call))),
            None => bounded(format!("pos:{position_id}")),
        };
        if given_key.is_none() {
            set_idempotency_key(&mut call, &format!("kafka:{position_id}"));
        }
        let reply = ReplyTo {
            topic: self.config.output_topic.clone(),
            key: record_key(record, &position_id),
            // The request's own, else the header's (approvals have no field for it).
            correlation_id: Some(correlation_of(&call))
                .filter(|c| !c.is_empty())
                .or(header_correlation)
                .unwrap_or_default()
                .to_owned(),
            request_id: given_key.unwrap_or_else(|| position_id.clone()),
            dedup_key,
            kind: kind.to_owned(),
            encoding,
            source_topic: position.topic.clone(),
            source_partition: position.partition,
            source_offset: position.offset,
        };
        if entity::Entity::find_by_id(reply.dedup_key.clone()).one(&self.db).await?.is_some() {
            metrics::counter!("ingress_requests_deduplicated_total").increment(1);
            return Ok(Outcome::Deduplicated);
        }

        let (records, outcome) = match self.apply(call, &reply).await {
            Ok(None) => {
                // Stored, remembered and answered with its workflow.
                metrics::counter!("ingress_requests_applied_total", "kind" => kind).increment(1);
                return Ok(Outcome::Applied);
            }
            Ok(Some(answers)) => {
                let records = answers.into_iter().map(|(stage, answer)| response(&reply, stage, answer)).collect();
                (records, Outcome::Applied)
            }
            Err(status) => match classify(status.code()) {
                Class::Transient => return Err(Retry(format!("{kind}: {}", status.message()))),
                Class::Internal if tries + 1 < MAX_INTERNAL_FAILURES => {
                    return Err(Retry(format!("{kind}: {}", status.message())));
                }
                class => {
                    let error = rpc_status(&status);
                    let mut records = vec![response(&reply, pb::Stage::Done, Answer::Error(error))];
                    let dead = match class {
                        Class::Invalid => Some(reason::INVALID_REQUEST),
                        Class::Internal => Some(reason::PROCESSING_FAILED),
                        _ => None,
                    };
                    if let Some(why) = dead {
                        records.push(self.dead_letter_record(record, why, status.message()));
                    }
                    (records, dead.map_or(Outcome::Applied, Outcome::DeadLettered))
                }
            },
        };
        if !self.store_answers(&reply, records).await? {
            return Ok(Outcome::Deduplicated);
        }
        match outcome {
            Outcome::DeadLettered(why) => {
                metrics::counter!("ingress_records_dead_lettered_total", "reason" => why).increment(1)
            }
            _ => metrics::counter!("ingress_requests_applied_total", "kind" => kind).increment(1),
        }
        Ok(outcome)
    }

    /// Calls the service for `call`: `None` when the workflow store already
    /// remembered and answered it, else the answers to queue.
    async fn apply(&self, call: Kind, reply: &ReplyTo) -> Result<Option<Vec<(pb::Stage, Answer)>>, tonic::Status> {
        let done = |answer| Ok(Some(vec![(pb::Stage::Done, answer)]));
        match call {
            Kind::Stamp(request) => done(Answer::Stamp(self.stamping.clone().stamp(request).await?.into_inner())),
            Kind::BatchStamp(request) => {
                done(Answer::BatchStamp(self.stamping.clone().batch_stamp(request).await?.into_inner()))
            }
            Kind::StartWorkflow(request) => self.start(request, reply).await,
            Kind::RunWorkflow(r) => {
                let request = StartWorkflowRequest {
                    namespace: r.namespace,
                    input: r.input,
                    correlation_id: r.correlation_id,
                    idempotency_key: r.idempotency_key,
                    definition: r.definition,
                };
                self.start(request, reply).await
            }
            Kind::ApproveStep(request) => done(Answer::ApproveStep(
                self.orchestrator.approve_step(tonic::Request::new(request)).await?.into_inner(),
            )),
            Kind::RejectStep(request) => done(Answer::RejectStep(
                self.orchestrator.reject_step(tonic::Request::new(request)).await?.into_inner(),
            )),
        }
    }

    /// Starts a workflow that answers to `reply`. A new one is answered by the
    /// store; one its key already named is answered here (and, if it has
    /// ended, with its end too, so that this requester is not left waiting).
    async fn start(
        &self,
        request: StartWorkflowRequest,
        reply: &ReplyTo,
    ) -> Result<Option<Vec<(pb::Stage, Answer)>>, tonic::Status> {
        let mut call = tonic::Request::new(request);
        call.extensions_mut().insert(reply.clone());
        let started = self.orchestrator.start_workflow(call).await?.into_inner();
        if started.created {
            return Ok(None);
        }
        let workflow = started.workflow.unwrap_or_default();
        let ended = crate::convert::is_terminal_proto(workflow.state);
        let mut answers = vec![(pb::Stage::Accepted, workflow_answer(&reply.kind, workflow.clone(), false))];
        if ended {
            answers.push((pb::Stage::Ended, workflow_answer(&reply.kind, workflow, false)));
        }
        Ok(Some(answers))
    }

    /// Sends `record` to its dead-letter topic (remembered by its position,
    /// so a redelivery is not sent twice), with an error answer when the
    /// record says who waits for one.
    async fn dead_letter(
        &self,
        record: &IncomingRecord,
        why: &'static str,
        message: &str,
        encoding: Encoding,
    ) -> Result<Outcome, Retry> {
        let position = &record.position;
        let position_id = position_id(record);
        let correlation_id = header_correlation(record).unwrap_or_default().to_owned();
        let reply = ReplyTo {
            topic: self.config.output_topic.clone(),
            key: record_key(record, &position_id),
            correlation_id: correlation_id.clone(),
            request_id: position_id.clone(),
            dedup_key: bounded(format!("pos:{position_id}")),
            kind: String::new(),
            encoding,
            source_topic: position.topic.clone(),
            source_partition: position.partition,
            source_offset: position.offset,
        };
        let mut records = vec![self.dead_letter_record(record, why, message)];
        if !correlation_id.is_empty() {
            let error =
                RpcStatus { code: Code::InvalidArgument as i32, message: message.to_owned(), details: Vec::new() };
            records.push(response(&reply, pb::Stage::Done, Answer::Error(error)));
        }
        if !self.store_answers(&reply, records).await? {
            return Ok(Outcome::Deduplicated);
        }
        metrics::counter!("ingress_records_dead_lettered_total", "reason" => why).increment(1);
        tracing::warn!(reason = why, %message, record = %position_id, "request record dead-lettered");
        Ok(Outcome::DeadLettered(why))
    }

    /// Remembers `reply`'s request and queues `records` (its answers, its
    /// dead letter) in one transaction; false, with nothing written, when
    /// another member of the group remembered it first (a rebalance).
    async fn store_answers(&self, reply: &ReplyTo, records: Vec<OutboxRecord>) -> Result<bool, Retry> {
        let txn = begin_write(&self.db).await?;
        if let Err(err) = remember(&txn, reply, None).await {
            txn.rollback().await?;
            if is_unique_violation(&err) {
                metrics::counter!("ingress_requests_deduplicated_total").increment(1);
                return Ok(false);
            }
            return Err(err.into());
        }
        self.outbox.append_records(&txn, records).await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(true)
    }

    fn dead_letter_record(&self, record: &IncomingRecord, why: &'static str, message: &str) -> OutboxRecord {
        dead_letter_record(record, why, message, &self.config.group)
    }

    /// Forgets requests applied longer ago than the retention; returns how many.
    pub async fn prune(&self) -> Result<u64, DbErr> {
        use sea_orm::{ColumnTrait, QueryFilter};
        let retention = chrono::Duration::from_std(self.config.dedup_retention).unwrap_or(chrono::Duration::MAX);
        let result = entity::Entity::delete_many()
            .filter(entity::Column::CreatedAt.lt(now() - retention))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }
}

/// Writes the `ingress_requests` row of `reply`'s request (fails with a
/// unique violation when it is there already).
pub(crate) async fn remember<C: ConnectionTrait>(
    conn: &C,
    reply: &ReplyTo,
    workflow_id: Option<&str>,
) -> Result<(), DbErr> {
    let row = entity::ActiveModel {
        request_key: Set(reply.dedup_key.clone()),
        kind: Set(if reply.kind.is_empty() { "undecodable".to_owned() } else { reply.kind.clone() }),
        topic: Set(reply.source_topic.clone()),
        partition: Set(reply.source_partition),
        offset: Set(reply.source_offset),
        correlation_id: Set((!reply.correlation_id.is_empty()).then(|| reply.correlation_id.clone())),
        workflow_id: Set(workflow_id.map(str::to_owned)),
        created_at: Set(now()),
    };
    entity::Entity::insert(row).exec_without_returning(conn).await.map(drop)
}

/// The first answer of a workflow request: it is stored and will run.
pub(crate) fn accepted(reply: &ReplyTo, workflow: &Workflow, created: bool) -> OutboxRecord {
    response(reply, pb::Stage::Accepted, workflow_answer(&reply.kind, workflow_to_proto(workflow.clone()), created))
}

/// The last answer of a workflow request: it ended.
pub(crate) fn ended(reply: &ReplyTo, workflow: &Workflow) -> OutboxRecord {
    response(reply, pb::Stage::Ended, workflow_answer(&reply.kind, workflow_to_proto(workflow.clone()), true))
}

fn workflow_answer(kind: &str, workflow: omninode_proto::orchestrator::v1::Workflow, created: bool) -> Answer {
    use omninode_proto::orchestrator::v1::{RunWorkflowResponse, StartWorkflowResponse};
    match kind {
        "run_workflow" => Answer::RunWorkflow(RunWorkflowResponse { workflow: Some(workflow), created }),
        _ => Answer::StartWorkflow(StartWorkflowResponse { workflow: Some(workflow), created }),
    }
}

/// An answer record for the outbox.
fn response(reply: &ReplyTo, stage: pb::Stage, answer: Answer) -> OutboxRecord {
    let event_id = uuid::Uuid::now_v7().to_string();
    let response = pb::Response {
        event_id: event_id.clone(),
        correlation_id: reply.correlation_id.clone(),
        request_id: reply.request_id.clone(),
        kind: reply.kind.clone(),
        stage: stage as i32,
        answered_at: Some(to_timestamp(now())),
        result: Some(answer),
    };
    OutboxRecord {
        event_id,
        topic: reply.topic.clone(),
        key: reply.key.clone(),
        record_type: "response",
        correlation_id: (!reply.correlation_id.is_empty()).then(|| reply.correlation_id.clone()),
        payload: codec::encode_response(&response, reply.encoding),
        headers: vec![
            ("content-type".to_owned(), reply.encoding.content_type().to_owned()),
            ("request_id".to_owned(), reply.request_id.clone()),
        ],
    }
}

/// How a service's refusal is dealt with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The service is away or busy: try again later, without limit.
    Transient,
    /// The service failed: try a few times, then dead-letter.
    Internal,
    /// The request itself is invalid: answer and dead-letter.
    Invalid,
    /// Refused for the state of things (not found, already decided, …): answer.
    Refused,
}

fn classify(code: Code) -> Class {
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Cancelled => {
            Class::Transient
        }
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unimplemented => Class::Internal,
        Code::InvalidArgument | Code::OutOfRange => Class::Invalid,
        _ => Class::Refused,
    }
}

/// The google.rpc.Status of a refusal, with its details (ErrorInfo, BadRequest).
fn rpc_status(status: &tonic::Status) -> RpcStatus {
    match RpcStatus::decode(status.details()) {
        Ok(decoded) if !status.details().is_empty() => decoded,
        _ => RpcStatus { code: status.code() as i32, message: status.message().to_owned(), details: Vec::new() },
    }
}

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

/// A dedup key within the column's 400 characters (a longer one is hashed).
fn bounded(key: String) -> String {
    if key.len() <= 400 { key } else { format!("hash:{}", blake3::hash(key.as_bytes()).to_hex()) }
}

/// Where a record was read, as `<topic>/<partition>/<offset>`.
fn position_id(record: &IncomingRecord) -> String {
    let position = &record.position;
    format!("{}/{}/{}", position.topic, position.partition, position.offset)
}

/// The record's correlation id header (`correlation_id`, or `correlation-id`).
fn header_correlation(record: &IncomingRecord) -> Option<&str> {
    record.header("correlation_id").or_else(|| record.header("correlation-id"))
}

/// The answers' key: the request's record key, else its position.
fn record_key(record: &IncomingRecord, position_id: &str) -> String {
    match record.key.as_deref() {
        Some(key) if !key.is_empty() => String::from_utf8_lossy(key).into_owned(),
        _ => position_id.to_owned(),
    }
}

fn kind_name(call: &Kind) -> &'static str {
    match call {
        Kind::Stamp(_) => "stamp",
        Kind::BatchStamp(_) => "batch_stamp",
        Kind::StartWorkflow(_) => "start_workflow",
        Kind::RunWorkflow(_) => "run_workflow",
        Kind::ApproveStep(_) => "approve_step",
        Kind::RejectStep(_) => "reject_step",
    }
}

fn namespace_of(call: &Kind) -> &str {
    match call {
        Kind::Stamp(r) => &r.namespace,
        Kind::BatchStamp(r) => &r.namespace,
        Kind::StartWorkflow(r) => &r.namespace,
        Kind::RunWorkflow(r) => &r.namespace,
        Kind::ApproveStep(r) => &r.workflow_id,
        Kind::RejectStep(r) => &r.workflow_id,
    }
}

/// The request's idempotency key field; the header's key for the kinds without one.
fn idempotency_key(call: &Kind) -> Option<&str> {
    match call {
        Kind::Stamp(r) => Some(&r.idempotency_key),
        Kind::StartWorkflow(r) => Some(&r.idempotency_key),
        Kind::RunWorkflow(r) => Some(&r.idempotency_key),
        Kind::BatchStamp(_) | Kind::ApproveStep(_) | Kind::RejectStep(_) => None,
    }
}

fn correlation_of(call: &Kind) -> &str {
    match call {
        Kind::Stamp(r) => &r.correlation_id,
        Kind::BatchStamp(r) => &r.correlation_id,
        Kind::StartWorkflow(r) => &r.correlation_id,
        Kind::RunWorkflow(r) => &r.correlation_id,
        Kind::ApproveStep(_) | Kind::RejectStep(_) => "",
    }
}

/// Gives the request an idempotency key where it has none (batch items get
/// `<key>#<index>`; approvals need none: a decided step cannot be decided again).
fn set_idempotency_key(call: &mut Kind, key: &str) {
    match call {
        Kind::Stamp(r) => r.idempotency_key = key.to_owned(),
        Kind::StartWorkflow(r) => r.idempotency_key = key.to_owned(),
        Kind::RunWorkflow(r) => r.idempotency_key = key.to_owned(),
        Kind::BatchStamp(r) => {
            for (index, item) in r.items.iter_mut().enumerate() {
                if item.idempotency_key.is_empty() {
                    item.idempotency_key = format!("{key}#{index}");
                }
            }
        }
        Kind::ApproveStep(_) | Kind::RejectStep(_) => {}
    }
}

/// The `correlation_id` and `idempotency_key` headers fill the request's fields it leaves empty.
fn fill_from_headers(call: &mut Kind, correlation: Option<&str>, key: Option<&str>) {
    if let Some(correlation) = correlation.filter(|c| !c.is_empty()) {
        let field = match call {
            Kind::Stamp(r) => Some(&mut r.correlation_id),
            Kind::BatchStamp(r) => Some(&mut r.correlation_id),
            Kind::StartWorkflow(r) => Some(&mut r.correlation_id),
            Kind::RunWorkflow(r) => Some(&mut r.correlation_id),
            Kind::ApproveStep(_) | Kind::RejectStep(_) => None,
        };
        if let Some(field) = field.filter(|f| f.is_empty()) {
            *field = correlation.to_owned();
        }
    }
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        let field = match call {
            Kind::Stamp(r) => Some(&mut r.idempotency_key),
            Kind::StartWorkflow(r) => Some(&mut r.idempotency_key),
            Kind::RunWorkflow(r) => Some(&mut r.idempotency_key),
            Kind::BatchStamp(_) | Kind::ApproveStep(_) | Kind::RejectStep(_) => None,
        };
        if let Some(field) = field.filter(|f| f.is_empty()) {
            *field = key.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omninode_proto::stamping::v1::{BatchStampItem, BatchStampRequest, StampRequest};

    #[test]
    fn headers_fill_only_what_the_request_leaves_empty() {
        let mut call = Kind::Stamp(StampRequest { correlation_id: "mine".into(), ..Default::default() });
        fill_from_headers(&mut call, Some("header"), Some("k1"));
        let Kind::Stamp(stamp) = &call else { unreachable!() };
        assert_eq!((stamp.correlation_id.as_str(), stamp.idempotency_key.as_str()), ("mine", "k1"));
        assert_eq!(idempotency_key(&call), Some("k1"));
    }

    #[test]
    fn batch_items_without_a_key_get_one_each() {
        let items =
            vec![BatchStampItem { idempotency_key: "own".into(), ..Default::default() }, BatchStampItem::default()];
        let mut call = Kind::BatchStamp(BatchStampRequest { items, ..Default::default() });
        set_idempotency_key(&mut call, "kafka:requests/0/7");
        let Kind::BatchStamp(batch) = &call else { unreachable!() };
        let keys: Vec<&str> = batch.items.iter().map(|i| i.idempotency_key.as_str()).collect();
        assert_eq!(keys, ["own", "kafka:requests/0/7#1"]);
    }

    #[test]
    fn refusals_are_retried_answered_or_dead_lettered_by_their_code() {
        assert_eq!(classify(Code::Unavailable), Class::Transient);
        assert_eq!(classify(Code::Internal), Class::Internal);
        assert_eq!(classify(Code::InvalidArgument), Class::Invalid);
        assert_eq!(classify(Code::FailedPrecondition), Class::Refused);
        assert_eq!(classify(Code::AlreadyExists), Class::Refused);
    }

    #[test]
    fn long_keys_are_hashed_to_fit() {
        assert_eq!(bounded("pos:a/0/1".into()), "pos:a/0/1");
        let long = bounded("k".repeat(500));
        assert!(long.starts_with("hash:") && long.len() < 400, "{long}");
    }
}
