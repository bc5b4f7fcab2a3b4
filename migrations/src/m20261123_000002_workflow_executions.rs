//! `workflow_executions`: one row per orchestrator workflow, with its steps
//! and state transitions, updated in place as the workflow advances.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WorkflowExecutions::Table)
                    .if_not_exists()
                    // UUID v7 text: time ordered, the paging key.
                    .col(ColumnDef::new(WorkflowExecutions::Id).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(WorkflowExecutions::Namespace).string_len(128).not_null())
                    .col(ColumnDef::new(WorkflowExecutions::WorkflowType).string_len(64).not_null())
                    .col(ColumnDef::new(WorkflowExecutions::CurrentState).string_len(16).not_null())
                    .col(ColumnDef::new(WorkflowExecutions::CorrelationId).string_len(255).null())
                    .col(ColumnDef::new(WorkflowExecutions::IdempotencyKey).string_len(255).null())
                    // BLAKE3 of the request input: a reused idempotency key must carry the same input.
                    .col(ColumnDef::new(WorkflowExecutions::InputHash).char_len(64).not_null())
                    .col(ColumnDef::new(WorkflowExecutions::Input).json().not_null())
                    .col(ColumnDef::new(WorkflowExecutions::FileHash).char_len(64).null())
                    .col(ColumnDef::new(WorkflowExecutions::StampId).string_len(36).null())
                    .col(ColumnDef::new(WorkflowExecutions::StampedContent).text().null())
                    .col(ColumnDef::new(WorkflowExecutions::ErrorMessage).text().null())
                    .col(ColumnDef::new(WorkflowExecutions::Steps).json().not_null())
                    .col(ColumnDef::new(WorkflowExecutions::Transitions).json().not_null())
                    .col(ColumnDef::new(WorkflowExecutions::IntelligenceData).text().null())
                    .col(ColumnDef::new(WorkflowExecutions::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(WorkflowExecutions::StartedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(WorkflowExecutions::CompletedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(WorkflowExecutions::UpdatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(WorkflowExecutions::ExecutionTimeMs).big_integer().null())
                    .col(ColumnDef::new(WorkflowExecutions::Version).integer().not_null().default(1))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_workflow_executions_namespace_idempotency_key")
                    .table(WorkflowExecutions::Table)
                    .col(WorkflowExecutions::Namespace)
                    .col(WorkflowExecutions::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_workflow_executions_namespace_id")
                    .table(WorkflowExecutions::Table)
                    .col(WorkflowExecutions::Namespace)
                    .col(WorkflowExecutions::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Recovery finds unfinished workflows by state.
        manager
            .create_index(
                Index::create()
                    .name("ix_workflow_executions_current_state")
                    .table(WorkflowExecutions::Table)
                    .col(WorkflowExecutions::CurrentState)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(WorkflowExecutions::Table).if_exists().to_owned()).await
    }
}

#[derive(DeriveIden)]
enum WorkflowExecutions {
    Table,
    Id,
    Namespace,
    WorkflowType,
    CurrentState,
    CorrelationId,
    IdempotencyKey,
    InputHash,
    Input,
    FileHash,
    StampId,
    StampedContent,
    ErrorMessage,
    Steps,
    Transitions,
    IntelligenceData,
    CreatedAt,
    StartedAt,
    CompletedAt,
    UpdatedAt,
    ExecutionTimeMs,
    Version,
}
