//! `OneStatement`: the writes of one transaction sent to the database in
//! one trip, committed together.
//!
//! On PostgreSQL the parts become a single statement of data-modifying CTEs
//! (`WITH a AS (INSERT …), b AS (UPDATE …) SELECT …`) committed by itself. A
//! transaction of k statements costs k + 2 round trips (`BEGIN`, each
//! statement, `COMMIT`); this costs one, with the same atomicity (one
//! statement is one implicit transaction) and the same durability (its
//! commit waits for the WAL flush like any other). Each part sees the table
//! as it was before the statement: a part that depends on another reads that
//! part's `RETURNING` rows.
//!
//! On SQLite the parts run in order as one batch, `BEGIN IMMEDIATE; …;
//! COMMIT`, handed to the connection's thread at once: one hop instead of
//! one per statement (each hop wakes that thread and then the caller's). A
//! part that fails rolls the batch back. A part sees the parts before it;
//! one that depends on another's effect says so in SQL (`changes()`, or a
//! lookup of the rows that part wrote).

use std::sync::Arc;

use sea_orm::{
    DatabaseConnection, DbBackend, DbErr, QueryResult, RuntimeErr, Statement, StatementBuilder, Value, Values,
    sqlx::{self, Executor},
};
use sea_query_sqlx::SqlxValues;

/// The writes of one transaction, sent in one trip; see the module docs.
#[derive(Debug)]
pub struct OneStatement {
    backend: DbBackend,
    /// PostgreSQL: `name AS (sql)`; SQLite: `sql`.
    parts: Vec<String>,
    names: Vec<String>,
    values: Vec<Value>,
    /// PostgreSQL: commit without waiting for the WAL flush.
    unflushed: bool,
}

impl OneStatement {
    /// An empty statement for `backend` (PostgreSQL or SQLite).
    pub fn new(backend: DbBackend) -> Self {
        debug_assert!(matches!(backend, DbBackend::Postgres | DbBackend::Sqlite), "PostgreSQL or SQLite");
        Self { backend, parts: Vec::new(), names: Vec::new(), values: Vec::new(), unflushed: false }
    }

    /// The database the statement is built for.
    pub fn backend(&self) -> DbBackend {
        self.backend
    }

    /// Commits without waiting for the WAL flush (PostgreSQL's
    /// `synchronous_commit = off`, for this transaction only), for a write
    /// no caller is told of before a later durable commit to the same
    /// database: that commit's flush covers this one, as the WAL is written
    /// in order. Until then a crash of the database may undo it, so its
    /// events must not leave before the flush either: the outbox relay
    /// publishes only rows whose WAL is flushed. (On SQLite a commit does
    /// not wait for a sync anyway: `synchronous = NORMAL`.)
    pub fn commit_without_flush(&mut self) {
        self.unflushed = true;
    }

    /// Whether its commit is left to a later one's flush: set by
    /// [`Self::commit_without_flush`], on PostgreSQL (SQLite's commits are
    /// alike). The outbox relay cannot publish its events before that
    /// flush, so waking the relay for them is for the later commit to do.
    pub fn flushed_later(&self) -> bool {
        self.unflushed && self.backend == DbBackend::Postgres
    }

    /// The name of the part added last.
    pub fn last_part(&self) -> Option<&str> {
        self.names.last().map(String::as_str)
    }

    /// Adds `statement` (built by sea-query for this backend) as the part `name`.
    pub fn add(&mut self, name: &str, statement: &impl StatementBuilder) {
        self.add_statement(name, statement.build(&self.backend));
    }

    /// Adds `statement` (built for this backend) as the part `name`.
    pub fn add_statement(&mut self, name: &str, statement: Statement) {
        let values = statement.values.map(|v| v.0).unwrap_or_default();
        self.add_sql(name, &statement.sql, values);
    }

    /// Adds `sql` as the part `name`; its placeholders (PostgreSQL `$1`…,
    /// SQLite `?`, as sea-query writes them) are over `values`. (On SQLite
    /// the parts' `?` are bound in order across the batch; a numbered `?NNN`
    /// would count from the batch's first value.)
    pub fn add_sql(&mut self, name: &str, sql: &str, values: Vec<Value>) {
        match self.backend {
            DbBackend::Postgres => {
                let sql = shift_placeholders(sql, self.values.len());
                self.parts.push(format!("{name} AS ({sql})"));
            }
            _ => self.parts.push(sql.to_owned()),
        }
        self.names.push(name.to_owned());
        self.values.extend(values);
    }

