//! Announcements to the other instances (PostgreSQL `NOTIFY`): a workflow's
//! state changed, or a workflow was queued for any claimer. They are sent
//! once the change they announce has committed, by one task, in batches —
//! not in the change's own transaction.
//!
//! PostgreSQL serialises the commits of transactions that notify: each takes
//! one lock for the whole database before its commit and keeps it until the
//! commit's WAL flush is done (`PreCommit_Notify`), so notifying writes never
//! share a flush. With the announcement in every state change, concurrent
//! workflows committed one `fdatasync` at a time, waiting on that lock
//! (`pg_stat_activity`: `Lock:object` behind one `IO:WALSync`) while both
//! cores had time to spare. Sent here, the changes commit side by side and
//! one short transaction carries the announcements of many, without waiting
//! for a flush of its own (it writes nothing but its commit).
//!
//! An announcement is a hint: a watcher also reads its workflow every half
//! second and a claimer polls, so one lost with its process (committed, not
//! yet announced) costs the others that wait, never a change. Announcements
//! of one process go in the order they were made.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};
use tokio::sync::mpsc;

use super::lease::{CHANGES_CHANNEL, CHANNEL};

/// Announcements waiting to be sent at most; beyond that they are dropped
/// (the others' polls find what they announce).
const QUEUE: usize = 8192;
/// Announcements sent in one statement at most.
const BATCH: usize = 64;

/// One announcement: a channel and its payload.
type Notice = (&'static str, String);

/// The sending end of a store's announcements; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    /// `None` on SQLite (one process: the engine wakes its own watchers and claimer).
    queue: Option<mpsc::Sender<Notice>>,
}

impl Announcer {
    /// The announcer of `db`: on PostgreSQL it starts the sending task, which
    /// ends when every clone of the announcer is dropped.
    pub(crate) fn new(db: &DatabaseConnection) -> Self {
        if db.get_database_backend() != DbBackend::Postgres {
            return Self { queue: None };
        }
        let (queue, notices) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(db.clone(), notices));
        Self { queue: Some(queue) }
    }

    /// Tells the watchers on every instance that workflow `id` changed.
    pub(crate) fn changed(&self, id: &str) {
        self.announce(CHANGES_CHANNEL, id.to_owned());
    }

    /// Wakes every instance's claimer: a workflow waits to be claimed.
    pub(crate) fn wake_claimers(&self) {
        self.announce(CHANNEL, String::new());
    }

    fn announce(&self, channel: &'static str, payload: String) {
        if let Some(queue) = &self.queue
            && queue.try_send((channel, payload)).is_err()
        {
            metrics::counter!("workflow_announcements_dropped_total").increment(1);
        }
    }
}

/// Sends what is queued, a batch per statement, until the queue closes.
async fn send_all(db: DatabaseConnection, mut notices: mpsc::Receiver<Notice>) {
    let mut batch = Vec::with_capacity(BATCH);
    while notices.recv_many(&mut batch, BATCH).await > 0 {
        if let Err(err) = db.execute_raw(statement(&batch)).await {
            tracing::debug!(%err, announcements = batch.len(), "cannot announce workflow changes; the others poll");
        }
        batch.clear();
    }
}

/// One statement that sends `batch` (each notice once, in order) and commits
/// without waiting for the WAL flush: it writes only its commit record.
fn statement(batch: &[Notice]) -> Statement {
    let mut seen = HashSet::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.len());
    let mut values: Vec<Value> = Vec::with_capacity(2 * batch.len());
    for (channel, payload) in batch.iter().filter(|notice| seen.insert(*notice)) {
        rows.push(format!("(${}, ${})", values.len() + 1, values.len() + 2));
        values.push((*channel).into());
        values.push(payload.as_str().into());
    }
    let sql = format!(
        "SELECT pg_notify(n.channel, n.payload) FROM (VALUES {}) AS n(channel, payload), {} AS unflushed",
        rows.join(", "),
        omninode_runtime::db::synchronous_commit(false)
    );
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_sends_each_notice_once_in_order_without_waiting_for_a_flush() {
        let batch: Vec<Notice> = vec![
            (CHANGES_CHANNEL, "a".into()),
            (CHANNEL, String::new()),
            (CHANGES_CHANNEL, "b".into()),
            (CHANGES_CHANNEL, "a".into()),
            (CHANNEL, String::new()),
        ];
        let statement = statement(&batch);
        assert_eq!(
            statement.sql,
            "SELECT pg_notify(n.channel, n.payload) FROM (VALUES ($1, $2), ($3, $4), ($5, $6)) AS n(channel, payload), \
             (SELECT set_config('synchronous_commit', 'off', true)) AS unflushed"
        );
        let values: Vec<Value> = statement.values.expect("values").0;
        let expected: Vec<Value> = [CHANGES_CHANNEL, "a", CHANNEL, "", CHANGES_CHANNEL, "b"].map(Value::from).to_vec();
        assert_eq!(values, expected);
    }

    #[tokio::test]
    async fn sqlite_has_nothing_to_announce() {
        let (_dir, db) = crate::store::tests::migrated_sqlite().await;
        let announcer = Announcer::new(&db);
        assert!(announcer.queue.is_none());
        announcer.changed("w");
        announcer.wake_claimers();
    }
}
