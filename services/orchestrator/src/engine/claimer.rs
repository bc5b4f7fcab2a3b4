//! The claimer of one process: it claims runnable workflows from the database
//! while it has free workers (woken at once by a local submit, a finished
//! worker, or — on PostgreSQL — a `NOTIFY` from another instance, and polling
//! a few times per lease for expired ones), renews the leases of what it runs,
//! and on shutdown hands its workflows over: workers get a moment to finish,
//! the rest are interrupted and their leases released so another instance
//! takes them at once, without waiting for the leases to expire.

use std::{collections::HashSet, sync::atomic::Ordering, time::Duration};

use sea_orm::{DbBackend, DbErr, sqlx::postgres::PgListener};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::WorkflowEngine;
use crate::store::lease::{CHANGES_CHANNEL, CHANNEL};

/// How long a stopping instance lets its running workflows finish before it
/// interrupts them and releases their leases.
const DRAIN: Duration = Duration::from_secs(1);
/// How often the backlog gauge is refreshed.
const BACKLOG_REFRESH: Duration = Duration::from_secs(1);

/// Starts the claimer, the renewer and (PostgreSQL) the listener; the
/// returned task ends once the hand-over after `stop` is done.
pub(super) fn spawn(engine: WorkflowEngine, stop: CancellationToken) -> JoinHandle<()> {
    if engine.inner.store.backend() == DbBackend::Postgres {
        tokio::spawn(listen(engine.clone(), stop.clone()));
    }
    tokio::spawn(renew(engine.clone(), stop.clone()));
    tokio::spawn(async move {
        claim_until(&engine, &stop).await;
        hand_over(&engine).await;
    })
}

