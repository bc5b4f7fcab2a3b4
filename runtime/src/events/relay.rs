//! `OutboxRelay`: publishes committed outbox rows in `id` order and marks
//! them published only once the sink confirmed delivery. Nothing is lost
//! while the sink is away (rows wait), nothing of a rolled-back transaction
//! exists to publish, and a refused event is retried with backoff a bounded
//! number of times, then set aside with its error (`outbox_events_dead_total`).
//!
//! With PostgreSQL several processes may share one outbox: only the holder of
//! a session advisory lock relays, so rows go out once and in order.

use std::{sync::Arc, time::Duration};

use sea_orm::{
    ColumnTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait},
    sqlx::{self, Postgres, pool::PoolConnection},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    outbox::entity::{Column, Entity},
    sink::{EventSink, OutgoingEvent},
};
use crate::{db::begin_write, health::HealthRegistry};

/// Advisory lock key of the relay leader ("omninode" in ASCII).
const LEADER_LOCK_KEY: i64 = 0x6f6d_6e69_6e6f_6465;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Publishes the outbox of one database.
pub struct OutboxRelay {
    db: DatabaseConnection,
    sink: Arc<dyn EventSink>,
    wake: Arc<Notify>,
    batch_size: u64,
    poll_interval: Duration,
    max_attempts: i32,
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
        Self { db, sink, wake, batch_size, poll_interval, max_attempts }
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
                    metrics::gauge!("outbox_pending_events").set(pending as f64);
                }
                tokio::select! {
                    _ = probe_stop.cancelled() => return,
                    _ = tokio::time::sleep(probe_interval) => {}
                }
            }
        });
        tokio::spawn(async move { relay.run(stop).await })
    }

    async fn run(&self, stop: CancellationToken) {
        let mut leader: Option<PoolConnection<Postgres>> = None;
        let mut failures = 0u32;
        loop {
            let round = async {
                if self.db.get_database_backend() == DbBackend::Postgres && !self.lead(&mut leader).await {
                    return Ok(0);
                }
                self.publish_batch().await
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
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified(), if pause.is_none() => {}
                _ = tokio::time::sleep(pause.unwrap_or(self.poll_interval)) => {}
            }
        }
    }

    /// Whether this process leads (PostgreSQL): holds the advisory lock on a
    /// connection of its own, released by PostgreSQL if the process dies.
    async fn lead(&self, leader: &mut Option<PoolConnection<Postgres>>) -> bool {
        if let Some(conn) = leader.as_mut() {
            if sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok() {
                return true;
            }
            *leader = None;
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

    /// Publishes the oldest unpublished rows; returns how many were delivered.
    async fn publish_batch(&self) -> Result<usize, String> {
        let rows = Entity::find()
            .filter(Column::PublishedAt.is_null())
            .filter(Column::Attempts.lt(self.max_attempts))
            .order_by_asc(Column::Id)
            .limit(self.batch_size)
            .all(&self.db)
            .await
            .map_err(|e| format!("cannot read the outbox: {e}"))?;
        if rows.is_empty() {
            return Ok(0);
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
        if !ids.is_empty() {
            self.mark_published(&ids).await.map_err(|e| format!("cannot mark events published: {e}"))?;
            metrics::counter!("outbox_events_published_total", "sink" => self.sink.name()).increment(ids.len() as u64);
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

    async fn mark_published(&self, ids: &[i64]) -> Result<(), DbErr> {
        if crate::trace::enabled() {
            use tracing::Instrument;
            let span = crate::trace::db_span("UPDATE", "event_outbox", self.db.get_database_backend());
            return self.mark_published_inner(ids).instrument(span).await;
        }
        self.mark_published_inner(ids).await
    }

    async fn mark_published_inner(&self, ids: &[i64]) -> Result<(), DbErr> {
        let txn = begin_write(&self.db).await?;
        Entity::update_many()
            .col_expr(Column::PublishedAt, Expr::value(chrono::Utc::now()))
            .filter(Column::Id.is_in(ids.iter().copied()))
            .exec(&txn)
            .await?;
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
