//! The `ingress_requests` row: one request read from Kafka and applied
//! (schema owned by `omninode-migrations`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ingress_requests")]
pub struct Model {
    /// `key:<kind>:<namespace>:<idempotency key>` or `pos:<topic>/<partition>/<offset>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_key: String,
    pub kind: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub correlation_id: Option<String>,
    pub workflow_id: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
