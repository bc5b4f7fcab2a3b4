//! Workflow definitions in `workflow_definitions`: each create is the next
//! version of its name; versions never change.

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
    sea_query::{Expr, ExprTrait},
};

use super::{
    WorkflowStore,
    definition_entity::{ActiveModel, Column, Entity, Model},
};
use crate::domain::definition::{Definition, StepDefinition};
use omninode_core::time::now;
use omninode_runtime::db::begin_write;

impl WorkflowStore {
    /// Stores `steps` as the next version of `name`.
    pub async fn create_definition(
        &self,
        name: &str,
        description: &str,
        steps: &[StepDefinition],
    ) -> Result<Definition, DbErr> {
        let json = serde_json::to_value(steps).map_err(|e| DbErr::Json(e.to_string()))?;
        // Two creates of one name at once: the second's insert conflicts; it takes the next number.
        for _ in 0..5 {
            let txn = begin_write(self.connection()).await?;
            let latest: Option<Option<i32>> = Entity::find()
                .select_only()
                .expr(Expr::col(Column::Version).max())
                .filter(Column::Name.eq(name))
                .into_tuple()
                .one(&txn)
                .await?;
            let version = latest.flatten().unwrap_or(0) + 1;
            let created_at = now();
            let row = ActiveModel {
                name: Set(name.to_owned()),
                version: Set(version),
                description: Set(description.to_owned()),
                definition: Set(json.clone()),
                created_at: Set(created_at),
            };
            match Entity::insert(row).exec_without_returning(&txn).await {
                Ok(_) => {
                    txn.commit().await?;
                    let version = u32::try_from(version).unwrap_or_default();
                    return Ok(Definition {
                        name: name.to_owned(),
                        version,
                        description: description.to_owned(),
                        steps: steps.to_vec(),
                        created_at,
                    });
                }
                Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                    txn.rollback().await?;
                }
                Err(err) => return Err(err),
            }
        }
        Err(DbErr::Custom(format!("definition {name} kept changing while being created")))
    }

    /// Version `version` of `name`, or its latest when `None`.
    pub async fn definition(&self, name: &str, version: Option<u32>) -> Result<Option<Definition>, DbErr> {
        let mut query = Entity::find().filter(Column::Name.eq(name));
        if let Some(version) = version {
            query = query.filter(Column::Version.eq(i32::try_from(version).unwrap_or(i32::MAX)));
        }
        query.order_by_desc(Column::Version).one(self.connection()).await?.map(from_model).transpose()
    }

    /// Up to `limit` definitions after `after` (name, version), by name then
    /// version; only `name`'s versions when given.
    pub async fn definitions(
        &self,
        name: Option<&str>,
        after: Option<(&str, u32)>,
        limit: u64,
    ) -> Result<Vec<Definition>, DbErr> {
        let mut query = Entity::find();
        if let Some(name) = name {
            query = query.filter(Column::Name.eq(name));
        }
        if let Some((name, version)) = after {
            let version = i32::try_from(version).unwrap_or(i32::MAX);
            query = query.filter(
                Condition::any()
                    .add(Column::Name.gt(name))
                    .add(Condition::all().add(Column::Name.eq(name)).add(Column::Version.gt(version))),
            );
        }
        let rows =
            query.order_by_asc(Column::Name).order_by_asc(Column::Version).limit(limit).all(self.connection()).await?;
        rows.into_iter().map(from_model).collect()
    }
}

fn from_model(m: Model) -> Result<Definition, DbErr> {
    let steps = serde_json::from_value(m.definition)
        .map_err(|e| DbErr::Json(format!("workflow_definitions {}@{}: {e}", m.name, m.version)))?;
    Ok(Definition {
        version: u32::try_from(m.version).unwrap_or_default(),
        name: m.name,
        description: m.description,
        steps,
        created_at: m.created_at,
    })
}
