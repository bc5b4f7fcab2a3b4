//! Leases: the database is the coordinator of orchestrator instances (no
//! cluster protocol of our own). A runnable workflow — PENDING or PROCESSING
//! with no lease or an expired one, or WAITING with its wake time passed (a
//! timer to fire, an approval timed out) — is claimed in batches (PostgreSQL:
//! `SELECT … FOR UPDATE SKIP LOCKED` and the update in one statement, so
//! concurrent claimers never take the same row and a stalled one holds
//! none; SQLite: one process, serialised by its write gate). A claim sets
//! the owner and expiry and bumps `lease_attempt`, the fencing token every
//! later write of that owner is conditional on. Owners renew while they run
//! and release on a graceful shutdown. Lease times come from the instances'
//! clocks, which must agree to well within a lease (NTP).

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityName, EntityTrait, Order, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    sea_query::{Expr, ExprTrait, LockBehavior, LockType, NullOrdering, Query, QueryStatementBuilder},
};

use super::{
    WorkflowStore,
    entity::{Column, Entity},
};
use crate::domain::WorkflowState;
use omninode_runtime::db::{OneStatement, WriteTransaction, begin_write};

/// The PostgreSQL channel on which a queued workflow wakes the claimers.
pub const CHANNEL: &str = "omninode_workflows";
/// The PostgreSQL channel that carries the id of every workflow whose state
/// changed, so watchers on other instances hear of it at once.
pub const CHANGES_CHANNEL: &str = "omninode_workflow_changes";
/// Advisory lock that makes "count the backlog, then insert" atomic across
/// instances on PostgreSQL ("omniqueu").
const BACKLOG_LOCK: i64 = 0x6f6d_6e69_7175_6575;

/// The fencing token a worker's writes are conditional on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub attempt: i64,
}

/// A workflow this instance just claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub fence: Fence,
    /// Another owner held it and let its lease expire (it died or stalled).
    pub taken_over: bool,
}

/// When a lease taken now ends.
pub(crate) fn expiry(lease: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

/// The states a lease holds on (WAITING only for the moment a claimed
/// wake-up takes to move on).
fn unfinished() -> [&'static str; 3] {
    [WorkflowState::Pending.as_str(), WorkflowState::Processing.as_str(), WorkflowState::Waiting.as_str()]
}

/// Whether a workflow in `state` keeps its worker's lease when stored:
/// waiting, paused and terminal workflows hold no lease.
pub(super) fn holds_lease(state: WorkflowState) -> bool {
    matches!(state, WorkflowState::Pending | WorkflowState::Processing)
}

/// Runnable and nobody's: PENDING or PROCESSING, or WAITING and due, with
/// no lease or an expired one.
///
/// The states are literals, written as the partial indexes of unfinished
/// and of waiting workflows state them: a planner proves such an index
/// usable from the query's text, where a bound state would be known only
/// per execution (PostgreSQL's generic plans cannot use the index; SQLite,
/// planning once per statement, neither).
fn runnable(now: DateTime<Utc>) -> Condition {
    use WorkflowState::{Pending, Processing};
    let running = Expr::cust(format!("current_state IN ('{}', '{}')", Pending.as_str(), Processing.as_str()));
    Condition::all().add(Condition::any().add(running).add(due(now))).add(lease_free(now))
}

/// In `state`, written as a literal (see [`runnable`]).
fn state_is(state: WorkflowState) -> Expr {
    Expr::cust(format!("current_state = '{}'", state.as_str()))
}

/// WAITING, and its wake time passed.
fn due(now: DateTime<Utc>) -> Condition {
    Condition::all().add(state_is(WorkflowState::Waiting)).add(Column::WakeAt.lte(now))
}

/// No lease, or an expired one.
fn lease_free(now: DateTime<Utc>) -> Condition {
    Condition::any().add(Column::LeaseExpiresAt.is_null()).add(Column::LeaseExpiresAt.lt(now))
}

/// [`runnable`] as three searches, one per way a workflow is runnable
/// (PENDING, PROCESSING, WAITING and due), each with its state as a literal
/// equal to one value: each is one range of an index on the state, which a
/// planner reads with a plain index scan.
///
/// This is for PostgreSQL, where a row's old versions stay in its indexes
/// until a vacuum: every workflow that ran leaves an entry in the index of
/// unfinished workflows, dead once it finished, and a busy table gathers
/// tens of thousands between two autovacuums (hundreds of thousands on a
/// large one: autovacuum waits for a fifth of the table). One search over
/// both indexes (an `OR`) is a bitmap scan, which visits every dead entry
/// again on every claim and every count. A plain index scan marks the dead
/// entries it meets, and the next search skips them: each is visited once.
fn runnable_parts(now: DateTime<Utc>) -> [Condition; 3] {
    use WorkflowState::{Pending, Processing};
    [
        Condition::all().add(state_is(Pending)).add(lease_free(now)),
        Condition::all().add(state_is(Processing)).add(lease_free(now)),
        due(now).add(lease_free(now)),
    ]
}

/// How many workflows are runnable and nobody's: on PostgreSQL the sum of
/// one count per [`runnable_parts`] (one statement), on SQLite one count
/// (it keeps no dead index entries).
async fn count_runnable<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    let now = Utc::now();
    if conn.get_database_backend() != DbBackend::Postgres {
        return Entity::find().filter(runnable(now)).count(conn).await;
    }
    let sum = runnable_parts(now)
        .into_iter()
        .map(|part| {
            let mut count = Query::select();
            count.expr(Expr::col(Column::Id).count()).from(Entity).cond_where(part);
            Expr::SubQuery(None, Box::new(count.into_sub_query_statement()))
        })
        .reduce(|sum, count| sum.add(count))
        .expect("three parts");
    let mut query = Query::select();
    query.expr_as(sum, "runnable");
    let row = conn.query_one(&query).await?.ok_or(DbErr::RecordNotFound("a count".into()))?;
    Ok(u64::try_from(row.try_get::<i64>("", "runnable")?).unwrap_or_default())
}

