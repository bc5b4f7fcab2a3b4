//! The `workflow_executions` row (schema owned by `omninode-migrations`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub namespace: String,
    pub workflow_type: String,
    pub current_state: String,
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub input_hash: String,
    pub input: Json,
    pub file_hash: Option<String>,
    pub stamp_id: Option<String>,
    pub stamped_content: Option<String>,
    pub error_message: Option<String>,
    pub steps: Json,
    pub transitions: Json,
    pub intelligence_data: Option<String>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub completed_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    pub execution_time_ms: Option<i64>,
    pub version: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub lease_attempt: i64,
    pub definition: Option<String>,
    pub step_cursor: i32,
    pub current_step: Option<String>,
    pub wake_at: Option<DateTimeUtc>,
    pub trace_context: Option<String>,
    pub reply_to: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
