//! The `metadata_stamps` row (schema owned by `omninode-migrations`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "metadata_stamps")]
pub struct Model {
    /// Stamp uid, UUID v7 text.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub namespace: String,
    pub file_hash: String,
    pub file_path: String,
    pub file_size: i64,
    pub content_type: String,
    /// `StampData` as JSON.
    pub stamp_data: Json,
    pub protocol_version: String,
    pub version: i32,
    /// The idempotency key the row was created with.
    pub op_id: Option<String>,
    pub metadata_version: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
