//! Distributed tracing: the W3C trace context (`traceparent[;tracestate]`)
//! of the request that appended an outbox event (the relay sends it in the
//! Kafka record's headers) and of the request that started a workflow (its
//! steps are spans of that trace on whichever instance runs them). NULL when
//! tracing was off.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventOutbox {
    Table,
    TraceContext,
}

#[derive(DeriveIden)]
enum WorkflowExecutions {
    Table,
    TraceContext,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let column = |name: DynIden| ColumnDef::new(name).string_len(600).null().to_owned();
        manager
            .alter_table(
                Table::alter()
                    .table(EventOutbox::Table)
                    .add_column(column(EventOutbox::TraceContext.into_iden()))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WorkflowExecutions::Table)
                    .add_column(column(WorkflowExecutions::TraceContext.into_iden()))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(WorkflowExecutions::Table)
                    .drop_column(WorkflowExecutions::TraceContext)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(Table::alter().table(EventOutbox::Table).drop_column(EventOutbox::TraceContext).to_owned())
            .await
    }
}
