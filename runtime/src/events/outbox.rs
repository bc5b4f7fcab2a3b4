//! The transactional outbox: services append events on the same connection
//! (transaction) as the change they describe; the relay publishes them.

use std::sync::Arc;

use omninode_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use prost::Message;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbBackend, DbErr, EntityTrait};
use tokio::sync::Notify;

use super::topics::EventKind;
use crate::db::OneStatement;

pub(crate) mod entity {
    //! The `event_outbox` row (schema owned by `omninode-migrations`).
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event_id: String,
        pub topic: String,
        pub partition_key: String,
        pub event_type: String,
        pub correlation_id: Option<String>,
        pub payload: Vec<u8>,
        pub created_at: DateTimeUtc,
        pub published_at: Option<DateTimeUtc>,
        pub attempts: i32,
        pub last_error: Option<String>,
        pub trace_context: Option<String>,
        /// Further record headers, a JSON object of strings (a response's content type, a dead letter's reason).
        pub headers: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An event a change produces.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub namespace: String,
    /// Stamp hash or workflow id: one entity's events stay in order.
    pub partition_key: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub payload: Payload,
    /// The trace context of the request that caused it (see
    /// [`crate::trace::stored_context`]); the relay sends it in the record's headers.
    pub trace_context: Option<String>,
}

/// Inserts outbox rows in statements of a few KiB each (see
/// [`crate::db::STATEMENT_BYTES`]).
async fn insert_rows<C: ConnectionTrait>(conn: &C, rows: Vec<entity::ActiveModel>) -> Result<(), DbErr> {
    let size = |row: &entity::ActiveModel| match &row.payload {
        sea_orm::ActiveValue::Set(payload) | sea_orm::ActiveValue::Unchanged(payload) => payload.len() + 300,
        sea_orm::ActiveValue::NotSet => 300,
    };
    for chunk in crate::db::statement_chunks(&rows, 500, size) {
        entity::Entity::insert_many(chunk.iter().cloned()).exec_without_returning(conn).await?;
    }
    Ok(())
}

