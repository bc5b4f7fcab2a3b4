//! `AggregateStore`: `bridge_states` and the bookkeeping that makes
//! aggregation exactly-once in effect. One transaction per batch records the
//! batch's event ids, counts only those it recorded first, updates the
//! aggregates under an optimistic lock, and appends `aggregate-updated` events.

mod entity;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use omninode_core::WorkflowState;
use omninode_runtime::{
    db::{begin_write, insert_skipping_taken},
    events::Outbox,
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use entity::{ActiveModel, Column, Entity, Model};

use crate::{
    domain::aggregate::{Aggregate, Item, ItemKind},
    error::ReducerError,
    events::aggregate_updated,
};

/// Aggregates on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct AggregateStore {
    db: DatabaseConnection,
    outbox: Outbox,
}

impl AggregateStore {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// Queues dead letters in the outbox (one transaction).
    pub async fn dead_letter(&self, records: Vec<omninode_runtime::events::OutboxRecord>) -> Result<(), DbErr> {
        let txn = omninode_runtime::db::begin_write(&self.db).await?;
        self.outbox.append_records(&txn, records).await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    /// The payloads of the events on `topics` that the relay marked
    /// published before `before` but were never aggregated, among the
    /// `depth` outbox rows up to the newest such one, oldest first: what a
    /// crash took from a batch the in-process bus had delivered (the bus never
    /// sends a marked event again). Events marked from `before` on are left
    /// out: the bus delivers them to whoever subscribed at `before`. One read
    /// on the outbox's primary key, each row's id looked up in
    /// `processed_events`; nothing is written.
    pub async fn published_not_processed(
        &self,
        topics: &[String],
        depth: u64,
        before: DateTime<Utc>,
    ) -> Result<Vec<Vec<u8>>, DbErr> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.db.get_database_backend();
        let placeholders: Vec<String> = (3..topics.len() + 3).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT o.payload AS payload FROM event_outbox o \
             WHERE o.id > (SELECT COALESCE(MAX(id), 0) FROM event_outbox WHERE published_at < $2) - $1 \
             AND o.published_at < $2 AND o.topic IN ({}) \
             AND NOT EXISTS (SELECT 1 FROM processed_events p WHERE p.event_id = o.event_id) \
             ORDER BY o.id",
            placeholders.join(", ")
        );
        let mut values: Vec<sea_orm::Value> = vec![i64::try_from(depth).unwrap_or(i64::MAX).into(), before.into()];
        values.extend(topics.iter().map(|topic| topic.clone().into()));
        let rows = self.db.query_all_raw(sea_orm::Statement::from_sql_and_values(backend, sql, values)).await?;
        rows.iter().map(|row| row.try_get::<Vec<u8>>("", "payload")).collect()
    }

    /// Aggregates `items` (received over `window`) in one transaction;
    /// returns the updated aggregates. Items whose event id was counted
    /// before are skipped. A concurrent update of the same namespace makes
    /// it [`ReducerError::Conflict`]: nothing was written, retry the batch.
    pub async fn apply(
        &self,
        items: &[Item],
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<Vec<Aggregate>, ReducerError> {
        use tracing::Instrument;
        let span = omninode_runtime::trace::db_span("UPSERT", "bridge_states", self.db.get_database_backend());
        self.apply_in_transaction(items, window).instrument(span).await
    }

    async fn apply_in_transaction(
        &self,
        items: &[Item],
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<Vec<Aggregate>, ReducerError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let txn = begin_write(&self.db).await?;
        let backend = txn.get_database_backend();
        let now = window.1;

        // 1. Claim the event ids; only the ones we inserted count.
        let mut claim = Query::insert();
        claim.into_table("processed_events").columns(["event_id", "namespace", "processed_at"]);
        for item in items {
            claim.values_panic([item.event_id.clone().into(), item.namespace.clone().into(), now.into()]);
        }
        claim.returning_col("event_id");
        let fresh: HashSet<String> = txn
            .query_all_raw(insert_skipping_taken(claim, backend))
            .await?
            .into_iter()
            .map(|row| row.try_get::<String>("", "event_id"))
            .collect::<Result<_, _>>()?;
        let fresh_items: Vec<&Item> = {
            let mut seen = HashSet::new();
            items.iter().filter(|i| fresh.contains(&i.event_id) && seen.insert(i.event_id.clone())).collect()
        };

        // 2. Workflows seen for the first time in their namespace.
        let workflows: Vec<(&str, &str)> = fresh_items
            .iter()
            .filter_map(|i| match &i.kind {
                ItemKind::Workflow { workflow_id, .. } => Some((i.namespace.as_str(), workflow_id.as_str())),
                ItemKind::Stamp { .. } => None,
            })
            .collect();
        let mut new_workflows: HashSet<(String, String)> = HashSet::new();
        if !workflows.is_empty() {
            let mut insert = Query::insert();
            insert.into_table("namespace_workflows").columns(["namespace", "workflow_id"]);
            for (namespace, workflow_id) in &workflows {
                insert.values_panic([(*namespace).into(), (*workflow_id).into()]);
            }
            insert.returning(Query::returning().columns(["namespace", "workflow_id"]));
            for row in txn.query_all_raw(insert_skipping_taken(insert, backend)).await? {
                new_workflows.insert((row.try_get("", "namespace")?, row.try_get("", "workflow_id")?));
            }
        }

        // 3. Fold the fresh items into their namespaces' aggregates.
        let namespaces: Vec<String> = {
            let set: std::collections::BTreeSet<&str> = items.iter().map(|i| i.namespace.as_str()).collect();
            set.into_iter().map(str::to_owned).collect()
        };
        let stored: HashMap<String, Model> = Entity::find()
            .filter(Column::Namespace.is_in(namespaces.clone()))
            .all(&txn)
            .await?
            .into_iter()
            .map(|m| (m.namespace.clone(), m))
            .collect();
        let mut aggregates: BTreeMap<String, Aggregate> = BTreeMap::new();
        for namespace in &namespaces {
            let aggregate = match stored.get(namespace) {
                Some(model) => from_model(model.clone())?,
                None => Aggregate::empty(namespace, now),
            };
            aggregates.insert(namespace.clone(), aggregate);
        }
        let mut counted: HashMap<&str, usize> = HashMap::new();
        for item in &fresh_items {
            let new_workflow = match &item.kind {
                ItemKind::Workflow { workflow_id, .. } => {
                    new_workflows.remove(&(item.namespace.clone(), workflow_id.clone()))
                }
                ItemKind::Stamp { .. } => false,
            };
            aggregates.get_mut(&item.namespace).expect("namespace listed").add(&item.kind, new_workflow);
            *counted.entry(item.namespace.as_str()).or_default() += 1;
        }

        // 4. Store them, conditional on the version read.
        let mut updated = Vec::new();
        let mut events = Vec::new();
        for (namespace, mut aggregate) in aggregates {
            let Some(&count) = counted.get(namespace.as_str()) else { continue };
            aggregate.close_window(window.0, window.1, count);
            let expected = aggregate.version;
            aggregate.version += 1;
            let model = to_active(&aggregate)?;
            if stored.contains_key(&namespace) {
                let result = Entity::update_many()
                    .set(model)
                    .filter(Column::Namespace.eq(&namespace))
                    .filter(Column::Version.eq(expected))
                    .exec(&txn)
                    .await?;
                if result.rows_affected != 1 {
                    txn.rollback().await?;
                    return Err(ReducerError::Conflict(namespace));
                }
            } else {
                let inserted = Entity::insert(model)
                    .on_conflict(OnConflict::column(Column::Namespace).do_nothing().to_owned())
                    .exec_without_returning(&txn)
                    .await?;
                if inserted != 1 {
                    txn.rollback().await?;
                    return Err(ReducerError::Conflict(namespace));
                }
            }
            events.push(aggregate_updated(&aggregate));
            updated.push(aggregate);
        }
        let any = !events.is_empty();
        self.outbox.append(&txn, events).await?;
        txn.commit().await?;
        if any {
            self.outbox.committed();
        }
        Ok(updated)
    }

    pub async fn get(&self, namespace: &str) -> Result<Option<Aggregate>, ReducerError> {
        Entity::find_by_id(namespace).one(&self.db).await?.map(from_model).transpose()
    }

    /// Up to `limit` aggregates with namespaces after `after`, by name.
    pub async fn list(&self, after: Option<&str>, limit: u64) -> Result<Vec<Aggregate>, ReducerError> {
        let mut query = Entity::find();
        if let Some(after) = after {
            query = query.filter(Column::Namespace.gt(after));
        }
        query.order_by_asc(Column::Namespace).limit(limit).all(&self.db).await?.into_iter().map(from_model).collect()
    }

    /// Recomputes `namespace` from the source tables (`metadata_stamps`,
    /// `workflow_executions`) and stores it as the next version.
    pub async fn rebuild(&self, namespace: &str) -> Result<Aggregate, ReducerError> {
        let txn = begin_write(&self.db).await?;
        let now = Utc::now();
        let mut aggregate = match Entity::find_by_id(namespace).one(&txn).await? {
            Some(model) => from_model(model)?,
            None => Aggregate::empty(namespace, now),
        };
        let existed = aggregate.version > 0;
        let mut per_type = Query::select();
        per_type
            .column("content_type")
            .expr_as(Expr::col("id").count(), "stamps")
            // SUM of a bigint is NUMERIC on PostgreSQL: cast it back.
            .expr_as(Expr::cust("CAST(SUM(file_size) AS BIGINT)"), "bytes")
            .from("metadata_stamps")
            .and_where(Expr::col("namespace").eq(namespace))
            .group_by_col("content_type");
        aggregate.file_type_counts.clear();
        aggregate.total_stamps = 0;
        aggregate.total_size_bytes = 0;
        for row in txn.query_all(&per_type).await? {
            let stamps: i64 = row.try_get("", "stamps")?;
            let bytes: i64 = row.try_get::<Option<i64>>("", "bytes")?.unwrap_or(0);
            aggregate.file_type_counts.insert(row.try_get("", "content_type")?, stamps as u64);
            aggregate.total_stamps += stamps as u64;
            aggregate.total_size_bytes += bytes as u64;
        }
        let mut workflows = Query::select();
        workflows
            .column("current_state")
            .expr_as(Expr::col("id").count(), "workflows")
            .from("workflow_executions")
            .and_where(Expr::col("namespace").eq(namespace))
            .group_by_col("current_state");
        aggregate.unique_workflows = 0;
        aggregate.workflow_state_counts.clear();
        for row in txn.query_all(&workflows).await? {
            let state: String = row.try_get("", "current_state")?;
            let count: i64 = row.try_get("", "workflows")?;
            aggregate.unique_workflows += count as u64;
            if state.parse::<WorkflowState>().is_ok_and(WorkflowState::is_terminal) {
                aggregate.workflow_state_counts.insert(state, count as u64);
            }
        }
        let expected = aggregate.version;
        aggregate.version += 1;
        aggregate.last_aggregation_at = now;
        let model = to_active(&aggregate)?;
        let written = if existed {
            Entity::update_many()
                .set(model)
                .filter(Column::Namespace.eq(namespace))
                .filter(Column::Version.eq(expected))
                .exec(&txn)
                .await?
                .rows_affected
        } else {
            Entity::insert(model).exec_without_returning(&txn).await?
        };
        if written != 1 {
            txn.rollback().await?;
            return Err(ReducerError::Conflict(namespace.to_owned()));
        }
        self.outbox.append(&txn, vec![aggregate_updated(&aggregate)]).await?;
        txn.commit().await?;
        self.outbox.committed();
        Ok(aggregate)
    }

    /// Forgets processed event ids older than `before` (redelivery after that
    /// long is not expected); returns how many.
    pub async fn prune_processed(&self, before: DateTime<Utc>) -> Result<u64, DbErr> {
        let mut delete = Query::delete();
        delete.from_table("processed_events").and_where(Expr::col("processed_at").lt(before));
        Ok(self.db.execute(&delete).await?.rows_affected())
    }
}

