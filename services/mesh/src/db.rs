//! Database connection (SQLite embedded, PostgreSQL in production) and schema
//! migration through the `omninode-migrations` crate.

use std::time::Duration;

use omninode_migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};

use crate::config::{DatabaseTarget, MeshConfig};

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: DbErr },
    #[error("cannot migrate {target}: {source}")]
    Migrate { target: String, source: DbErr },
}

/// Opens the configured database and brings its schema up to date.
pub async fn connect_and_migrate(config: &MeshConfig) -> Result<DatabaseConnection, DbSetupError> {
    let db = connect(&config.database, config.database_max_connections).await?;
    Migrator::up(&db, None)
        .await
        .map_err(|source| DbSetupError::Migrate { target: describe(&config.database), source })?;
    Ok(db)
}

/// Opens a pool on `target` without migrating.
pub async fn connect(target: &DatabaseTarget, max_connections: u32) -> Result<DatabaseConnection, DbSetupError> {
    let url = match target {
        DatabaseTarget::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|source| DbSetupError::DataDir { path: dir.display().to_string(), source })?;
            }
            format!("sqlite://{}?mode=rwc", path.display())
        }
        DatabaseTarget::Url(url) => url.clone(),
    };
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        // WAL lets readers run beside the writer; NORMAL sync is durable in WAL
        // mode against process crashes, and a busy timeout queues writers
        // instead of failing them.
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    Database::connect(options).await.map_err(|source| DbSetupError::Connect { target: describe(target), source })
}

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`:
/// a deferred transaction that reads and then writes fails at once with
/// SQLITE_BUSY_SNAPSHOT when another writer committed in between (no busy
/// wait applies to that upgrade); taking the write lock up front makes
/// writers queue on the busy timeout instead. PostgreSQL begins as usual.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let options = TransactionOptions {
        sqlite_transaction_mode: (db.get_database_backend() == DbBackend::Sqlite)
            .then_some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    db.begin_with_options(options).await
}

/// The target with any password removed, for logs and errors.
pub fn describe(target: &DatabaseTarget) -> String {
    match target {
        DatabaseTarget::Sqlite(path) => format!("sqlite file {}", path.display()),
        DatabaseTarget::Url(url) => redact_password(url),
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact_password("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(redact_password("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_password("sqlite::memory:"), "sqlite::memory:");
    }

    #[tokio::test]
    async fn sqlite_file_is_created_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/omninode.db");
        let db = connect(&DatabaseTarget::Sqlite(path.clone()), 2).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        // Running again is a no-op, not an error.
        Migrator::up(&db, None).await.unwrap();
        assert!(path.exists());
        let applied = Migrator::get_applied_migrations(&db).await.unwrap();
        assert_eq!(applied.len(), Migrator::migrations().len());
    }
}
