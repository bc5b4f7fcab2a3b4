//! Workflows belong to no process: any orchestrator instance claims runnable
//! ones with a lease. A row carries its lease owner, when the lease expires,
//! and a fencing token (`lease_attempt`, bumped on every claim) that every
//! worker write is conditional on. The partial index holds just the
//! unfinished rows the claimers scan.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WorkflowExecutions {
    Table,
    LeaseOwner,
    LeaseExpiresAt,
    LeaseAttempt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            ColumnDef::new(WorkflowExecutions::LeaseOwner).string_len(255).null().to_owned(),
            ColumnDef::new(WorkflowExecutions::LeaseExpiresAt).timestamp_with_time_zone().null().to_owned(),
            ColumnDef::new(WorkflowExecutions::LeaseAttempt).big_integer().not_null().default(0).to_owned(),
        ] {
            manager.alter_table(Table::alter().table(WorkflowExecutions::Table).add_column(column).to_owned()).await?;
        }
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS ix_workflow_executions_unfinished ON workflow_executions \
                 (current_state, lease_expires_at, id) WHERE current_state IN ('PENDING', 'PROCESSING')",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP INDEX IF EXISTS ix_workflow_executions_unfinished").await?;
        for column in
            [WorkflowExecutions::LeaseAttempt, WorkflowExecutions::LeaseExpiresAt, WorkflowExecutions::LeaseOwner]
        {
            manager.alter_table(Table::alter().table(WorkflowExecutions::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
