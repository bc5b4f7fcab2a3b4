//! `OneStatement`: the writes of one transaction sent to PostgreSQL as a
//! single statement of data-modifying CTEs (`WITH a AS (INSERT …), b AS
//! (UPDATE …) SELECT …`) and committed by itself. A transaction of k
//! statements costs k + 2 round trips (`BEGIN`, each statement, `COMMIT`);
//! this costs one, with the same atomicity (one statement is one implicit
//! transaction) and the same durability (its commit waits for the WAL flush
//! like any other). Each part sees the table as it was before the statement:
//! a part that depends on another reads that part's `RETURNING` rows.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, StatementBuilder, Value};

/// A PostgreSQL statement built from named parts; see the module docs.
#[derive(Debug, Default)]
pub struct OneStatement {
    parts: Vec<String>,
    values: Vec<Value>,
}

impl OneStatement {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `statement` (built by sea-query for PostgreSQL) as the part `name`.
    pub fn add(&mut self, name: &str, statement: &impl StatementBuilder) {
        let built = statement.build(&DbBackend::Postgres);
        let values = built.values.map(|v| v.0).unwrap_or_default();
        self.add_sql(name, &built.sql, values);
    }

    /// Adds `sql` as the part `name`; its placeholders are `$1`… over `values`.
    pub fn add_sql(&mut self, name: &str, sql: &str, values: Vec<Value>) {
        let sql = shift_placeholders(sql, self.values.len());
        self.parts.push(format!("{name} AS ({sql})"));
        self.values.extend(values);
    }

    /// Runs the parts, then `select` (which may read the parts' `RETURNING`
    /// rows), as one statement on `conn`; returns `select`'s rows.
    pub async fn run<C: ConnectionTrait>(self, conn: &C, select: &str) -> Result<Vec<QueryResult>, DbErr> {
        let sql = format!("WITH {} {select}", self.parts.join(", "));
        conn.query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, self.values)).await
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
        let mut statement = OneStatement::new();
        statement.add_sql("a", "SELECT $1, $2", vec![1i32.into(), 2i32.into()]);
        statement.add_sql("b", "SELECT $1", vec!["x".into()]);
        assert_eq!(statement.parts, ["a AS (SELECT $1, $2)", "b AS (SELECT $3)"]);
        assert_eq!(statement.values.len(), 3);
    }
}
