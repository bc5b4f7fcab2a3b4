//! `WorkflowStore`: workflows in `workflow_executions`. Every change after
//! creation is a conditional update on the state the writer last saw, so a
//! cancel and a worker racing on one workflow can never both win; a worker's
//! changes are also conditional on its lease's fencing token (see [`lease`]),
//! so an owner that lost its lease cannot overwrite the new owner's progress.

mod announce;
mod definition_entity;
mod definitions;
mod entity;
pub mod lease;

use std::time::Duration;
use tracing::Instrument;

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    SqlErr,
    sea_query::{Expr, ExprTrait},
};

use entity::{ActiveModel, Column, Entity, Model};
use omninode_core::time::now;
use omninode_runtime::{
    db::{OneStatement, begin_write},
    events::{NewEvent, Outbox, WriteIf},
};

pub use lease::{Claimed, Fence};

use crate::{
    domain::{WorkflowState, workflow::Workflow},
    events::state_changed,
};

/// What became of an insert.
#[derive(Debug)]
pub enum Inserted {
    Created(Workflow),
    /// The namespace already has a workflow with this idempotency key.
    ExistingKey(Workflow),
    /// `limit` runnable workflows already wait unclaimed; nothing was stored.
    QueueFull {
        limit: u64,
    },
}

/// How a new workflow enters the store.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Claimed at once by this process (a worker slot is free): lease owner
    /// and duration; the fencing token is 1. `answered_when_settled`: the
    /// caller hears of the workflow only once it settles (RunWorkflow), by a
    /// durable write to the same database that flushes the insert's WAL
    /// too, so the insert need not wait for its own flush.
    Claimed { owner: String, lease: Duration, answered_when_settled: bool },
    /// Left for any instance to claim, if fewer than `limit` wait unclaimed.
    Queued { limit: u64 },
}

/// What became of a conditional update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    Written,
    /// Another writer (a cancel) moved the workflow first.
    Moved,
    /// The writer's lease was taken over: its fencing token is stale.
    Fenced,
}

/// Workflows on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct WorkflowStore {
    db: DatabaseConnection,
    /// Every state change emits `workflow-state-changed` in its own transaction.
    outbox: Outbox,
    /// PostgreSQL: tells the other instances of changes once committed.
    announcer: announce::Announcer,
}