/// The search of a claim on SQLite: up to `max` runnable workflows (their
/// ids and lease owners), expired leases first, then the oldest never
/// claimed. (PostgreSQL searches [`runnable_parts`] one by one.)
fn pick(now: DateTime<Utc>, max: u64) -> sea_orm::Select<Entity> {
    pick_where(runnable(now), max)
}

/// Up to `max` workflows matching `condition`, in the order of a claim
/// (expired leases first, then the oldest never claimed).
fn pick_where(condition: Condition, max: u64) -> sea_orm::Select<Entity> {
    Entity::find()
        .select_only()
        .column(Column::Id)
        .column(Column::LeaseOwner)
        .filter(condition)
        .order_by_with_nulls(Column::LeaseExpiresAt, Order::Asc, NullOrdering::Last)
        .order_by_asc(Column::Id)
        .limit(max)
}

/// Whether one more workflow may wait unclaimed under `limit`, decided
/// inside the admission transaction. Far from the limit a plain count
/// decides (admissions run in parallel); within [`ADMISSION_MARGIN`] of it,
/// PostgreSQL admissions serialise on an advisory lock and count again, so
/// instances admitting at once cannot both take the last places. (SQLite's
/// write gate already serialises.)
pub(super) async fn admits(txn: &WriteTransaction, limit: u64) -> Result<bool, DbErr> {
    let waiting = count_runnable(txn).await?;
    if txn.get_database_backend() != DbBackend::Postgres || waiting.saturating_add(ADMISSION_MARGIN) < limit {
        return Ok(waiting < limit);
    }
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({BACKLOG_LOCK})")).await?;
    Ok(count_runnable(txn).await? < limit)
}

/// Below `limit - ADMISSION_MARGIN` waiting workflows, admissions do not
/// serialise: the bound is exact as long as fewer admissions than this are
/// between their count and their commit at once, across all instances.
const ADMISSION_MARGIN: u64 = 256;

/// Wakes every instance's claimer when the transaction commits (PostgreSQL;
/// in one process the engine wakes its own claimer). For the rare writes
/// that give leases up (at shutdown, when no task may be left to announce
/// it later; a claim handed back for want of a worker); the hot paths
/// announce after their commit (see `announce`).
pub(super) async fn notify_claimers<C: ConnectionTrait>(conn: &C) -> Result<(), DbErr> {
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_unprepared(&format!("NOTIFY {CHANNEL}")).await?;
    }
    Ok(())
}

impl WorkflowStore {
    /// Claims up to `max` runnable workflows for `owner`: first those whose
    /// owner's lease expired (a dead or stalled instance's work is taken over
    /// as soon as a worker is free), then the oldest never claimed.
    pub async fn claim(&self, owner: &str, max: u64, lease: Duration) -> Result<Vec<Claimed>, DbErr> {
        if max == 0 {
            return Ok(Vec::new());
        }
        match self.backend() {
            DbBackend::Postgres => self.claim_in_one_statement(owner, max, lease).await,
            _ => self.claim_in_a_transaction(owner, max, lease).await,
        }
    }

