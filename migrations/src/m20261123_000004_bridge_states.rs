//! The reducer's tables: `bridge_states` (per-namespace aggregates),
//! `processed_events` (event ids already counted: redelivery never counts
//! twice) and `namespace_workflows` (workflow ids seen, for unique counts).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(BridgeStates::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(BridgeStates::Namespace).string_len(128).not_null().primary_key())
                    .col(ColumnDef::new(BridgeStates::TotalStamps).big_integer().not_null().default(0))
                    .col(ColumnDef::new(BridgeStates::TotalSizeBytes).big_integer().not_null().default(0))
                    .col(ColumnDef::new(BridgeStates::FileTypeCounts).json().not_null())
                    .col(ColumnDef::new(BridgeStates::UniqueWorkflows).big_integer().not_null().default(0))
                    .col(ColumnDef::new(BridgeStates::WorkflowStateCounts).json().not_null())
                    .col(ColumnDef::new(BridgeStates::CurrentState).string_len(32).not_null())
                    .col(ColumnDef::new(BridgeStates::WindowStart).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(BridgeStates::WindowEnd).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(BridgeStates::ItemsPerSecond).double().not_null().default(0.0))
                    .col(ColumnDef::new(BridgeStates::LastAggregationAt).timestamp_with_time_zone().not_null())
                    // Optimistic lock: every update is conditional on the version read.
                    .col(ColumnDef::new(BridgeStates::Version).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProcessedEvents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ProcessedEvents::EventId).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(ProcessedEvents::Namespace).string_len(128).not_null())
                    .col(ColumnDef::new(ProcessedEvents::ProcessedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_processed_events_processed_at")
                    .table(ProcessedEvents::Table)
                    .col(ProcessedEvents::ProcessedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(NamespaceWorkflows::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(NamespaceWorkflows::Namespace).string_len(128).not_null())
                    .col(ColumnDef::new(NamespaceWorkflows::WorkflowId).string_len(36).not_null())
                    .primary_key(Index::create().col(NamespaceWorkflows::Namespace).col(NamespaceWorkflows::WorkflowId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in
            [BridgeStates::Table.into_iden(), ProcessedEvents::Table.into_iden(), NamespaceWorkflows::Table.into_iden()]
        {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum BridgeStates {
    Table,
    Namespace,
    TotalStamps,
    TotalSizeBytes,
    FileTypeCounts,
    UniqueWorkflows,
    WorkflowStateCounts,
    CurrentState,
    WindowStart,
    WindowEnd,
    ItemsPerSecond,
    LastAggregationAt,
    Version,
}

#[derive(DeriveIden)]
enum ProcessedEvents {
    Table,
    EventId,
    Namespace,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum NamespaceWorkflows {
    Table,
    Namespace,
    WorkflowId,
}
