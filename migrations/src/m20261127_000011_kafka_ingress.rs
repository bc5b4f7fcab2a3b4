//! Requests taken from Kafka (`ONEX_INPUT_TOPIC`): `ingress_requests` holds
//! one row per applied request, keyed by its idempotency key (or its topic,
//! partition and offset), written in the transaction that queues its
//! response, so a redelivered record is recognised and skipped. Outbox rows
//! gain record headers (a response's correlation id and content type, a dead
//! letter's reason), and a workflow started from Kafka keeps where its final
//! answer goes (`reply_to`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum IngressRequests {
    Table,
    RequestKey,
    Kind,
    Topic,
    Partition,
    Offset,
    CorrelationId,
    WorkflowId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum EventOutbox {
    Table,
    Headers,
}

#[derive(DeriveIden)]
enum WorkflowExecutions {
    Table,
    ReplyTo,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IngressRequests::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(IngressRequests::RequestKey).string_len(400).not_null().primary_key())
                    .col(ColumnDef::new(IngressRequests::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(IngressRequests::Topic).string_len(255).not_null())
                    .col(ColumnDef::new(IngressRequests::Partition).integer().not_null())
                    .col(ColumnDef::new(IngressRequests::Offset).big_integer().not_null())
                    .col(ColumnDef::new(IngressRequests::CorrelationId).string_len(255).null())
                    .col(ColumnDef::new(IngressRequests::WorkflowId).string_len(64).null())
                    .col(ColumnDef::new(IngressRequests::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_ingress_requests_created_at")
                    .table(IngressRequests::Table)
                    .col(IngressRequests::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EventOutbox::Table)
                    .add_column(ColumnDef::new(EventOutbox::Headers).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WorkflowExecutions::Table)
                    .add_column(ColumnDef::new(WorkflowExecutions::ReplyTo).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(WorkflowExecutions::Table).drop_column(WorkflowExecutions::ReplyTo).to_owned(),
            )
            .await?;
        manager
            .alter_table(Table::alter().table(EventOutbox::Table).drop_column(EventOutbox::Headers).to_owned())
            .await?;
        manager.drop_table(Table::drop().table(IngressRequests::Table).to_owned()).await
    }
}