    /// PostgreSQL: the search (`FOR UPDATE SKIP LOCKED`) and the update in
    /// one statement, committed by itself. A claimer never holds its rows
    /// between round trips, so one that stalls mid-claim (a paused or
    /// frozen process) locks nothing while it is stopped; rows a claim held
    /// across trips would be skipped by every other claimer until it woke.
    ///
    /// The search is one per [`runnable_parts`], each locking up to `max`
    /// rows, and the claim takes the first `max` of them all. The others
    /// (at most twice `max`) stay locked only until the statement commits,
    /// and runnable for the next claim.
    async fn claim_in_one_statement(&self, owner: &str, max: u64, lease: Duration) -> Result<Vec<Claimed>, DbErr> {
        let mut statement = OneStatement::new(DbBackend::Postgres);
        let mut found = Vec::new();
        for (n, part) in runnable_parts(Utc::now()).into_iter().enumerate() {
            let name = format!("found{n}");
            let search = pick_where(part, max)
                .column(Column::LeaseExpiresAt)
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            statement.add(&name, &search.into_query());
            found.push(format!("SELECT id, lease_owner, lease_expires_at FROM {name}"));
        }
        statement.add_sql(
            "picked",
            &format!(
                "SELECT id, lease_owner FROM ({}) AS found ORDER BY lease_expires_at ASC NULLS LAST, id ASC LIMIT {max}",
                found.join(" UNION ALL ")
            ),
            Vec::new(),
        );
        let table = Entity.table_name();
        statement.add_sql(
            "claimed",
            &format!(
                "UPDATE {table} SET lease_owner = $1, lease_expires_at = $2, lease_attempt = {table}.lease_attempt + 1 \
                 FROM picked WHERE {table}.id = picked.id \
                 RETURNING {table}.id, {table}.lease_attempt, picked.lease_owner AS previous_owner"
            ),
            vec![owner.into(), expiry(lease).into()],
        );
        let rows = statement.run(self.connection(), "SELECT id, lease_attempt, previous_owner FROM claimed").await?;
        rows.iter()
            .map(|row| {
                Ok(Claimed {
                    id: row.try_get("", "id")?,
                    fence: Fence { attempt: row.try_get("", "lease_attempt")? },
                    taken_over: row.try_get::<Option<String>>("", "previous_owner")?.is_some(),
                })
            })
            .collect()
    }

