//! The relay reads the oldest unpublished events over and over: a partial
//! index holds just those rows, so the read stays small however many
//! published events the table keeps (the full (published_at, id) index grew
//! with every event and every publish rewrote an entry of it).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_event_outbox_pending ON event_outbox (id) WHERE published_at IS NULL",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS ix_event_outbox_published_at_id").await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_event_outbox_published_at_id ON event_outbox (published_at, id)",
        )
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS ix_event_outbox_pending").await?;
        Ok(())
    }
}
