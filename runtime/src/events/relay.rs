//! `OutboxRelay`: publishes committed outbox rows in `id` order and marks
//! them published only once the sink confirmed delivery. Nothing is lost
//! while the sink is away (rows wait), nothing of a rolled-back transaction
//! exists to publish, and a refused event is retried with backoff a bounded
//! number of times, then set aside with its error (`outbox_events_dead_total`).
//!
//! With PostgreSQL several processes may share one outbox: only the holder of
//! a session advisory lock relays, so rows go out once and in order.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{
    ColumnTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
    sea_query::{Expr, ExprTrait},
    sqlx::{self, Postgres, pool::PoolConnection},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use sea_query_sqlx::SqlxValues;

use super::{
    outbox::entity::{Column, Entity, Model},
    sink::{EventSink, OutgoingEvent},
};
use crate::{
    db::{begin_write, synchronous_commit},
    health::HealthRegistry,
};

/// Advisory lock key of the relay leader ("omninode" in ASCII).
const LEADER_LOCK_KEY: i64 = 0x6f6d_6e69_6e6f_6465;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the relay waits for another commit to flush the WAL holding the
/// rows it read before it flushes that WAL itself.
const FLUSH_PATIENCE: Duration = Duration::from_millis(20);
/// The least time from the start of one round to the start of the next
/// when commits wake the relay: bounds the rounds to 500 a second, and
/// delays an event by at most this much beyond its round.
const ROUND_GAP: Duration = Duration::from_millis(2);
/// PostgreSQL: the WAL's insert position, as a number of bytes.
const WAL_INSERT_POSITION: &str = "(pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint";
/// PostgreSQL: how far the WAL is flushed, as a number of bytes.
const WAL_FLUSH_POSITION: &str = "(pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint";

/// The WAL's insert and flush positions, read with a batch of rows.
#[derive(Debug, Clone, Copy)]
struct WalPositions {
    target: i64,
    flushed: i64,
}

/// Publishes the outbox of one database.
pub struct OutboxRelay {
    db: DatabaseConnection,
    sink: Arc<dyn EventSink>,
    wake: Arc<Notify>,
    batch_size: u64,
    poll_interval: Duration,
    max_attempts: i32,
    retention: Duration,
    prune_interval: Duration,
    mark_delay: Duration,
    /// Delivered events not yet marked (not counted as pending).
    unmarked: AtomicU64,
}

/// Delivered events whose "published" mark is not written yet: marked
/// together by one write once the oldest has waited the mark delay, or once
/// a batch of them is waiting, instead of one write per round. Until then
/// the relay leaves them out of its reads; lost in a crash, they are
/// delivered again (at least once; consumers drop repeated event ids).
#[derive(Debug, Default)]
struct Unmarked {
    ids: HashSet<i64>,
    /// When the oldest of `ids` was delivered.
    since: Option<Instant>,
    /// The highest id delivered since the last mark, when every unpublished
    /// row at or below it that the relay's reads saw was delivered (is in
    /// `ids`): the next round reads only the rows above it, rather than
    /// reading every delivered row again to skip it (at 64 callers, ten
    /// times the new rows per round). A row committed later below it (on
    /// PostgreSQL, ids are taken before commits land, out of order) is read
    /// once the mark clears this, at most a mark delay later.
    through: Option<i64>,
}

impl Unmarked {
    /// When they must be marked, if any wait.
    fn deadline(&self, delay: Duration) -> Option<Instant> {
        self.since.map(|since| since + delay)
    }

    fn due(&self, delay: Duration, batch_size: u64) -> bool {
        self.ids.len() as u64 >= batch_size || self.deadline(delay).is_some_and(|at| at <= Instant::now())
    }
}

