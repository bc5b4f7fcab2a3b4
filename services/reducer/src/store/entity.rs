//! The `bridge_states` row (schema owned by `omninode-migrations`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "bridge_states")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub namespace: String,
    pub total_stamps: i64,
    pub total_size_bytes: i64,
    pub file_type_counts: Json,
    pub unique_workflows: i64,
    pub workflow_state_counts: Json,
    pub current_state: String,
    pub window_start: Option<DateTimeUtc>,
    pub window_end: Option<DateTimeUtc>,
    pub items_per_second: f64,
    pub last_aggregation_at: DateTimeUtc,
    pub version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