/// Which rows of a [`OneStatement`] part are written.
#[derive(Debug, Clone, Copy)]
pub enum WriteIf<'a> {
    /// All of them.
    Always,
    /// All of them, if the part named here — on SQLite the part just before
    /// — changed a row (a conditional update that matched).
    Returned(&'a str),
    /// Those whose key is among the `column` values `part` returned (an
    /// insert's new rows); on SQLite, those whose key is now a `column` of
    /// `table` (keys are new ids, so present only if `part` inserted them).
    KeyReturned { part: &'a str, table: &'a str, column: &'a str },
}

/// The columns a new outbox row sets (the others take their defaults).
const ROW_COLUMNS: [&str; 9] = [
    "event_id",
    "topic",
    "partition_key",
    "event_type",
    "correlation_id",
    "payload",
    "created_at",
    "trace_context",
    "headers",
];

/// A new row's values, in [`ROW_COLUMNS`] order (every one is set by the
/// row builders; an unset one would be NULL).
fn row_values(row: entity::ActiveModel) -> [sea_orm::Value; 9] {
    fn value<V: Into<sea_orm::Value>>(v: sea_orm::ActiveValue<V>) -> sea_orm::Value {
        v.into_value().unwrap_or(sea_orm::Value::String(None))
    }
    [
        value(row.event_id),
        value(row.topic),
        value(row.partition_key),
        value(row.event_type),
        value(row.correlation_id),
        value(row.payload),
        value(row.created_at),
        value(row.trace_context),
        value(row.headers),
    ]
}

/// A record for the outbox that is not a mesh event: published as is to
/// `topic` with key `key`, the headers `event_type` (= `record_type`),
/// `event_id`, `correlation_id`, and `headers`.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// Unique per record (a UUID); redelivery repeats it.
    pub event_id: String,
    pub topic: String,
    pub key: String,
    pub record_type: &'static str,
    pub correlation_id: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Where this process's events come from, and how to wake its relay.
#[derive(Debug, Clone)]
pub struct Outbox {
    service: &'static str,
    instance: String,
    topic_prefix: String,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(
        service: &'static str,
        instance: impl Into<String>,
        topic_prefix: impl Into<String>,
        wake: Arc<Notify>,
    ) -> Self {
        Self { service, instance: instance.into(), topic_prefix: topic_prefix.into(), wake }
    }

    /// Writes `events` as outbox rows on `conn` — call it inside the
    /// transaction of the change, so they commit (or roll back) together.
    pub async fn append<C: ConnectionTrait>(&self, conn: &C, events: Vec<NewEvent>) -> Result<(), DbErr> {
        if events.is_empty() {
            return Ok(());
        }
        insert_rows(conn, self.event_rows(events)).await
    }

    /// Adds the rows of `events` to `statement` as its part `name`, written
    /// if `when` holds (see [`OneStatement`]); the caller calls
    /// [`Outbox::committed`] once the statement has run.
    pub fn add_to(&self, statement: &mut OneStatement, name: &str, events: Vec<(String, NewEvent)>, when: &WriteIf) {
        let postgres = statement.backend() == DbBackend::Postgres;
        let (keys, events): (Vec<String>, Vec<NewEvent>) = events.into_iter().unzip();
        let rows = self.event_rows(events);
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(rows.len() * (ROW_COLUMNS.len() + 1));
        let mut tuples = Vec::with_capacity(rows.len());
        for (key, row) in keys.into_iter().zip(rows) {
            let first = values.len();
            let placeholders: Vec<String> = (1..=ROW_COLUMNS.len() + 1)
                .map(|i| if postgres { format!("${}", first + i) } else { "?".to_owned() })
                .collect();
            tuples.push(format!("({})", placeholders.join(", ")));
            values.push(key.into());
            values.extend(row_values(row));
        }
        let columns = ROW_COLUMNS.join(", ");
        let sql = if postgres {
            let condition = match when {
                WriteIf::Always => String::new(),
                WriteIf::Returned(part) => format!(" WHERE EXISTS (SELECT 1 FROM {part})"),
                WriteIf::KeyReturned { part, column, .. } => format!(" WHERE v.key IN (SELECT {column} FROM {part})"),
            };
            format!(
                "INSERT INTO event_outbox ({columns}) SELECT {columns} FROM (VALUES {}) AS v(key, {columns}){condition}",
                tuples.join(", ")
            )
        } else {
            // SQLite names a VALUES list's columns column1, column2, …
            let condition = match when {
                WriteIf::Always => String::new(),
                WriteIf::Returned(part) => {
                    assert_eq!(statement.last_part(), Some(*part), "on SQLite the condition's part comes just before");
                    " WHERE changes() > 0".to_owned()
                }
                WriteIf::KeyReturned { table, column, .. } => {
                    format!(" WHERE EXISTS (SELECT 1 FROM {table} WHERE {column} = v.column1)")
                }
            };
            let selected: Vec<String> = (2..=ROW_COLUMNS.len() + 1).map(|i| format!("v.column{i}")).collect();
            format!(
                "INSERT INTO event_outbox ({columns}) SELECT {} FROM (VALUES {}) AS v{condition}",
                selected.join(", "),
                tuples.join(", ")
            )
        };
        statement.add_sql(name, &sql, values);
    }

    fn event_rows(&self, events: Vec<NewEvent>) -> Vec<entity::ActiveModel> {
        let now = chrono::Utc::now();
        let rows = events.into_iter().map(|event| {
            let event_id = uuid::Uuid::now_v7().to_string();
            let envelope = EventEnvelope {
                event_id: event_id.clone(),
                event_type: event.kind.event_type().to_owned(),
                event_version: event.kind.version(),
                occurred_at: Some(crate::convert::to_timestamp(now)),
                source_service: self.service.to_owned(),
                source_instance: self.instance.clone(),
                correlation_id: event.correlation_id.clone().unwrap_or_default(),
                causation_id: event.causation_id.unwrap_or_default(),
                namespace: event.namespace,
                partition_key: event.partition_key.clone(),
                payload: Some(event.payload),
            };
            entity::ActiveModel {
                id: sea_orm::ActiveValue::NotSet,
                event_id: Set(event_id),
                topic: Set(event.kind.topic(&self.topic_prefix)),
                partition_key: Set(event.partition_key),
                event_type: Set(event.kind.event_type().to_owned()),
                correlation_id: Set(event.correlation_id),
                payload: Set(envelope.encode_to_vec()),
                created_at: Set(now),
                published_at: Set(None),
                attempts: Set(0),
                last_error: Set(None),
                trace_context: Set(event.trace_context),
                headers: Set(None),
            }
        });
        rows.collect()
    }

    /// Writes `records` (answers, dead letters: not events of the mesh, so
    /// not in an `EventEnvelope`) as outbox rows on `conn`, in the
    /// transaction of the change they belong to; the relay publishes each
    /// to its own topic with its headers.
    pub async fn append_records<C: ConnectionTrait>(&self, conn: &C, records: Vec<OutboxRecord>) -> Result<(), DbErr> {
        if records.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now();
        let rows = records.into_iter().map(|record| {
            let headers = (!record.headers.is_empty()).then(|| {
                let map: serde_json::Map<String, serde_json::Value> =
                    record.headers.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
                serde_json::Value::Object(map).to_string()
            });
            entity::ActiveModel {
                id: sea_orm::ActiveValue::NotSet,
                event_id: Set(record.event_id),
                topic: Set(record.topic),
                partition_key: Set(record.key),
                event_type: Set(record.record_type.to_owned()),
                correlation_id: Set(record.correlation_id),
                payload: Set(record.payload),
                created_at: Set(now),
                published_at: Set(None),
                attempts: Set(0),
                last_error: Set(None),
                trace_context: Set(crate::trace::stored_context()),
                headers: Set(headers),
            }
        });
        insert_rows(conn, rows.collect()).await
    }

    /// Tells the relay that appended events were committed.
    pub fn committed(&self) {
        self.wake.notify_one();
    }
}
