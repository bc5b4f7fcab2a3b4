//! `StampStore`: stamp records in `metadata_stamps`, one per (namespace, hash).

mod entity;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use omninode_runtime::{
    db::{OneStatement, WriteTransaction, begin_write, insert_skipping_taken},
    events::{Outbox, WriteIf},
    group_commit::{BatchWrite, GroupCommit},
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Statement,
};
use serde::{Deserialize, Serialize};

use entity::{ActiveModel, Column, Entity, Model as StampRow};

use omninode_core::stamp::{METADATA_VERSION, PROTOCOL_VERSION, StampFormat};

use crate::{domain::StampRecord, events::stamp_created};

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
    /// Writes go through one group-commit writer: concurrent Stamp calls
    /// share a transaction (and its fsync) instead of queueing for the lock.
    writer: GroupCommit<WriteRequest, Result<Vec<Stored>, DbErr>>,
}

/// One caller's items for [`StampStore::insert_or_get`].
struct WriteRequest {
    namespace: String,
    items: Vec<NewStamp>,
    correlation_id: Option<String>,
    /// The caller's trace (its events and the transaction's span belong to it).
    trace_context: Option<String>,
}

/// Requests written in one transaction at most; bounds a transaction's size.
const MAX_GROUP: usize = 256;
/// Statements stay far below the bind-parameter limits (SQLite 32766,
/// PostgreSQL 65535) however many items a group carries.
const MAX_IN_LIST: usize = 1000;
const MAX_INSERT_ROWS: usize = 500;

impl StampStore {
    /// A store over `db`; every created record emits `stamp-created` through
    /// `outbox` in the transaction that creates it. Starts the writer task.
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        let write: BatchWrite<WriteRequest, Result<Vec<Stored>, DbErr>> = {
            let db = db.clone();
            Arc::new(move |requests| {
                let (db, outbox) = (db.clone(), outbox.clone());
                Box::pin(async move { write_group(&db, &outbox, requests).await })
            })
        };
        Self { db, writer: GroupCommit::spawn(write, MAX_GROUP, 1) }
    }

    /// Creates the rows of `items` that are new, in one transaction, and
    /// reports each item's outcome in order. Duplicates within `items` (or
    /// with a request committed in the same group) resolve to the first; a
    /// concurrent writer of the same hash wins or loses cleanly.
    pub async fn insert_or_get(
        &self,
        namespace: &str,
        items: Vec<NewStamp>,
        correlation_id: Option<&str>,
    ) -> Result<Vec<Stored>, DbErr> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let request = WriteRequest {
            namespace: namespace.to_owned(),
            items,
            correlation_id: correlation_id.map(str::to_owned),
            trace_context: omninode_runtime::trace::stored_context(),
        };
        self.writer.submit(request).await.map_err(|stopped| DbErr::Custom(format!("stamp store: {stopped}")))?
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
}

/// Writes a group of requests in one transaction; if that fails, writes each
/// request in a transaction of its own, so one bad request fails alone.
async fn write_group(
    db: &DatabaseConnection,
    outbox: &Outbox,
    requests: Vec<WriteRequest>,
) -> Vec<Result<Vec<Stored>, DbErr>> {
    if requests.len() > 1 {
        match write_in_one_transaction(db, outbox, &requests).await {
            Ok(results) => return results.into_iter().map(Ok).collect(),
            Err(err) => {
                tracing::warn!(%err, requests = requests.len(), "a grouped stamp write failed; writing each request alone")
            }
        }
    }
    let mut results = Vec::with_capacity(requests.len());
    for request in &requests {
        let alone = write_in_one_transaction(db, outbox, std::slice::from_ref(request)).await;
        results.push(alone.map(|mut one| one.pop().unwrap_or_default()));
    }
    results
}

