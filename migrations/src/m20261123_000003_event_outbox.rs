//! `event_outbox`: events written in the same transaction as the change they
//! describe, published by the outbox relay in `id` order.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventOutbox::Table)
                    .if_not_exists()
                    // Commit order is publish order.
                    .col(ColumnDef::new(EventOutbox::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(EventOutbox::EventId).string_len(36).not_null().unique_key())
                    .col(ColumnDef::new(EventOutbox::Topic).string_len(255).not_null())
                    .col(ColumnDef::new(EventOutbox::PartitionKey).string_len(255).not_null())
                    .col(ColumnDef::new(EventOutbox::EventType).string_len(64).not_null())
                    .col(ColumnDef::new(EventOutbox::CorrelationId).string_len(255).null())
                    // The encoded omninode.events.v1.EventEnvelope.
                    .col(ColumnDef::new(EventOutbox::Payload).blob().not_null())
                    .col(ColumnDef::new(EventOutbox::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(EventOutbox::PublishedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(EventOutbox::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(EventOutbox::LastError).text().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_event_outbox_published_at_id")
                    .table(EventOutbox::Table)
                    .col(EventOutbox::PublishedAt)
                    .col(EventOutbox::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(EventOutbox::Table).if_exists().to_owned()).await
    }
}

#[derive(DeriveIden)]
enum EventOutbox {
    Table,
    Id,
    EventId,
    Topic,
    PartitionKey,
    EventType,
    CorrelationId,
    Payload,
    CreatedAt,
    PublishedAt,
    Attempts,
    LastError,
}