    /// SQLite (one process, its writes serialised by the write gate): the
    /// search, then the update, in one transaction.
    async fn claim_in_a_transaction(&self, owner: &str, max: u64, lease: Duration) -> Result<Vec<Claimed>, DbErr> {
        let txn = begin_write(self.connection()).await?;
        let picked: Vec<(String, Option<String>)> = pick(Utc::now(), max).into_tuple().all(&txn).await?;
        if picked.is_empty() {
            txn.rollback().await?;
            return Ok(Vec::new());
        }
        let mut update = Entity::update_many()
            .col_expr(Column::LeaseOwner, Expr::value(owner))
            .col_expr(Column::LeaseExpiresAt, Expr::value(expiry(lease)))
            .col_expr(Column::LeaseAttempt, Expr::col(Column::LeaseAttempt).add(1))
            .filter(Column::Id.is_in(picked.iter().map(|(id, _)| id.as_str())))
            .into_query();
        update.returning(sea_orm::sea_query::Query::returning().columns([Column::Id, Column::LeaseAttempt]));
        let rows = txn.query_all(&update).await?;
        txn.commit().await?;
        let previous: std::collections::HashMap<String, Option<String>> = picked.into_iter().collect();
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("", "id")?;
                Ok(Claimed {
                    taken_over: previous.get(&id).is_some_and(|owner| owner.is_some()),
                    fence: Fence { attempt: row.try_get("", "lease_attempt")? },
                    id,
                })
            })
            .collect()
    }

    /// Extends `owner`'s leases on `ids` that are still its own and
    /// unfinished; returns the ids renewed.
    pub async fn renew(&self, owner: &str, ids: &[String], lease: Duration) -> Result<HashSet<String>, DbErr> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let mine = Condition::all()
            .add(Column::LeaseOwner.eq(owner))
            .add(Column::CurrentState.is_in(unfinished()))
            .add(Column::Id.is_in(ids.iter().map(String::as_str)));
        // One statement: an owner that stalls while renewing holds no lock
        // on its workflows, which the others take over once the leases run out.
        let mut statement = OneStatement::new(self.backend());
        let mut renew = Entity::update_many()
            .col_expr(Column::LeaseExpiresAt, Expr::value(expiry(lease)))
            .filter(mine)
            .into_query();
        statement.add("renewed", renew.returning_col(Column::Id));
        let rows = statement.run(self.connection(), "SELECT id FROM renewed").await?;
        rows.iter().map(|row| row.try_get("", "id")).collect()
    }

    /// Gives up every unfinished workflow `owner` holds, so other instances
    /// take them at once (graceful shutdown); returns how many.
    pub async fn release(&self, owner: &str) -> Result<u64, DbErr> {
        self.give_up(owner, Condition::all()).await
    }

    /// Gives back workflows `owner` has just claimed and has no worker for
    /// (a start took the worker between the claim's look and its answer), so
    /// that any instance with a free worker takes them at once, rather than
    /// this one holding them unstarted and unrenewed. Only those still under
    /// that claim's fencing token; returns how many.
    pub async fn hand_back(&self, owner: &str, claimed: &[Claimed]) -> Result<u64, DbErr> {
        let under_this_claim = claimed.iter().fold(Condition::any(), |any, workflow| {
            any.add(Column::Id.eq(workflow.id.as_str()).and(Column::LeaseAttempt.eq(workflow.fence.attempt)))
        });
        self.give_up(owner, under_this_claim).await
    }

    /// Clears the leases of `owner`'s unfinished workflows that match
    /// `which`, and wakes every instance's claimer once it commits.
    async fn give_up(&self, owner: &str, which: Condition) -> Result<u64, DbErr> {
        let txn = begin_write(self.connection()).await?;
        let given_up = Entity::update_many()
            .col_expr(Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(Column::LeaseOwner.eq(owner))
            .filter(Column::CurrentState.is_in(unfinished()))
            .filter(which)
            .exec(&txn)
            .await?
            .rows_affected;
        if given_up > 0 {
            notify_claimers(&txn).await?;
        }
        txn.commit().await?;
        Ok(given_up)
    }

    /// The state of `id` and the fencing token of its latest claim.
    pub async fn lease_of(&self, id: &str) -> Result<Option<(WorkflowState, Fence)>, DbErr> {
        let row: Option<(String, i64)> = Entity::find_by_id(id)
            .select_only()
            .column(Column::CurrentState)
            .column(Column::LeaseAttempt)
            .into_tuple()
            .one(self.connection())
            .await?;
        row.map(|(state, attempt)| Ok((state.parse().map_err(DbErr::Type)?, Fence { attempt }))).transpose()
    }

    /// How many runnable workflows wait unclaimed, across instances.
    pub async fn backlog(&self) -> Result<u64, DbErr> {
        count_runnable(self.connection()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::migrated_sqlite;
    use sea_orm::{QueryTrait, Statement};

    #[tokio::test]
    async fn sqlite_searches_runnable_workflows_through_the_partial_indexes() {
        let (_dir, db) = migrated_sqlite().await;
        let query = pick(Utc::now(), 8).build(DbBackend::Sqlite);
        let sql = format!("EXPLAIN QUERY PLAN {}", query.sql);
        let values = query.values.map(|v| v.0).unwrap_or_default();
        let rows = db.query_all_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)).await.unwrap();
        let plan: Vec<String> = rows.iter().map(|row| row.try_get::<String>("", "detail").unwrap()).collect();
        // Running workflows through the partial index, waiting ones through
        // an index on their state; the table itself is never scanned.
        assert!(plan.iter().any(|d| d.contains("ix_workflow_executions_unfinished")), "{plan:?}");
        assert!(!plan.iter().any(|d| d.starts_with("SCAN workflow_executions")), "{plan:?}");
    }

    #[tokio::test]
    async fn a_hand_back_clears_only_leases_still_under_the_claim_it_names() {
        use crate::domain::workflow::{Workflow, WorkflowInput};
        use crate::store::{Admission, tests::migrated_store};

        let (_dir, store) = migrated_store().await;
        for _ in 0..3 {
            let workflow = Workflow::pending("ns".into(), WorkflowInput::default(), "input-hash".into());
            store.insert(&workflow, &Admission::Queued { limit: 10 }).await.unwrap();
        }
        let lease = Duration::from_secs(60);
        let claimed = store.claim("a", 3, lease).await.unwrap();
        assert_eq!(claimed.len(), 3);
        assert!(claimed.iter().all(|c| c.fence.attempt == 1 && !c.taken_over), "{claimed:?}");
        let (kept, named) = (&claimed[0], &claimed[1..]);
        let mut stale = named[1].clone();
        stale.fence.attempt += 1;

        // Another owner gives back nothing; a stale fencing token, nothing.
        assert_eq!(store.hand_back("b", named).await.unwrap(), 0);
        assert_eq!(store.hand_back("a", std::slice::from_ref(&stale)).await.unwrap(), 0);
        assert_eq!(store.hand_back("a", named).await.unwrap(), 2);
        assert_eq!(store.backlog().await.unwrap(), 2, "runnable again, by anyone");
        assert_eq!(store.renew("a", std::slice::from_ref(&kept.id), lease).await.unwrap().len(), 1, "kept");

        // Claimed again, under new fencing tokens and as no takeover.
        let again = store.claim("b", 3, lease).await.unwrap();
        let mut ids: Vec<&str> = again.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        let mut expected: Vec<&str> = named.iter().map(|c| c.id.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(ids, expected);
        assert!(again.iter().all(|c| c.fence.attempt == 2 && !c.taken_over), "{again:?}");
    }
}