fn to_active(a: &Aggregate) -> Result<ActiveModel, DbErr> {
    let json = |map: &BTreeMap<String, u64>| serde_json::to_value(map).map_err(|e| DbErr::Json(e.to_string()));
    Ok(ActiveModel {
        namespace: Set(a.namespace.clone()),
        total_stamps: Set(a.total_stamps as i64),
        total_size_bytes: Set(a.total_size_bytes as i64),
        file_type_counts: Set(json(&a.file_type_counts)?),
        unique_workflows: Set(a.unique_workflows as i64),
        workflow_state_counts: Set(json(&a.workflow_state_counts)?),
        current_state: Set("ACTIVE".to_owned()),
        window_start: Set(a.window_start),
        window_end: Set(a.window_end),
        items_per_second: Set(a.items_per_second),
        last_aggregation_at: Set(a.last_aggregation_at),
        version: Set(a.version),
    })
}

fn from_model(m: Model) -> Result<Aggregate, ReducerError> {
    let map = |value: serde_json::Value| -> Result<BTreeMap<String, u64>, ReducerError> {
        serde_json::from_value(value).map_err(|e| ReducerError::Store(format!("bridge_states of {}: {e}", m.namespace)))
    };
    Ok(Aggregate {
        file_type_counts: map(m.file_type_counts.clone())?,
        workflow_state_counts: map(m.workflow_state_counts.clone())?,
        namespace: m.namespace,
        total_stamps: u64::try_from(m.total_stamps).unwrap_or_default(),
        total_size_bytes: u64::try_from(m.total_size_bytes).unwrap_or_default(),
        unique_workflows: u64::try_from(m.unique_workflows).unwrap_or_default(),
        window_start: m.window_start,
        window_end: m.window_end,
        items_per_second: m.items_per_second,
        last_aggregation_at: m.last_aggregation_at,
        version: m.version,
    })
}