impl OutboxRelay {
    /// A relay of `db`'s outbox to `sink`, woken by `wake`, paced by `events`.
    pub fn new(
        db: DatabaseConnection,
        sink: Arc<dyn EventSink>,
        wake: Arc<Notify>,
        events: &super::EventsConfig,
    ) -> Self {
        let (batch_size, poll_interval, max_attempts) = (events.batch_size, events.poll_interval, events.max_attempts);
        let (retention, prune_interval, mark_delay) = (events.retention, events.prune_interval, events.mark_delay);
        Self {
            db,
            sink,
            wake,
            batch_size,
            poll_interval,
            max_attempts,
            retention,
            prune_interval,
            mark_delay,
            unmarked: AtomicU64::new(0),
        }
    }

    /// Relays until `stop`; probes the sink every `probe_interval` into `health`
    /// (a sink that cannot deliver makes the process degraded, not unhealthy).
    pub fn spawn(
        self,
        health: HealthRegistry,
        probe_interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let relay = Arc::new(self);
        let prober = relay.clone();
        let probe_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let result = prober.sink.probe().await;
                health.set_component(prober.sink.name(), false, result).await;
                if let Ok(pending) = prober.pending().await {
                    let pending = pending.saturating_sub(prober.unmarked.load(Ordering::Relaxed));
                    metrics::gauge!("outbox_pending_events").set(pending as f64);
                }
                tokio::select! {
                    _ = probe_stop.cancelled() => return,
                    _ = tokio::time::sleep(probe_interval) => {}
                }
            }
        });
        let pruner = relay.clone();
        let prune_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = prune_stop.cancelled() => return,
                    _ = tokio::time::sleep(pruner.prune_interval) => {}
                }
                match pruner.prune().await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::debug!(pruned, "published outbox events pruned"),
                    Err(err) => tracing::warn!(%err, "cannot prune published outbox events"),
                }
            }
        });
        tokio::spawn(async move { relay.run(stop).await })
    }

    async fn run(&self, stop: CancellationToken) {
        let mut leader: Option<PoolConnection<Postgres>> = None;
        let mut unmarked = Unmarked::default();
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let round = async {
                if unmarked.due(self.mark_delay, self.batch_size) {
                    self.mark(&mut unmarked).await?;
                }
                if self.db.get_database_backend() == DbBackend::Postgres && !self.lead(&mut leader).await {
                    return Ok(0);
                }
                self.publish_batch(&mut unmarked, &mut leader).await
            };
            let pause = match round.await {
                Ok(n) if n as u64 >= self.batch_size => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    None
                }
                Err(problem) => {
                    failures += 1;
                    metrics::counter!("outbox_publish_errors_total").increment(1);
                    tracing::warn!(%problem, failures, "outbox relay round failed");
                    Some(backoff(failures))
                }
            };
            let mark_at = unmarked.deadline(self.mark_delay).filter(|_| pause.is_none());
            tokio::select! {
                _ = stop.cancelled() => {
                    if let Err(problem) = self.mark(&mut unmarked).await {
                        tracing::warn!(%problem, "delivered events left unmarked at shutdown; they will be delivered again");
                    }
                    self.sink.close().await;
                    return;
                }
                _ = self.wake.notified(), if pause.is_none() => {
                    // Commits come in bursts (a workflow's three, a group's):
                    // the rounds start at most once per gap, each taking
                    // what committed meanwhile, instead of one per commit.
                    tokio::time::sleep_until((started + ROUND_GAP).into()).await;
                }
                _ = tokio::time::sleep(pause.unwrap_or(self.poll_interval)) => {}
                _ = tokio::time::sleep_until(mark_at.unwrap_or_else(Instant::now).into()), if mark_at.is_some() => {}
            }
        }
    }

    /// Marks the delivered events published (they stay waiting if it fails).
    async fn mark(&self, unmarked: &mut Unmarked) -> Result<(), String> {
        if unmarked.ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = unmarked.ids.iter().copied().collect();
        self.mark_published(&ids).await.map_err(|e| format!("cannot mark events published: {e}"))?;
        self.unmarked.store(0, Ordering::Relaxed);
        *unmarked = Unmarked::default();
        Ok(())
    }

    /// Whether this process leads (PostgreSQL): holds the advisory lock on a
    /// connection of its own, released by PostgreSQL if the process dies.
    /// A leader's connection is not pinged here: each round reads the
    /// outbox on it ([`Self::read_batch`]), and a read that fails gives the
    /// lead up (the next round tries to take it again).
    async fn lead(&self, leader: &mut Option<PoolConnection<Postgres>>) -> bool {
        if leader.is_some() {
            return true;
        }
        let pool = self.db.get_postgres_connection_pool();
        let Ok(mut conn) = pool.acquire().await else { return false };
        let acquired: Result<bool, _> =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK_KEY).fetch_one(&mut *conn).await;
        if matches!(acquired, Ok(true)) {
            tracing::info!("this process now relays the outbox");
            // Keep the connection (and so the lock) out of the pool.
            *leader = Some(conn);
            true
        } else {
            false
        }
    }

    /// The oldest `limit` unpublished rows with ids above `after`. On PostgreSQL they are read on
    /// the leader's connection, in one statement with the WAL's insert and
    /// flush positions (see [`Self::await_flush`]): one round trip that
    /// also shows the lock's session is alive. A read that fails there
    /// closes that connection (so the lock goes with it, not back into the
    /// pool) and gives up the lead.
    async fn read_batch(
        &self,
        limit: u64,
        after: i64,
        leader: &mut Option<PoolConnection<Postgres>>,
    ) -> Result<(Vec<Model>, Option<WalPositions>), DbErr> {
        let select = Entity::find()
            .filter(Column::PublishedAt.is_null())
            .filter(Column::Attempts.lt(self.max_attempts))
            .filter(Column::Id.gt(after))
            .order_by_asc(Column::Id)
            .limit(limit);
        let Some(conn) = leader.as_mut() else {
            // Only SQLite reads without a leader: PostgreSQL's rows need the
            // WAL positions read with them.
            debug_assert_ne!(self.db.get_database_backend(), DbBackend::Postgres, "read on the leader's connection");
            return Ok((select.all(&self.db).await?, None));
        };
        let statement = select
            .expr_as(Expr::cust(WAL_INSERT_POSITION), "wal_target")
            .expr_as(Expr::cust(WAL_FLUSH_POSITION), "wal_flushed")
            .build(DbBackend::Postgres);
        let values = statement.values.map(|v| v.0).unwrap_or_default();
        let query = sqlx::query_with(sqlx::AssertSqlSafe(statement.sql), SqlxValues(sea_orm::Values(values)));
        let rows = match query.fetch_all(&mut **conn).await {
            Ok(rows) => rows,
            Err(err) => {
                if let Some(mut lost) = leader.take() {
                    lost.close_on_drop();
                }
                tracing::warn!(%err, "the outbox read on the relay's connection failed; giving up the lead");
                return Err(DbErr::Query(sea_orm::RuntimeErr::SqlxError(Arc::new(err))));
            }
        };
        let rows: Vec<sea_orm::QueryResult> = rows.into_iter().map(sea_orm::QueryResult::from).collect();
        // Every row carries the positions; any reading is past the snapshot.
        let positions = match rows.last() {
            Some(row) => {
                Some(WalPositions { target: row.try_get("", "wal_target")?, flushed: row.try_get("", "wal_flushed")? })
            }
            None => None,
        };
        let models = rows.iter().map(|row| Model::from_query_result(row, "")).collect::<Result<_, _>>()?;
        Ok((models, positions))
    }

    /// Publishes the oldest unpublished rows (but those delivered and not yet
    /// marked); returns how many were delivered.
    async fn publish_batch(
        &self,
        unmarked: &mut Unmarked,
        leader: &mut Option<PoolConnection<Postgres>>,
    ) -> Result<usize, String> {
        // Rows above the delivered ones when all below were delivered;
        // otherwise the oldest, the unmarked ones skipped here rather than in
        // the query: one statement text, whatever their number (a prepared
        // statement each would fill the statement caches).
        let (after, skipped) = match unmarked.through {
            Some(through) => (through, 0),
            None => (0, unmarked.ids.len() as u64),
        };
        let (mut rows, positions) = self
            .read_batch(self.batch_size + skipped, after, leader)
            .await
            .map_err(|e| format!("cannot read the outbox: {e}"))?;
        rows.retain(|row| !unmarked.ids.contains(&row.id));
        rows.truncate(self.batch_size as usize);
        if rows.is_empty() {
            return Ok(0);
        }
        if let Some(positions) = positions {
            self.await_flush(positions).await.map_err(|e| format!("cannot read the WAL position: {e}"))?;
        }
        // Each traced event is published in a span of its cause's trace; its
        // record carries that span's traceparent, so consumers link to it.
        let spans: Vec<tracing::Span> = rows.iter().map(|row| publish_span(row, self.sink.name())).collect();
        let events: Vec<OutgoingEvent> = rows
            .iter()
            .zip(&spans)
            .map(|(row, span)| OutgoingEvent {
                event_id: row.event_id.clone(),
                topic: row.topic.clone(),
                key: row.partition_key.clone(),
                event_type: row.event_type.clone(),
                correlation_id: row.correlation_id.clone(),
                payload: row.payload.clone(),
                traceparent: row.trace_context.as_ref().and_then(|_| {
                    crate::trace::headers_of(span).into_iter().find(|(n, _)| *n == "traceparent").map(|(_, v)| v)
                }),
                headers: row.headers.as_deref().map(parse_headers).unwrap_or_default(),
            })
            .collect();
        let (delivered, refused) = self.sink.publish(&events).await;
        for (span, ok) in spans.iter().zip(&delivered) {
            if !ok {
                span.record("otel.status_code", "ERROR");
            }
        }
        drop(spans);
        let ids: Vec<i64> = rows.iter().zip(&delivered).filter(|(_, ok)| **ok).map(|(row, _)| row.id).collect();
        // The rows are in id order: all of them delivered, every unpublished
        // row read up to the last one is now delivered.
        unmarked.through = if delivered.iter().all(|ok| *ok) { rows.last().map(|row| row.id) } else { None };
        if !ids.is_empty() {
            metrics::counter!("outbox_events_published_total", "sink" => self.sink.name()).increment(ids.len() as u64);
            unmarked.since.get_or_insert_with(Instant::now);
            unmarked.ids.extend(&ids);
            self.unmarked.store(unmarked.ids.len() as u64, Ordering::Relaxed);
            if self.mark_delay.is_zero() {
                self.mark(unmarked).await?;
            }
        }
        let Some(problem) = refused else { return Ok(ids.len()) };
        // Charge the attempt to the first event that did not go out.
        let Some(failed) = rows.iter().zip(&delivered).find(|(_, ok)| !**ok).map(|(row, _)| row) else {
            return Err(problem);
        };
        let charge = async {
            let txn = begin_write(&self.db).await?;
            Entity::update_many()
                .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
                .col_expr(Column::LastError, Expr::value(problem.clone()))
                .filter(Column::Id.eq(failed.id))
                .exec(&txn)
                .await?;
            txn.commit().await
        };
        charge.await.map_err(|e: DbErr| format!("cannot record a failed attempt: {e}"))?;
        if failed.attempts + 1 >= self.max_attempts {
            metrics::counter!("outbox_events_dead_total").increment(1);
            tracing::error!(event_id = %failed.event_id, %problem, "event set aside after OUTBOX_MAX_ATTEMPTS attempts");
        }
        Err(problem)
    }

    /// PostgreSQL: returns once the WAL holding the rows read is flushed,
    /// given the positions read with them. A write committed without
    /// waiting for its flush ([`crate::db::OneStatement::commit_without_flush`])
    /// is visible before it is durable, and a crash of the database would
    /// undo it after its events had left. The rows read were committed
    /// before the read's snapshot, so their commit records lie before the
    /// WAL's insert position read in the same statement; once the flush
    /// passes it, they are durable. Another commit usually flushes it
    /// within a millisecond (the write's caller waits for a durable commit
    /// of its own); failing that, the relay commits one.
    async fn await_flush(&self, positions: WalPositions) -> Result<(), DbErr> {
        let WalPositions { target, mut flushed } = positions;
        let deadline = Instant::now() + FLUSH_PATIENCE;
        while flushed < target {
            if Instant::now() >= deadline {
                metrics::counter!("outbox_relay_flushes_total").increment(1);
                // A transactional message writes WAL, so its commit waits for the flush.
                let flush = format!(
                    "SELECT pg_logical_emit_message(true, 'omninode.relay', '') FROM {} AS durable",
                    synchronous_commit(true)
                );
                sea_orm::ConnectionTrait::execute_unprepared(&self.db, &flush).await?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            let row = sea_orm::ConnectionTrait::query_one_raw(
                &self.db,
                sea_orm::Statement::from_string(DbBackend::Postgres, format!("SELECT {WAL_FLUSH_POSITION} AS flushed")),
            )
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("the WAL position".into()))?;
            flushed = row.try_get("", "flushed")?;
        }
        Ok(())
    }

    /// Deletes events published more than the retention ago, a bounded slice
    /// at a time (so no statement holds the table long); returns how many.
    /// The table then holds the unpublished events and an hour's history, however long the process runs.
    async fn prune(&self) -> Result<u64, DbErr> {
        const SLICE: u64 = 10_000;
        let before = chrono::Utc::now() - chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let mut pruned = 0;
        loop {
            let ids: Vec<i64> = Entity::find()
                .select_only()
                .column(Column::Id)
                .filter(Column::PublishedAt.is_not_null())
                .filter(Column::PublishedAt.lt(before))
                .order_by_asc(Column::Id)
                .limit(SLICE)
                .into_tuple()
                .all(&self.db)
                .await?;
            if ids.is_empty() {
                break;
            }
            let deleted = Entity::delete_many().filter(Column::Id.is_in(ids.iter().copied())).exec(&self.db).await?;
            pruned += deleted.rows_affected;
            metrics::counter!("outbox_pruned_total").increment(deleted.rows_affected);
            if (ids.len() as u64) < SLICE {
                break;
            }
        }
        Ok(pruned)
    }

    async fn mark_published(&self, ids: &[i64]) -> Result<(), DbErr> {
        if crate::trace::enabled() {
            use tracing::Instrument;
            let span = crate::trace::db_span("UPDATE", "event_outbox", self.db.get_database_backend());
            return self.mark_published_inner(ids).instrument(span).await;
        }
        self.mark_published_inner(ids).await
    }

    async fn mark_published_inner(&self, ids: &[i64]) -> Result<(), DbErr> {
        let now = chrono::Utc::now();
        // PostgreSQL: one round trip, and a commit that does not wait for
        // its WAL flush — the mark is acknowledged to no one: lost in a
        // crash, the events are published again (at least once; consumers
        // drop repeated event ids), and it no longer queues behind or delays
        // the durable commits of requests. The values are an instant and
        // integers, written into the text: a statement without parameters goes as
        // a simple query, one round trip.
        if self.db.get_database_backend() == DbBackend::Postgres {
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            let sql = format!(
                "UPDATE event_outbox SET published_at = '{}' FROM {} AS relaxed WHERE id IN ({})",
                now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                synchronous_commit(false),
                ids.join(", ")
            );
            sea_orm::ConnectionTrait::execute_unprepared(&self.db, &sql).await?;
            return Ok(());
        }
        let update = Entity::update_many()
            .col_expr(Column::PublishedAt, Expr::value(now))
            .filter(Column::Id.is_in(ids.iter().copied()));
        let txn = begin_write(&self.db).await?;
        update.exec(&txn).await?;
        txn.commit().await
    }

    async fn pending(&self) -> Result<u64, DbErr> {
        Entity::find().filter(Column::PublishedAt.is_null()).count(&self.db).await
    }
}

