//! Workflows of stored definitions: the definition a workflow runs
//! (`name@version`, pinned at start; NULL for the built-in stamping
//! pipeline), the index and name of the step it is at, and when a WAITING workflow
//! wakes (its timer fires or its approval times out; NULL waits for a
//! decision only). The partial index holds just the waiting rows the
//! claimers scan for due ones.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WorkflowExecutions {
    Table,
    Definition,
    StepCursor,
    CurrentStep,
    WakeAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            ColumnDef::new(WorkflowExecutions::Definition).string_len(80).null().to_owned(),
            ColumnDef::new(WorkflowExecutions::StepCursor).integer().not_null().default(0).to_owned(),
            ColumnDef::new(WorkflowExecutions::CurrentStep).string_len(64).null().to_owned(),
            ColumnDef::new(WorkflowExecutions::WakeAt).timestamp_with_time_zone().null().to_owned(),
        ] {
            manager.alter_table(Table::alter().table(WorkflowExecutions::Table).add_column(column).to_owned()).await?;
        }
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS ix_workflow_executions_waiting ON workflow_executions \
                 (wake_at, id) WHERE current_state = 'WAITING'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP INDEX IF EXISTS ix_workflow_executions_waiting").await?;
        for column in [
            WorkflowExecutions::WakeAt,
            WorkflowExecutions::CurrentStep,
            WorkflowExecutions::StepCursor,
            WorkflowExecutions::Definition,
        ] {
            manager.alter_table(Table::alter().table(WorkflowExecutions::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
