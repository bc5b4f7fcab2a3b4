//! `StampStore`: stamp records in `metadata_stamps`, one per (namespace, hash).

mod entity;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use omninode_mesh::{
    db::begin_write,
    events::{EventKind, NewEvent, Outbox},
};
use omninode_proto::events::v1::{StampCreated, event_envelope::Payload};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::OnConflict,
};
use serde::{Deserialize, Serialize};

use entity::{ActiveModel, Column, Entity, Model as StampRow};

use crate::domain::{
    record::StampRecord,
    stamp::{METADATA_VERSION, PROTOCOL_VERSION, StampFormat},
};

/// What a row keeps of the stamp itself, as JSON in `stamp_data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StampData {
    pub format: StampFormat,
    /// The timestamp exactly as written into the stamp.
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The stamp text written the first time.
    pub stamp_text: String,
}

impl TryFrom<StampRow> for StampRecord {
    type Error = DbErr;

    fn try_from(row: StampRow) -> Result<Self, DbErr> {
        let data: StampData = serde_json::from_value(row.stamp_data)
            .map_err(|e| DbErr::Json(format!("metadata_stamps.stamp_data of {}: {e}", row.id)))?;
        Ok(StampRecord {
            id: row.id,
            namespace: row.namespace,
            file_hash: row.file_hash,
            file_path: row.file_path,
            file_size: u64::try_from(row.file_size).unwrap_or_default(),
            content_type: row.content_type,
            format: data.format,
            version: data.version,
            timestamp: data.timestamp,
            stamp_text: data.stamp_text,
            protocol_version: row.protocol_version,
            metadata_version: row.metadata_version,
            idempotency_key: row.op_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A record to create unless its hash (or idempotency key) is already taken.
#[derive(Debug, Clone)]
pub struct NewStamp {
    pub id: String,
    pub file_hash: String,
    pub file_path: String,
    pub file_size: u64,
    pub content_type: String,
    pub op_id: Option<String>,
    pub format: StampFormat,
    pub version: Option<String>,
    /// The timestamp as written into the stamp; `created_at` in text.
    pub timestamp: String,
    pub stamp_text: String,
    pub created_at: DateTime<Utc>,
}

/// What became of one [`NewStamp`].
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// The row was written now.
    Created(StampRecord),
    /// The namespace already held this hash (or this key with this hash).
    Existing(StampRecord),
    /// The idempotency key is taken by a row with another hash.
    KeyConflict { existing_hash: String },
}

/// Stamp records on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct StampStore {
    db: DatabaseConnection,
    /// Every created record emits `stamp-created` in its own transaction.
    outbox: Outbox,
}

impl StampStore {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// Creates the rows of `items` that are new, all in one transaction, and
    /// reports each item's outcome in order. Duplicates within `items` resolve
    /// to the first; a concurrent writer of the same hash wins or loses cleanly.
    pub async fn insert_or_get(
        &self,
        namespace: &str,
        items: Vec<NewStamp>,
        correlation_id: Option<&str>,
    ) -> Result<Vec<Stored>, DbErr> {
        let txn = begin_write(&self.db).await?;

        let keys: Vec<&str> = items.iter().filter_map(|i| i.op_id.as_deref()).collect();
        let by_key: HashMap<String, StampRow> = if keys.is_empty() {
            HashMap::new()
        } else {
            Entity::find()
                .filter(Column::Namespace.eq(namespace))
                .filter(Column::OpId.is_in(keys))
                .all(&txn)
                .await?
                .into_iter()
                .filter_map(|row| row.op_id.clone().map(|k| (k, row)))
                .collect()
        };
        let hashes: Vec<&str> = items.iter().map(|i| i.file_hash.as_str()).collect();
        let mut by_hash = rows_by_hash(&txn, namespace, &hashes).await?;

        // Decide per item; `None` marks an item whose row is inserted below.
        let mut outcomes: Vec<Option<Stored>> = Vec::with_capacity(items.len());
        let mut planned: Vec<&NewStamp> = Vec::new();
        let mut planned_keys: HashMap<&str, &str> = HashMap::new();
        for item in &items {
            let key = item.op_id.as_deref();
            let outcome = if let Some(row) = key.and_then(|k| by_key.get(k)) {
                Some(resolve_key(row, &item.file_hash)?)
            } else if let Some(row) = by_hash.get(&item.file_hash) {
                Some(Stored::Existing(row.clone().try_into()?))
            } else if let Some(other) = key.and_then(|k| planned_keys.get(k)).filter(|h| **h != item.file_hash) {
                Some(Stored::KeyConflict { existing_hash: (*other).to_owned() })
            } else {
                if !planned.iter().any(|p| p.file_hash == item.file_hash) {
                    planned.push(item);
                    if let Some(key) = key {
                        planned_keys.insert(key, &item.file_hash);
                    }
                }
                None
            };
            outcomes.push(outcome);
        }

        if !planned.is_empty() {
            let rows = planned.iter().map(|item| active_model(namespace, item));
            Entity::insert_many(rows)
                .on_conflict(OnConflict::new().do_nothing().to_owned())
                .exec_without_returning(&txn)
                .await?;
            let planned_hashes: Vec<&str> = planned.iter().map(|p| p.file_hash.as_str()).collect();
            by_hash.extend(rows_by_hash(&txn, namespace, &planned_hashes).await?);
        }

        let mut results = Vec::with_capacity(items.len());
        for (item, outcome) in items.iter().zip(outcomes) {
            let stored = match outcome {
                Some(done) => done,
                None => match by_hash.get(&item.file_hash) {
                    // Ids are fresh UUIDs: the row is ours only if it carries our id.
                    Some(row) if row.id == item.id => Stored::Created(row.clone().try_into()?),
                    Some(row) => Stored::Existing(row.clone().try_into()?),
                    // Not inserted and no row for the hash: a concurrent writer
                    // took the idempotency key for other content.
                    None => match item.op_id.as_deref() {
                        Some(key) => {
                            let row = Entity::find()
                                .filter(Column::Namespace.eq(namespace))
                                .filter(Column::OpId.eq(key))
                                .one(&txn)
                                .await?
                                .ok_or_else(|| DbErr::RecordNotInserted)?;
                            resolve_key(&row, &item.file_hash)?
                        }
                        None => return Err(DbErr::RecordNotInserted),
                    },
                },
            };
            results.push(stored);
        }
        let events = results
            .iter()
            .filter_map(|stored| match stored {
                Stored::Created(record) => Some(stamp_created(record, correlation_id)),
                _ => None,
            })
            .collect::<Vec<_>>();
        let any_event = !events.is_empty();
        self.outbox.append(&txn, events).await?;
        txn.commit().await?;
        if any_event {
            self.outbox.committed();
        }
        Ok(results)
    }

    /// The record of `file_hash` in `namespace`.
    pub async fn get(&self, namespace: &str, file_hash: &str) -> Result<Option<StampRecord>, DbErr> {
        Entity::find()
            .filter(Column::Namespace.eq(namespace))
            .filter(Column::FileHash.eq(file_hash))
            .one(&self.db)
            .await?
            .map(StampRecord::try_from)
            .transpose()
    }

    /// Up to `limit` records of `namespace` with ids after `after`, in id (time) order.
    pub async fn list(&self, namespace: &str, after: Option<&str>, limit: u64) -> Result<Vec<StampRecord>, DbErr> {
        let mut query = Entity::find().filter(Column::Namespace.eq(namespace));
        if let Some(after) = after {
            query = query.filter(Column::Id.gt(after));
        }
        let rows = query.order_by_asc(Column::Id).limit(limit).all(&self.db).await?;
        rows.into_iter().map(StampRecord::try_from).collect()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }
}

fn stamp_created(record: &StampRecord, correlation_id: Option<&str>) -> NewEvent {
    let created_at = omninode_mesh::time::to_timestamp(record.created_at);
    NewEvent {
        kind: EventKind::StampCreated,
        namespace: record.namespace.clone(),
        partition_key: record.file_hash.clone(),
        correlation_id: correlation_id.map(str::to_owned),
        causation_id: None,
        payload: Payload::StampCreated(StampCreated {
            stamp_id: record.id.clone(),
            file_hash: record.file_hash.clone(),
            file_path: record.file_path.clone(),
            file_size: record.file_size,
            content_type: record.content_type.clone(),
            workflow_id: record
                .idempotency_key
                .as_deref()
                .and_then(|k| k.strip_prefix("workflow:"))
                .unwrap_or_default()
                .to_owned(),
            created_at: Some(created_at),
        }),
    }
}

fn resolve_key(row: &StampRow, file_hash: &str) -> Result<Stored, DbErr> {
    Ok(if row.file_hash == file_hash {
        Stored::Existing(row.clone().try_into()?)
    } else {
        Stored::KeyConflict { existing_hash: row.file_hash.clone() }
    })
}

async fn rows_by_hash<C: sea_orm::ConnectionTrait>(
    db: &C,
    namespace: &str,
    hashes: &[&str],
) -> Result<HashMap<String, StampRow>, DbErr> {
    if hashes.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(Entity::find()
        .filter(Column::Namespace.eq(namespace))
        .filter(Column::FileHash.is_in(hashes.iter().copied()))
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.file_hash.clone(), row))
        .collect())
}

fn active_model(namespace: &str, item: &NewStamp) -> ActiveModel {
    ActiveModel {
        id: Set(item.id.clone()),
        namespace: Set(namespace.to_owned()),
        file_hash: Set(item.file_hash.clone()),
        file_path: Set(item.file_path.clone()),
        file_size: Set(i64::try_from(item.file_size).unwrap_or(i64::MAX)),
        content_type: Set(item.content_type.clone()),
        stamp_data: Set(serde_json::json!(StampData {
            format: item.format,
            timestamp: item.timestamp.clone(),
            version: item.version.clone(),
            stamp_text: item.stamp_text.clone(),
        })),
        protocol_version: Set(PROTOCOL_VERSION.to_owned()),
        version: Set(1),
        op_id: Set(item.op_id.clone()),
        metadata_version: Set(METADATA_VERSION.to_owned()),
        created_at: Set(item.created_at),
        updated_at: Set(item.created_at),
    }
}