/// Each request's outcomes, all written (rows and their events) in one
/// transaction: a span of the first request's trace, linked to the others'.
async fn write_in_one_transaction(
    db: &DatabaseConnection,
    outbox: &Outbox,
    requests: &[WriteRequest],
) -> Result<Vec<Vec<Stored>>, DbErr> {
    use tracing::Instrument;
    let span = omninode_runtime::trace::db_span("INSERT", "metadata_stamps", db.get_database_backend());
    if omninode_runtime::trace::enabled() {
        omninode_runtime::trace::continue_from_stored(&span, requests[0].trace_context.as_deref());
        for other in requests[1..].iter().filter_map(|r| r.trace_context.as_deref()) {
            omninode_runtime::trace::link(&span, other);
        }
    }
    write_transaction(db, outbox, requests).instrument(span).await
}

async fn write_transaction(
    db: &DatabaseConnection,
    outbox: &Outbox,
    requests: &[WriteRequest],
) -> Result<Vec<Vec<Stored>>, DbErr> {
    if fits_one_statement(requests) {
        return write_in_one_statement(db, outbox, requests).await;
    }
    let txn = begin_write(db).await?;
    let mut results: Vec<Vec<Stored>> = requests.iter().map(|r| Vec::with_capacity(r.items.len())).collect();
    let mut events = Vec::new();
    let mut namespaces: Vec<&str> = requests.iter().map(|r| r.namespace.as_str()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for namespace in namespaces {
        let members: Vec<usize> = (0..requests.len()).filter(|&i| requests[i].namespace == namespace).collect();
        let items: Vec<&NewStamp> = members.iter().flat_map(|&i| &requests[i].items).collect();
        let plan = Plan::of(&items);
        let inserted = insert_new(&txn, namespace, &plan.rows).await?;
        let mut outcomes = resolve(&txn, namespace, &items, &plan, &inserted).await?.into_iter();
        for &i in &members {
            for _ in 0..requests[i].items.len() {
                let stored = outcomes.next().ok_or(DbErr::RecordNotInserted)?;
                if let Stored::Created(record) = &stored {
                    events.push(stamp_created(
                        record,
                        requests[i].correlation_id.as_deref(),
                        requests[i].trace_context.clone(),
                    ));
                }
                results[i].push(stored);
            }
        }
    }
    let any_event = !events.is_empty();
    outbox.append(&txn, events).await?;
    txn.commit().await?;
    if any_event {
        outbox.committed();
    }
    Ok(results)
}

/// Whether a group can go in one trip ([`OneStatement`]): one namespace,
/// and rows and events small enough that a PostgreSQL statement is never
/// held back by Nagle's algorithm (see
/// [`omninode_runtime::db::STATEMENT_BYTES`]). Larger groups take a
/// transaction of several statements.
fn fits_one_statement(requests: &[WriteRequest]) -> bool {
    let namespace = &requests[0].namespace;
    let bytes: usize = requests.iter().flat_map(|r| &r.items).map(|item| 2 * row_bytes(&item)).sum();
    requests.iter().all(|r| &r.namespace == namespace) && bytes <= omninode_runtime::db::STATEMENT_BYTES
}

/// One trip to the database: the new rows (`ON CONFLICT DO NOTHING
/// RETURNING id`) and the events of those it inserted, committed together;
/// then the items it did not insert are looked up.
async fn write_in_one_statement(
    db: &DatabaseConnection,
    outbox: &Outbox,
    requests: &[WriteRequest],
) -> Result<Vec<Vec<Stored>>, DbErr> {
    let namespace = requests[0].namespace.as_str();
    let items: Vec<&NewStamp> = requests.iter().flat_map(|r| &r.items).collect();
    let plan = Plan::of(&items);
    let owner: HashMap<&str, &WriteRequest> =
        requests.iter().flat_map(|r| r.items.iter().map(move |item| (item.id.as_str(), r))).collect();
    let events = plan
        .rows
        .iter()
        .map(|item| {
            let request = owner[item.id.as_str()];
            let event = stamp_created(
                &record_of(namespace, item),
                request.correlation_id.as_deref(),
                request.trace_context.clone(),
            );
            (item.id.clone(), event)
        })
        .collect();
    let mut statement = OneStatement::new(db.get_database_backend());
    statement.add_statement("s", insert_statement(namespace, &plan.rows, db.get_database_backend()));
    let written = WriteIf::KeyReturned { part: "s", table: "metadata_stamps", column: "id" };
    outbox.add_to(&mut statement, "o", events, &written);
    let mut inserted = HashSet::with_capacity(plan.rows.len());
    for row in statement.run(db, "SELECT id FROM s").await? {
        inserted.insert(row.try_get::<String>("", "id")?);
    }
    if !inserted.is_empty() {
        outbox.committed();
    }
    // Items not inserted (their content or key was there) are looked up.
    let outcomes = if inserted.len() == items.len() {
        resolve(db, namespace, &items, &plan, &inserted).await?
    } else {
        let txn = sea_orm::TransactionTrait::begin(db).await?;
        let outcomes = resolve(&txn, namespace, &items, &plan, &inserted).await?;
        txn.commit().await?;
        outcomes
    };
    let mut outcomes = outcomes.into_iter();
    requests.iter().map(|r| r.items.iter().map(|_| outcomes.next().ok_or(DbErr::RecordNotInserted)).collect()).collect()
}

/// Which items of one namespace's batch are inserted: a hash goes in once,
/// and a key is kept for its first hash.
struct Plan<'a> {
    rows: Vec<&'a NewStamp>,
    keys: HashMap<&'a str, &'a str>,
}

