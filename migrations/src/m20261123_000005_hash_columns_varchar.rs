//! Hash columns become `varchar(64)` on PostgreSQL. As `char(64)` (bpchar),
//! a comparison with a text parameter casts the column, so the
//! (namespace, file_hash) index served only its namespace prefix: every
//! lookup by hash scanned the namespace. SQLite stores text either way.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const COLUMNS: [(&str, &str); 3] =
    [("metadata_stamps", "file_hash"), ("workflow_executions", "input_hash"), ("workflow_executions", "file_hash")];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        retype(manager, "varchar(64)").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        retype(manager, "char(64)").await
    }
}

async fn retype(manager: &SchemaManager<'_>, sql_type: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    for (table, column) in COLUMNS {
        manager
            .get_connection()
            .execute_unprepared(&format!("ALTER TABLE \"{table}\" ALTER COLUMN \"{column}\" TYPE {sql_type}"))
            .await?;
    }
    Ok(())
}