async fn claim_until(engine: &WorkflowEngine, stop: &CancellationToken) {
    let inner = &engine.inner;
    let lease = inner.config.lease;
    // Expired leases are found within a quarter lease: takeover within ~1.25 leases.
    let poll = (lease / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut backlog_at = Instant::now().checked_sub(BACKLOG_REFRESH).unwrap_or_else(Instant::now);
    let mut failures = 0u32;
    loop {
        let free = inner.slots.available_permits();
        if free > 0 {
            match claim_for_free_workers(engine, free).await {
                Ok(()) => failures = 0,
                Err(err) => {
                    failures += 1;
                    inner.backlog.store(true, Ordering::SeqCst);
                    tracing::warn!(%err, failures, "cannot claim workflows");
                }
            }
        }
        if backlog_at.elapsed() >= BACKLOG_REFRESH {
            backlog_at = Instant::now();
            engine.report_backlog().await;
        }
        let pause = if failures > 0 { poll.saturating_mul(1 << failures.min(4)) } else { poll };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Claims as many runnable workflows as there are free workers (`free`) and
/// starts them. A start may take a worker between the claim's look and its answer:
/// a workflow claimed and left without one is handed back at once (any
/// instance with a free worker takes it), never held waiting for a worker
/// here, unrenewed, until its lease ran out and another instance ran it again.
async fn claim_for_free_workers(engine: &WorkflowEngine, free: usize) -> Result<(), DbErr> {
    let inner = &engine.inner;
    // Cleared before the look: a workflow queued meanwhile sets it again.
    inner.backlog.store(false, Ordering::SeqCst);
    let claimed = inner.store.claim(&inner.owner, free as u64, inner.config.lease).await?;
    if claimed.len() >= free {
        // As many as there were workers: more may wait.
        inner.backlog.store(true, Ordering::SeqCst);
    }
    let mut unstarted = Vec::new();
    for workflow in claimed {
        if workflow.taken_over {
            metrics::counter!("workflow_takeovers_total").increment(1);
            tracing::info!(workflow_id = %workflow.id, owner = %inner.owner, "took over a workflow whose lease expired");
        }
        match inner.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                metrics::counter!("workflow_claimed_total").increment(1);
                engine.spawn_worker(workflow.id, workflow.fence, slot, None, None);
            }
            Err(_) => unstarted.push(workflow),
        }
    }
    if !unstarted.is_empty() {
        // Runnable again: a worker that frees up here looks for it too.
        inner.backlog.store(true, Ordering::SeqCst);
        let handed_back = inner.store.hand_back(&inner.owner, &unstarted).await?;
        tracing::debug!(handed_back, owner = %inner.owner, "handed back workflows claimed while starts took the workers");
    }
    Ok(())
}

/// Lets running workflows finish for [`DRAIN`], interrupts the rest (they
/// write nothing more) and releases every lease this process holds.
async fn hand_over(engine: &WorkflowEngine) {
    let inner = &engine.inner;
    let running = || inner.running.lock().expect("running map").len();
    let deadline = Instant::now() + DRAIN;
    while running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for worker in inner.running.lock().expect("running map").values() {
        worker.token.cancel();
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match inner.store.release(&inner.owner).await {
        Ok(0) => {}
        Ok(released) => {
            tracing::info!(released, owner = %inner.owner, "handed unfinished workflows to the other instances")
        }
        Err(err) => tracing::warn!(%err, "cannot release leases; they expire instead"),
    }
}

/// Renews the leases of the running workflows three times per lease. One
/// that was not renewed either ended under this lease (a cancel: its worker
/// is interrupted) or was claimed by another instance (its worker is left to
/// find out at its next write, which the fencing token refuses and counts).
async fn renew(engine: WorkflowEngine, stop: CancellationToken) {
    let inner = &engine.inner;
    let mut reported: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(inner.config.lease / 3) => {}
        }
        let ids: Vec<String> = inner.running.lock().expect("running map").keys().cloned().collect();
        let renewed = match inner.store.renew(&inner.owner, &ids, inner.config.lease).await {
            Ok(renewed) => renewed,
            Err(err) => {
                tracing::warn!(%err, "cannot renew leases");
                continue;
            }
        };
        reported.retain(|id| ids.contains(id));
        for id in ids.iter().filter(|id| !renewed.contains(*id)) {
            let held = engine.fence(id);
            match inner.store.lease_of(id).await {
                // Its worker here finished it between the snapshot and the renewal.
                Ok(Some((state, _))) if state.is_terminal() && held.is_none() => {}
                Ok(Some((state, fence))) if state.is_terminal() && Some(fence) == held => {
                    engine.interrupt(id);
                }
                Ok(Some(_)) if reported.insert(id.clone()) => {
                    tracing::warn!(workflow_id = %id, owner = %inner.owner, "lease lost to another instance");
                }
                _ => {}
            }
        }
    }
}

/// PostgreSQL: wakes the claimer when another instance queues a workflow or
/// releases its leases, and passes on state changes made by other instances
/// to the watchers here (RunWorkflow answers without waiting for a poll).
async fn listen(engine: WorkflowEngine, stop: CancellationToken) {
    let pool = engine.inner.store.connection().get_postgres_connection_pool().clone();
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all([CHANNEL, CHANGES_CHANNEL]).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            listener = listener => match listener {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::debug!(%err, "cannot listen for queued workflows; polling meanwhile");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        // A reconnect may have missed notifications: look once.
        engine.wake_claimer();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                notification = listener.recv() => match notification {
                    Ok(n) if n.channel() == CHANGES_CHANNEL => pass_on(&engine, n.payload()),
                    Ok(_) => engine.wake_claimer(),
                    Err(_) => break,
                },
            }
        }
    }
}

/// Reads a workflow another instance changed, if someone here watches it.
fn pass_on(engine: &WorkflowEngine, id: &str) {
    // This instance's own changes reach its watchers directly.
    if !engine.is_watched(id) || engine.fence(id).is_some() {
        return;
    }
    let (engine, id) = (engine.clone(), id.to_owned());
    tokio::spawn(async move {
        if let Ok(Some(workflow)) = engine.inner.store.get(&id).await {
            engine.publish(&workflow);
        }
    });
}