impl<'a> Plan<'a> {
    fn of(items: &[&'a NewStamp]) -> Self {
        let mut rows: Vec<&NewStamp> = Vec::new();
        let mut hashes: HashSet<&str> = HashSet::new();
        let mut keys: HashMap<&str, &str> = HashMap::new();
        for &item in items {
            let key_taken = item.op_id.as_deref().is_some_and(|k| keys.contains_key(k));
            if !key_taken && hashes.insert(&item.file_hash) {
                rows.push(item);
                if let Some(key) = item.op_id.as_deref() {
                    keys.insert(key, &item.file_hash);
                }
            }
        }
        Self { rows, keys }
    }
}

/// The row's size is mostly its stamp text, path and JSON around them.
fn row_bytes(item: &&NewStamp) -> usize {
    item.stamp_text.len() + item.file_path.len() * 2 + 400
}

/// The insert of `rows` that leaves out those whose hash or key is taken
/// (see [`insert_skipping_taken`]) and returns the ids it inserted.
fn insert_statement(namespace: &str, rows: &[&NewStamp], backend: DbBackend) -> Statement {
    let mut insert = Entity::insert_many(rows.iter().map(|item| active_model(namespace, item))).into_query();
    insert.returning_col(Column::Id);
    insert_skipping_taken(insert, backend)
}

/// Inserts `rows` (one namespace) that are new, in statements of a few KiB
/// each; returns the ids it inserted. New content is the common case, so the
/// insert comes first: only the items it did not insert (their hash or
/// idempotency key is taken) are looked up, by [`resolve`].
async fn insert_new(txn: &WriteTransaction, namespace: &str, rows: &[&NewStamp]) -> Result<HashSet<String>, DbErr> {
    let mut inserted: HashSet<String> = HashSet::with_capacity(rows.len());
    for chunk in omninode_runtime::db::statement_chunks(rows, MAX_INSERT_ROWS, row_bytes) {
        for row in txn.query_all_raw(insert_statement(namespace, chunk, txn.get_database_backend())).await? {
            inserted.insert(row.try_get::<String>("", "id")?);
        }
    }
    Ok(inserted)
}

/// Each item's outcome, in order: created if its id was `inserted`, else the
/// row that holds its key or hash (there before, or a concurrent writer's).
/// When there is something to look up, `conn` must be a transaction: the
/// lookups set a planner option for it alone.
async fn resolve<C: ConnectionTrait>(
    conn: &C,
    namespace: &str,
    items: &[&NewStamp],
    plan: &Plan<'_>,
    inserted: &HashSet<String>,
) -> Result<Vec<Stored>, DbErr> {
    let missed: Vec<&NewStamp> = items.iter().copied().filter(|i| !inserted.contains(&i.id)).collect();
    if !missed.is_empty() && conn.get_database_backend() == DbBackend::Postgres {
        // These lookups take IN lists: a cached generic plan made while a
        // fresh table's statistics said "empty" scans the namespace (seen:
        // 60 ms instead of 0.1 for 64 hashes) until the next ANALYZE; plan
        // them for their values and the table as it is.
        conn.execute_unprepared("SET LOCAL plan_cache_mode = force_custom_plan").await?;
    }
    let keys: Vec<&str> = missed.iter().filter_map(|i| i.op_id.as_deref()).collect();
    let by_key: HashMap<String, StampRow> = rows_where_in(conn, namespace, Column::OpId, &keys)
        .await?
        .into_iter()
        .filter_map(|row| row.op_id.clone().map(|k| (k, row)))
        .collect();
    let hashes: Vec<&str> = missed.iter().map(|i| i.file_hash.as_str()).collect();
    let by_hash: HashMap<String, StampRow> = rows_where_in(conn, namespace, Column::FileHash, &hashes)
        .await?
        .into_iter()
        .map(|row| (row.file_hash.clone(), row))
        .collect();

    let mut results = Vec::with_capacity(items.len());
    for &item in items {
        let stored = if inserted.contains(&item.id) {
            Stored::Created(record_of(namespace, item))
        } else if let Some(row) = item.op_id.as_deref().and_then(|k| by_key.get(k)) {
            resolve_key(row, &item.file_hash)?
        } else if let Some(row) = by_hash.get(&item.file_hash) {
            Stored::Existing(row.clone().try_into()?)
        } else if let Some(other) = item.op_id.as_deref().and_then(|k| plan.keys.get(k)) {
            // The key went with other content earlier in this batch.
            Stored::KeyConflict { existing_hash: (*other).to_owned() }
        } else {
            return Err(DbErr::RecordNotInserted);
        };
        results.push(stored);
    }
    Ok(results)
}

/// The record an inserted item became (what `active_model` wrote).
fn record_of(namespace: &str, item: &NewStamp) -> StampRecord {
    StampRecord {
        id: item.id.clone(),
        namespace: namespace.to_owned(),
        file_hash: item.file_hash.clone(),
        file_path: item.file_path.clone(),
        file_size: item.file_size,
        content_type: item.content_type.clone(),
        format: item.format,
        version: item.version.clone(),
        timestamp: item.timestamp.clone(),
        stamp_text: item.stamp_text.clone(),
        protocol_version: PROTOCOL_VERSION.to_owned(),
        metadata_version: METADATA_VERSION.to_owned(),
        idempotency_key: item.op_id.clone(),
        created_at: item.created_at,
        updated_at: item.created_at,
    }
}

fn resolve_key(row: &StampRow, file_hash: &str) -> Result<Stored, DbErr> {
    Ok(if row.file_hash == file_hash {
        Stored::Existing(row.clone().try_into()?)
    } else {
        Stored::KeyConflict { existing_hash: row.file_hash.clone() }
    })
}

/// The rows of `namespace` whose `column` is one of `values`, asked in
/// chunks that stay below the bind-parameter limits.
async fn rows_where_in<C: ConnectionTrait>(
    conn: &C,
    namespace: &str,
    column: Column,
    values: &[&str],
) -> Result<Vec<StampRow>, DbErr> {
    let mut rows = Vec::with_capacity(values.len());
    for chunk in values.chunks(MAX_IN_LIST) {
        let found = Entity::find()
            .filter(Column::Namespace.eq(namespace))
            .filter(column.is_in(chunk.iter().copied()))
            .all(conn)
            .await?;
        rows.extend(found);
    }
    Ok(rows)
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
