//! `metadata_stamps`: one stamp record per (namespace, content hash).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MetadataStamps::Table)
                    .if_not_exists()
                    // UUID v7 text: time ordered, so it doubles as the paging key.
                    .col(ColumnDef::new(MetadataStamps::Id).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(MetadataStamps::Namespace).string_len(128).not_null())
                    .col(ColumnDef::new(MetadataStamps::FileHash).char_len(64).not_null())
                    .col(ColumnDef::new(MetadataStamps::FilePath).text().not_null())
                    .col(ColumnDef::new(MetadataStamps::FileSize).big_integer().not_null())
                    .col(ColumnDef::new(MetadataStamps::ContentType).string_len(255).not_null())
                    .col(ColumnDef::new(MetadataStamps::StampData).json().not_null())
                    .col(ColumnDef::new(MetadataStamps::ProtocolVersion).string_len(16).not_null().default("1.0"))
                    .col(ColumnDef::new(MetadataStamps::Version).integer().not_null().default(1))
                    .col(ColumnDef::new(MetadataStamps::OpId).string_len(255).null())
                    .col(ColumnDef::new(MetadataStamps::MetadataVersion).string_len(16).not_null().default("0.1"))
                    .col(ColumnDef::new(MetadataStamps::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(MetadataStamps::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_metadata_stamps_namespace_file_hash")
                    .table(MetadataStamps::Table)
                    .col(MetadataStamps::Namespace)
                    .col(MetadataStamps::FileHash)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Idempotency keys are unique per namespace; NULLs (no key) never collide.
        manager
            .create_index(
                Index::create()
                    .name("ux_metadata_stamps_namespace_op_id")
                    .table(MetadataStamps::Table)
                    .col(MetadataStamps::Namespace)
                    .col(MetadataStamps::OpId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Paging a namespace in id order.
        manager
            .create_index(
                Index::create()
                    .name("ix_metadata_stamps_namespace_id")
                    .table(MetadataStamps::Table)
                    .col(MetadataStamps::Namespace)
                    .col(MetadataStamps::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(MetadataStamps::Table).if_exists().to_owned()).await
    }
}

#[derive(DeriveIden)]
enum MetadataStamps {
    Table,
    Id,
    Namespace,
    FileHash,
    FilePath,
    FileSize,
    ContentType,
    StampData,
    ProtocolVersion,
    Version,
    OpId,
    MetadataVersion,
    CreatedAt,
    UpdatedAt,
}