fn backoff(failures: u32) -> Duration {
    let exp = Duration::from_millis(100).saturating_mul(1 << Ord::min(failures, 10));
    exp.min(MAX_BACKOFF).mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// The producer span of one event's publication (messaging conventions), a
/// child of the trace that caused it; none for an untraced event.
fn publish_span(row: &super::outbox::entity::Model, sink: &'static str) -> tracing::Span {
    let Some(stored) = row.trace_context.as_deref().filter(|_| crate::trace::enabled()) else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        target: crate::trace::TARGET,
        "publish",
        otel.name = format!("publish {}", row.topic),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = if sink == "kafka" { "kafka" } else { "omninode_bus" },
        messaging.operation.type = "send",
        messaging.destination.name = row.topic.as_str(),
        messaging.message.id = row.event_id.as_str(),
        messaging.kafka.message.key = row.partition_key.as_str(),
    );
    crate::trace::continue_from_stored(&span, Some(stored));
    span
}

/// The headers of an outbox row (a JSON object of strings; anything else is none).
fn parse_headers(text: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
        Ok(map) => map.into_iter().filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned()))).collect(),
        Err(err) => {
            tracing::warn!(%err, "outbox headers are not a JSON object; sent without them");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use omninode_migrations::{Migrator, MigratorTrait};
    use sea_orm::{ActiveValue::Set, EntityTrait};

    use super::*;
    use crate::config::DatabaseTarget;

    /// A sink that never delivers.
    struct Refusing;

    #[async_trait::async_trait]
    impl EventSink for Refusing {
        async fn publish(&self, events: &[OutgoingEvent]) -> (Vec<bool>, Option<String>) {
            (vec![false; events.len()], Some("refused".into()))
        }
        async fn probe(&self) -> Result<(), String> {
            Err("down".into())
        }
        fn name(&self) -> &'static str {
            "refusing"
        }
    }

    /// A sink that delivers everything and counts each event id.
    #[derive(Default)]
    struct Counting(std::sync::Mutex<std::collections::HashMap<String, usize>>);

    #[async_trait::async_trait]
    impl EventSink for Counting {
        async fn publish(&self, events: &[OutgoingEvent]) -> (Vec<bool>, Option<String>) {
            let mut seen = self.0.lock().unwrap();
            for event in events {
                *seen.entry(event.event_id.clone()).or_default() += 1;
            }
            (vec![true; events.len()], None)
        }
        async fn probe(&self) -> Result<(), String> {
            Ok(())
        }
        fn name(&self) -> &'static str {
            "counting"
        }
    }

    impl Counting {
        fn deliveries(&self) -> Vec<usize> {
            let seen = self.0.lock().unwrap();
            let mut counts: Vec<usize> = seen.values().copied().collect();
            counts.sort_unstable();
            counts
        }

        /// How many times `event_id` was delivered.
        fn count(&self, event_id: &str) -> usize {
            self.0.lock().unwrap().get(event_id).copied().unwrap_or(0)
        }
    }

    async fn outbox_db(dir: &tempfile::TempDir) -> DatabaseConnection {
        let db = crate::db::connect(&DatabaseTarget::Sqlite(dir.path().join("outbox.db")), 2).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        db
    }

    /// An outbox row of `event_id`, created at `created_at`, published at `published_at`.
    fn outbox_row(
        event_id: &str,
        created_at: chrono::DateTime<chrono::Utc>,
        published_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> super::super::outbox::entity::ActiveModel {
        super::super::outbox::entity::ActiveModel {
            id: sea_orm::ActiveValue::NotSet,
            event_id: Set(event_id.into()),
            topic: Set("t".into()),
            partition_key: Set("k".into()),
            event_type: Set("StampCreated".into()),
            correlation_id: Set(None),
            payload: Set(vec![1]),
            created_at: Set(created_at),
            published_at: Set(published_at),
            attempts: Set(0),
            last_error: Set(None),
            trace_context: Set(None),
            headers: Set(None),
        }
    }

    async fn add_event(db: &DatabaseConnection, event_id: &str) {
        let row = outbox_row(event_id, chrono::Utc::now(), None);
        Entity::insert(row).exec_without_returning(db).await.unwrap();
    }

    async fn add_with_id(db: &DatabaseConnection, id: i64, event_id: &str) {
        let mut row = outbox_row(event_id, chrono::Utc::now(), None);
        row.id = Set(id);
        Entity::insert(row).exec_without_returning(db).await.unwrap();
    }

    /// A relay marking after `mark_delay_ms` that has delivered rows 10 and
    /// 11 (not yet marked): its sink, wake, stop token and task.
    async fn relay_past_ten_and_eleven(
        db: &DatabaseConnection,
        mark_delay_ms: &str,
    ) -> (Arc<Counting>, Arc<Notify>, CancellationToken, tokio::task::JoinHandle<()>) {
        add_with_id(db, 10, "e10").await;
        add_with_id(db, 11, "e11").await;
        let (sink, wake) = (Arc::new(Counting::default()), Arc::new(Notify::new()));
        let (stop, relay) = start(db, sink.clone(), wake.clone(), mark_delay_ms);
        eventually("the first two events delivered", async || sink.deliveries().len() == 2).await;
        (sink, wake, stop, relay)
    }

    async fn unmarked(db: &DatabaseConnection) -> u64 {
        Entity::find().filter(Column::PublishedAt.is_null()).count(db).await.unwrap()
    }

    async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
        for _ in 0..500 {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen within 5 s");
    }

    fn start(
        db: &DatabaseConnection,
        sink: Arc<Counting>,
        wake: Arc<Notify>,
        mark_delay_ms: &str,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let env = crate::Env::from_pairs([("OUTBOX_MARK_DELAY_MS", mark_delay_ms)]);
        let events = crate::events::EventsConfig::from_env(&env, "test").unwrap();
        let relay = OutboxRelay::new(db.clone(), sink, wake, &events);
        let health = HealthRegistry::new("test", tonic_health::server::health_reporter().0);
        let stop = CancellationToken::new();
        (stop.clone(), relay.spawn(health, Duration::from_secs(60), stop))
    }

    #[tokio::test]
    async fn delivered_events_are_marked_together_once_and_not_delivered_again_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let db = outbox_db(&dir).await;
        add_event(&db, "e1").await;
        add_event(&db, "e2").await;
        let (sink, wake) = (Arc::new(Counting::default()), Arc::new(Notify::new()));
        // The longest mark delay (10 s), longer than the test takes: only
        // shutdown marks.
        let (stop, relay) = start(&db, sink.clone(), wake.clone(), "10000");
        eventually("both events delivered", async || sink.deliveries().len() == 2).await;

        // Rounds that find the delivered events unmarked leave them alone.
        for _ in 0..5 {
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(unmarked(&db).await, 2, "their mark waits for the delay");
        add_event(&db, "e3").await;
        wake.notify_one();
        eventually("the third event delivered", async || sink.deliveries().len() == 3).await;
        assert_eq!(sink.deliveries(), [1, 1, 1], "each event delivered once");

        stop.cancel();
        relay.await.unwrap();
        assert_eq!(unmarked(&db).await, 0, "marked at shutdown");
    }

    #[tokio::test]
    async fn an_event_committed_below_the_delivered_ones_is_delivered_once_after_their_mark() {
        let dir = tempfile::tempdir().unwrap();
        let db = outbox_db(&dir).await;
        let (sink, wake, stop, relay) = relay_past_ten_and_eleven(&db, "300").await;

        // A row whose id lies below those delivered and not yet marked (on
        // PostgreSQL: a transaction that took its id first and committed
        // last), and one above them.
        add_with_id(&db, 5, "late").await;
        add_with_id(&db, 12, "e12").await;
        wake.notify_one();
        eventually("all four events delivered", async || sink.deliveries().len() == 4).await;
        eventually("all four marked", async || unmarked(&db).await == 0).await;
        assert_eq!(sink.deliveries(), [1, 1, 1, 1], "each event delivered once");
        stop.cancel();
        relay.await.unwrap();
    }

    #[tokio::test]
    async fn rounds_that_read_nothing_keep_the_floor_until_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let db = outbox_db(&dir).await;
        let (sink, wake, stop, relay) = relay_past_ten_and_eleven(&db, "3000").await;
        // Rounds that find nothing above the delivered rows.
        for _ in 0..5 {
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Still above the floor: a row below it is read only after the mark.
        add_with_id(&db, 5, "late").await;
        add_with_id(&db, 12, "e12").await;
        wake.notify_one();
        eventually("the row above the delivered ones delivered", async || sink.count("e12") == 1).await;
        assert_eq!(sink.count("late"), 0, "a round after empty ones reads above the floor, not from the oldest row");
        assert_eq!(unmarked(&db).await, 4, "the delivered rows wait for their mark");
        eventually("the row below delivered after the mark", async || sink.count("late") == 1).await;
        eventually("all four marked", async || unmarked(&db).await == 0).await;
        assert_eq!(sink.deliveries(), [1, 1, 1, 1], "each event delivered once");
        stop.cancel();
        relay.await.unwrap();
    }

    #[tokio::test]
    async fn delivered_events_are_marked_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let db = outbox_db(&dir).await;
        add_event(&db, "e1").await;
        let (sink, wake) = (Arc::new(Counting::default()), Arc::new(Notify::new()));
        let (stop, relay) = start(&db, sink.clone(), wake.clone(), "50");
        eventually("the event delivered", async || sink.deliveries().len() == 1).await;
        eventually("the event marked", async || unmarked(&db).await == 0).await;
        add_event(&db, "e2").await;
        wake.notify_one();
        eventually("the second event marked", async || unmarked(&db).await == 0).await;
        assert_eq!(sink.deliveries(), [1, 1]);
        stop.cancel();
        relay.await.unwrap();
    }

    #[tokio::test]
    async fn pruning_deletes_only_events_published_before_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let db = outbox_db(&dir).await;
        let long_ago = chrono::Utc::now() - chrono::Duration::hours(2);
        let row = |event_id: &str, published_at| outbox_row(event_id, long_ago, published_at);
        let rows = [
            row("old-published", Some(long_ago)),
            row("recent-published", Some(chrono::Utc::now())),
            row("old-unpublished", None),
        ];
        Entity::insert_many(rows).exec_without_returning(&db).await.unwrap();
        let mut events = crate::events::EventsConfig::from_env(&crate::Env::default(), "test").unwrap();
        events.retention = Duration::from_secs(3600);
        let relay = OutboxRelay::new(db.clone(), Arc::new(Refusing), Arc::new(Notify::new()), &events);
        assert_eq!(relay.prune().await.unwrap(), 1);
        let mut left: Vec<String> = Entity::find().all(&db).await.unwrap().into_iter().map(|r| r.event_id).collect();
        left.sort();
        assert_eq!(left, ["old-unpublished", "recent-published"], "an unpublished event is kept however old");
        assert_eq!(relay.prune().await.unwrap(), 0, "nothing more to prune");
    }
}
