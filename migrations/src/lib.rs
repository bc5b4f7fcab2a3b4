//! The schema of every OmniNode Bridge table, as ordered sea-orm migrations.
//! Services never create tables themselves; they run [`Migrator`] at start-up
//! (or `omninode migrate` runs it once, before the services start).

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_metadata_stamps;
mod m20261123_000002_workflow_executions;
mod m20261123_000003_event_outbox;
mod m20261123_000004_bridge_states;
mod m20261123_000005_hash_columns_varchar;
mod m20261123_000006_event_outbox_pending_index;
mod m20261126_000007_workflow_leases;
mod m20261126_000008_workflow_definitions;
mod m20261127_000009_workflow_runs;
mod m20261127_000010_trace_context;
mod m20261127_000011_kafka_ingress;

/// Applies the migrations in order; each is recorded in `seaql_migrations`.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_metadata_stamps::Migration),
            Box::new(m20261123_000002_workflow_executions::Migration),
            Box::new(m20261123_000003_event_outbox::Migration),
            Box::new(m20261123_000004_bridge_states::Migration),
            Box::new(m20261123_000005_hash_columns_varchar::Migration),
            Box::new(m20261123_000006_event_outbox_pending_index::Migration),
            Box::new(m20261126_000007_workflow_leases::Migration),
            Box::new(m20261126_000008_workflow_definitions::Migration),
            Box::new(m20261127_000009_workflow_runs::Migration),
            Box::new(m20261127_000010_trace_context::Migration),
            Box::new(m20261127_000011_kafka_ingress::Migration),
        ]
    }
}
