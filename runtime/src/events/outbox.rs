//! The transactional outbox: services append events on the same connection
//! (transaction) as the change they describe; the relay publishes them.

use std::sync::Arc;

use omninode_proto::events::v1::{EventEnvelope, event_envelope::Payload};
use prost::Message;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait};
use tokio::sync::Notify;

use super::topics::EventKind;

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
            }
        });
        entity::Entity::insert_many(rows).exec_without_returning(conn).await?;
        Ok(())
    }

    /// Tells the relay that appended events were committed.
    pub fn committed(&self) {
        self.wake.notify_one();
    }
}
