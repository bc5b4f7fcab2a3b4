//! Workflow definitions: one row per (name, version), immutable; the
//! definition itself (its steps) as JSON.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WorkflowDefinitions {
    Table,
    Name,
    Version,
    Description,
    Definition,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WorkflowDefinitions::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(WorkflowDefinitions::Name).string_len(64).not_null())
                    .col(ColumnDef::new(WorkflowDefinitions::Version).integer().not_null())
                    .col(ColumnDef::new(WorkflowDefinitions::Description).text().not_null())
                    .col(ColumnDef::new(WorkflowDefinitions::Definition).json().not_null())
                    .col(ColumnDef::new(WorkflowDefinitions::CreatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(WorkflowDefinitions::Name).col(WorkflowDefinitions::Version))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(WorkflowDefinitions::Table).to_owned()).await
    }
}