impl WorkflowStore {
    /// A store over `db`; on PostgreSQL it starts the task that announces
    /// changes to the other instances (see [`announce`]).
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        let announcer = announce::Announcer::new(&db);
        Self { db, outbox, announcer }
    }

    /// The database backend (PostgreSQL claimers also listen for notifications).
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Inserts a new workflow, claimed or queued (see [`Admission`]); if a
    /// concurrent start took its idempotency key first, returns that workflow instead.
    pub async fn insert(&self, workflow: &Workflow, admission: &Admission) -> Result<Inserted, DbErr> {
        let span = omninode_runtime::trace::db_span("INSERT", "workflow_executions", self.backend());
        self.insert_in_transaction(workflow, admission).instrument(span).await
    }

    async fn insert_in_transaction(&self, workflow: &Workflow, admission: &Admission) -> Result<Inserted, DbErr> {
        let mut row = to_active(workflow)?;
        let mut wake_relay = true;
        let written = match admission {
            Admission::Claimed { owner, lease, answered_when_settled } => {
                row.lease_owner = Set(Some(owner.clone()));
                row.lease_expires_at = Set(Some(lease::expiry(*lease)));
                row.lease_attempt = Set(1);
                // A workflow claimed at once (RunWorkflow's path) is written
                // with its events in one trip.
                if workflow.reply_to.is_none() {
                    let mut statement = OneStatement::new(self.backend());
                    statement.add("w", &Entity::insert(row).into_query());
                    self.outbox.add_to(&mut statement, "o", keyed(inserted_events(workflow)), &WriteIf::Always);
                    if *answered_when_settled {
                        statement.commit_without_flush();
                    }
                    // Events the relay could publish only after the WAL's
                    // flush need no round of their own: the workflow's next
                    // durable write brings that flush and wakes the relay
                    // (its poll, failing that).
                    wake_relay = !statement.flushed_later();
                    statement.run(&self.db, "SELECT 1").await.map(|_| true)
                } else {
                    self.insert_row(workflow, admission, row).await
                }
            }
            Admission::Queued { .. } => {
                row.lease_attempt = Set(0);
                self.insert_row(workflow, admission, row).await
            }
        };
        match written {
            Ok(true) => {
                if wake_relay {
                    self.outbox.committed();
                }
                if matches!(admission, Admission::Queued { .. }) {
                    self.announcer.wake_claimers();
                }
                Ok(Inserted::Created(workflow.clone()))
            }
            Ok(false) => match admission {
                Admission::Queued { limit } => Ok(Inserted::QueueFull { limit: *limit }),
                Admission::Claimed { .. } => Err(DbErr::RecordNotInserted),
            },
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                let key = workflow.idempotency_key.as_deref().unwrap_or_default();
                match self.find_by_key(&workflow.namespace, key).await? {
                    Some(existing) => Ok(Inserted::ExistingKey(existing)),
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Writes a new workflow's row, its events and (started from Kafka) its
    /// request and first answer in a transaction; `false` if a queued one
    /// finds the queue full.
    async fn insert_row(&self, workflow: &Workflow, admission: &Admission, row: ActiveModel) -> Result<bool, DbErr> {
        let txn = begin_write(&self.db).await?;
        if let Admission::Queued { limit } = admission
            && !lease::admits(&txn, *limit).await?
        {
            txn.rollback().await?;
            return Ok(false);
        }
        if let Err(err) = Entity::insert(row).exec_without_returning(&txn).await {
            txn.rollback().await?;
            return Err(err);
        }
        self.outbox.append(&txn, inserted_events(workflow)).await?;
        // Started by a request from Kafka: the request is remembered and its
        // first answer queued with the workflow.
        if let Some(reply) = &workflow.reply_to {
            crate::ingress::remember(&txn, reply, Some(&workflow.id)).await?;
            self.outbox.append_records(&txn, vec![crate::ingress::accepted(reply, workflow, true)]).await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// The workflow started in `namespace` with idempotency key `key`.
    pub async fn find_by_key(&self, namespace: &str, key: &str) -> Result<Option<Workflow>, DbErr> {
        Entity::find()
            .filter(Column::Namespace.eq(namespace))
            .filter(Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
            .map(from_model)
            .transpose()
    }

    pub async fn get(&self, id: &str) -> Result<Option<Workflow>, DbErr> {
        Entity::find_by_id(id).one(&self.db).await?.map(from_model).transpose()
    }

    /// Writes `workflow` (version + 1) if its stored state is still
    /// `expected` and, for a worker (`fence`), its lease is still the one it
    /// claimed. Only running (PENDING, PROCESSING) keeps a lease: any other
    /// state ends it, and so does a change by a request (`fence` = `None`,
    /// e.g. an approval queueing the workflow again), so that any instance
    /// claims the workflow at once.
    pub async fn update(
        &self,
        workflow: &mut Workflow,
        expected: WorkflowState,
        fence: Option<&Fence>,
    ) -> Result<Updated, DbErr> {
        let span = omninode_runtime::trace::db_span("UPDATE", "workflow_executions", self.backend());
        self.update_in_transaction(workflow, expected, fence).instrument(span).await
    }

    async fn update_in_transaction(
        &self,
        workflow: &mut Workflow,
        expected: WorkflowState,
        fence: Option<&Fence>,
    ) -> Result<Updated, DbErr> {
        workflow.updated_at = now();
        let mut active = changes_of(workflow)?;
        if fence.is_none() || !lease::holds_lease(workflow.state) {
            active.lease_owner = Set(None);
            active.lease_expires_at = Set(None);
        }
        let mut query = Entity::update_many()
            .set(active)
            .col_expr(Column::Version, Expr::col(Column::Version).add(1))
            .filter(Column::Id.eq(&workflow.id))
            .filter(Column::CurrentState.eq(expected.as_str()));
        query = match fence {
            Some(fence) => query.filter(Column::LeaseAttempt.eq(fence.attempt)),
            // A request that makes the workflow runnable again (resume, retry,
            // approve) fences off any worker still holding an older claim:
            // a step paused mid-call must not write after the resume.
            None if workflow.state == WorkflowState::Pending => {
                query.col_expr(Column::LeaseAttempt, Expr::col(Column::LeaseAttempt).add(1))
            }
            None => query,
        };
        let moved = workflow.state != expected;
        let answers_kafka = moved && workflow.state.is_terminal() && workflow.reply_to.is_some();
        let written = if !answers_kafka {
            self.update_in_one_statement(workflow, expected, query.into_query()).await?
        } else {
            self.update_row(workflow, expected, query).await?
        };
        if !written {
            let Some(fence) = fence else { return Ok(Updated::Moved) };
            let attempt: Option<i64> = Entity::find_by_id(&workflow.id)
                .select_only()
                .column(Column::LeaseAttempt)
                .into_tuple()
                .one(&self.db)
                .await?;
            return Ok(if attempt == Some(fence.attempt) { Updated::Moved } else { Updated::Fenced });
        }
        if moved {
            self.outbox.committed();
            self.announcer.changed(&workflow.id);
            if workflow.state == WorkflowState::Pending {
                self.announcer.wake_claimers();
            }
        }
        workflow.version += 1;
        Ok(Updated::Written)
    }

    /// The conditional update and its event in one trip ([`OneStatement`]);
    /// whether it matched.
    async fn update_in_one_statement(
        &self,
        workflow: &Workflow,
        expected: WorkflowState,
        mut update: sea_orm::sea_query::UpdateStatement,
    ) -> Result<bool, DbErr> {
        let moved = workflow.state != expected;
        update.returning(sea_orm::sea_query::Query::returning().expr(Expr::val(1)));
        let mut statement = OneStatement::new(self.backend());
        statement.add("u", &update);
        if moved {
            let event = (workflow.id.clone(), state_changed(workflow, Some(expected)));
            self.outbox.add_to(&mut statement, "o", vec![event], &WriteIf::Returned("u"));
        }
        let matched = statement.run(&self.db, "SELECT 1 FROM u").await?.len();
        Ok(matched == 1)
    }

    /// The conditional update, its event, a Kafka request's last answer and
    /// the claimers' wake-up in a transaction; whether it matched.
    async fn update_row(
        &self,
        workflow: &Workflow,
        expected: WorkflowState,
        query: sea_orm::UpdateMany<Entity>,
    ) -> Result<bool, DbErr> {
        let txn = begin_write(&self.db).await?;
        let moved = workflow.state != expected;
        let rows_affected = query.exec(&txn).await?.rows_affected;
        if rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        if moved {
            self.outbox.append(&txn, vec![state_changed(workflow, Some(expected))]).await?;
            if let Some(reply) = workflow.reply_to.as_ref().filter(|_| workflow.state.is_terminal()) {
                self.outbox.append_records(&txn, vec![crate::ingress::ended(reply, workflow)]).await?;
            }
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Up to `limit` workflows of `namespace` (optionally in `state`) older
    /// than `before`, newest first.
    pub async fn list(
        &self,
        namespace: &str,
        state: Option<WorkflowState>,
        before: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Workflow>, DbErr> {
        let mut query = Entity::find().filter(Column::Namespace.eq(namespace));
        if let Some(state) = state {
            query = query.filter(Column::CurrentState.eq(state.as_str()));
        }
        if let Some(before) = before {
            query = query.filter(Column::Id.lt(before));
        }
        let rows = query.order_by_desc(Column::Id).limit(limit).all(&self.db).await?;
        rows.into_iter().map(from_model).collect()
    }
}

/// Events keyed by their workflow (every outbox row of a one-statement write
/// is written).
fn keyed(events: Vec<NewEvent>) -> Vec<(String, NewEvent)> {
    events.into_iter().map(|event| (event.partition_key.clone(), event)).collect()
}

/// The events of a new workflow: its creation (PENDING) and, when it was
/// started before its insert, the move to the state it is stored in.
fn inserted_events(workflow: &Workflow) -> Vec<NewEvent> {
    if workflow.state == WorkflowState::Pending {
        return vec![state_changed(workflow, None)];
    }
    let created = Workflow {
        state: WorkflowState::Pending,
        transitions: Vec::new(),
        steps: Vec::new(),
        started_at: None,
        updated_at: workflow.created_at,
        ..workflow.clone()
    };
    vec![state_changed(&created, None), state_changed(workflow, Some(WorkflowState::Pending))]
}

fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, DbErr> {
    serde_json::to_value(value).map_err(|e| DbErr::Json(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(id: &str, column: &str, value: serde_json::Value) -> Result<T, DbErr> {
    serde_json::from_value(value).map_err(|e| DbErr::Json(format!("workflow_executions.{column} of {id}: {e}")))
}

/// The whole row of `w`, for its insert.
fn to_active(w: &Workflow) -> Result<ActiveModel, DbErr> {
    Ok(ActiveModel {
        id: Set(w.id.clone()),
        namespace: Set(w.namespace.clone()),
        workflow_type: Set(w.workflow_type.clone()),
        correlation_id: Set(w.correlation_id.clone()),
        idempotency_key: Set(w.idempotency_key.clone()),
        input_hash: Set(w.input_hash.clone()),
        input: Set(json(&w.input)?),
        created_at: Set(w.created_at),
        version: Set(w.version),
        definition: Set(w.definition.clone()),
        trace_context: Set(w.trace_context.clone()),
        reply_to: Set(w.reply_to.as_ref().map(|r| serde_json::to_string(r).expect("ReplyTo serialises"))),
        ..changes_of(w)?
    })
}

/// The columns a state change writes: not what the workflow was admitted
/// with (its input above all, which may be large), which never changes, nor
/// its version, which the update counts up itself.
fn changes_of(w: &Workflow) -> Result<ActiveModel, DbErr> {
    Ok(ActiveModel {
        current_state: Set(w.state.as_str().to_owned()),
        file_hash: Set(w.file_hash.clone()),
        stamp_id: Set(w.stamp_id.clone()),
        stamped_content: Set(w.stamped_content.clone()),
        error_message: Set(w.error_message.clone()),
        steps: Set(json(&w.steps)?),
        transitions: Set(json(&w.transitions)?),
        intelligence_data: Set(w.intelligence_data.clone()),
        started_at: Set(w.started_at),
        completed_at: Set(w.completed_at),
        updated_at: Set(w.updated_at),
        execution_time_ms: Set(w.execution_time_ms.map(|ms| ms as i64)),
        step_cursor: Set(i32::try_from(w.cursor).unwrap_or(i32::MAX)),
        current_step: Set(w.current_step.clone()),
        wake_at: Set(w.wake_at),
        // Leases are written by the claim, renewal and release statements only.
        ..ActiveModel::default()
    })
}

fn from_model(m: Model) -> Result<Workflow, DbErr> {
    let reply_to = match &m.reply_to {
        Some(text) => Some(
            serde_json::from_str(text)
                .map_err(|e| DbErr::Json(format!("workflow_executions.reply_to of {}: {e}", m.id)))?,
        ),
        None => None,
    };
    Ok(Workflow {
        reply_to,
        state: m.current_state.parse().map_err(DbErr::Type)?,
        input: parse(&m.id, "input", m.input)?,
        steps: parse(&m.id, "steps", m.steps)?,
        transitions: parse(&m.id, "transitions", m.transitions)?,
        id: m.id,
        namespace: m.namespace,
        workflow_type: m.workflow_type,
        correlation_id: m.correlation_id,
        idempotency_key: m.idempotency_key,
        input_hash: m.input_hash,
        file_hash: m.file_hash,
        stamp_id: m.stamp_id,
        stamped_content: m.stamped_content,
        error_message: m.error_message,
        intelligence_data: m.intelligence_data,
        created_at: m.created_at,
        started_at: m.started_at,
        completed_at: m.completed_at,
        updated_at: m.updated_at,
        execution_time_ms: m.execution_time_ms.map(|ms| u64::try_from(ms).unwrap_or_default()),
        version: m.version,
        definition: m.definition,
        cursor: u32::try_from(m.step_cursor).unwrap_or_default(),
        current_step: m.current_step,
        waiting_for: None,
        wake_at: m.wake_at,
        trace_context: m.trace_context,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use omninode_migrations::MigratorTrait;
    use omninode_runtime::config::DatabaseTarget;

    use super::*;
    use crate::domain::workflow::WorkflowInput;

    /// A migrated SQLite database on one connection, in a directory that lives as long as the guard.
    pub(crate) async fn migrated_sqlite() -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().unwrap();
        let target = DatabaseTarget::Sqlite(dir.path().join("workflows.db"));
        let db = omninode_runtime::db::connect(&target, 1).await.unwrap();
        omninode_migrations::Migrator::up(&db, None).await.unwrap();
        (dir, db)
    }

    /// A store on [`migrated_sqlite`], its events kept in the outbox.
    pub(crate) async fn migrated_store() -> (tempfile::TempDir, WorkflowStore) {
        let (dir, db) = migrated_sqlite().await;
        (dir, WorkflowStore::new(db, Outbox::new("orchestrator", "test", "omninode", Arc::default())))
    }

    #[tokio::test]
    async fn a_state_change_leaves_what_the_workflow_was_admitted_with_alone() {
        let (_dir, store) = migrated_store().await;
        let input = WorkflowInput { content: "x".repeat(100_000), file_path: "a.txt".into(), ..Default::default() };
        let mut workflow = Workflow::pending("ns".into(), input.clone(), "input-hash".into());
        workflow.correlation_id = Some("c1".into());
        let inserted = store.insert(&workflow, &Admission::Queued { limit: 10 }).await.unwrap();
        assert!(matches!(inserted, Inserted::Created(_)));

        // Fields fixed at admission, changed in memory only: a state change does not write them.
        workflow.input.content = "changed".into();
        workflow.correlation_id = Some("changed".into());
        workflow.transition(WorkflowState::Processing, "").unwrap();
        workflow.file_hash = Some("file-hash".into());
        assert_eq!(store.update(&mut workflow, WorkflowState::Pending, None).await.unwrap(), Updated::Written);

        let stored = store.get(&workflow.id).await.unwrap().unwrap();
        assert_eq!((stored.state, stored.version), (WorkflowState::Processing, workflow.version));
        assert_eq!(stored.file_hash.as_deref(), Some("file-hash"), "what changed is written");
        assert_eq!(stored.transitions.len(), workflow.transitions.len());
        assert_eq!(
            (stored.input, stored.correlation_id.as_deref()),
            (input, Some("c1")),
            "the admitted fields as stored"
        );
    }
}