    /// Runs the parts in one trip and answers the `RETURNING` rows of one
    /// part: on PostgreSQL those `select` reads (`SELECT id FROM s`); on
    /// SQLite the rows the parts returned, so only that part may have a
    /// `RETURNING`.
    pub async fn run(self, db: &DatabaseConnection, select: &str) -> Result<Vec<QueryResult>, DbErr> {
        match self.backend {
            DbBackend::Postgres => {
                let sql = match self.unflushed {
                    // A `SELECT` part runs only if read: the answer reads it.
                    true => format!(
                        "WITH {}, unflushed AS {} SELECT answer.* FROM ({select}) AS answer, unflushed",
                        self.parts.join(", "),
                        super::synchronous_commit(false)
                    ),
                    false => format!("WITH {} {select}", self.parts.join(", ")),
                };
                sea_orm::ConnectionTrait::query_all_raw(
                    db,
                    Statement::from_sql_and_values(self.backend, sql, self.values),
                )
                .await
            }
            _ => self.run_sqlite(db).await,
        }
    }

    /// Runs the batch in a task of its own: a caller that goes away (a
    /// dropped request) must not stop it between its `BEGIN` and its
    /// `COMMIT`, which would leave a pooled connection inside a transaction
    /// holding the write lock. Like a group commit's write, it finishes.
    async fn run_sqlite(self, db: &DatabaseConnection) -> Result<Vec<QueryResult>, DbErr> {
        let failed = |err: sqlx::Error| DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)));
        let sql = format!("BEGIN IMMEDIATE; {}; COMMIT", self.parts.join("; "));
        let db = db.clone();
        let values = self.values;
        let batch = tokio::spawn(async move {
            let (_gate, writer) = super::sqlite_writer::write_access(&db).await;
            let mut conn = writer.get_sqlite_connection_pool().acquire().await.map_err(failed)?;
            let query = sqlx::query_with(sqlx::AssertSqlSafe(sql), SqlxValues(Values(values)));
            match conn.fetch_all(query).await {
                Ok(rows) => Ok(rows.into_iter().map(QueryResult::from).collect()),
                Err(err) => {
                    // A part failed: the batch stopped inside its transaction.
                    // (A failed `BEGIN` has none: that `ROLLBACK` fails
                    // harmlessly, and the connection is closed all the same.)
                    if conn.execute(sqlx::raw_sql("ROLLBACK")).await.is_err() {
                        conn.close_on_drop();
                    }
                    Err(failed(err))
                }
            }
        });
        batch.await.map_err(|err| DbErr::Custom(format!("the SQLite write stopped: {err}")))?
    }
}

/// `sql` with every placeholder `$n` outside quotes renumbered `$n+offset`.
fn shift_placeholders(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = 0usize;
                while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + d as usize;
                    chars.next();
                }
                out.push('$');
                out.push_str(&(n + offset).to_string());
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_postgresql_commit_asked_to_skip_its_flush_is_flushed_later() {
        let skipping = |backend| {
            let mut statement = OneStatement::new(backend);
            statement.commit_without_flush();
            statement.flushed_later()
        };
        assert!(skipping(DbBackend::Postgres));
        assert!(!skipping(DbBackend::Sqlite), "SQLite's commits are all alike");
        assert!(!OneStatement::new(DbBackend::Postgres).flushed_later(), "a durable commit by default");
    }

    #[test]
    fn placeholders_outside_quotes_are_renumbered() {
        assert_eq!(
            shift_placeholders(r#"INSERT INTO "t$1" ("a", "b") VALUES ($1, $12) -- '$2'"#, 3),
            r#"INSERT INTO "t$1" ("a", "b") VALUES ($4, $15) -- '$2'"#
        );
        assert_eq!(shift_placeholders("SELECT $1", 0), "SELECT $1");
        assert_eq!(shift_placeholders("SELECT $ 1, $x", 5), "SELECT $ 1, $x");
    }

    #[test]
    fn parts_keep_their_own_values_in_order() {
        let mut statement = OneStatement::new(DbBackend::Postgres);
        statement.add_sql("a", "SELECT $1, $2", vec![1i32.into(), 2i32.into()]);
        statement.add_sql("b", "SELECT $1", vec!["x".into()]);
        assert_eq!(statement.parts, ["a AS (SELECT $1, $2)", "b AS (SELECT $3)"]);
        assert_eq!(statement.values.len(), 3);
        assert_eq!(statement.last_part(), Some("b"));

        let mut statement = OneStatement::new(DbBackend::Sqlite);
        statement.add_sql("a", "SELECT ?, ?", vec![1i32.into(), 2i32.into()]);
        statement.add_sql("b", "SELECT ?", vec!["x".into()]);
        assert_eq!(statement.parts, ["SELECT ?, ?", "SELECT ?"], "SQLite binds in order across statements");
        assert_eq!(statement.values.len(), 3);
    }
}
