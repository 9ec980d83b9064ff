//! Stored workflows: the canonical document with a version that every update raises.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;
use walkoff_schema::Workflow;

use super::roles::{forget_object, write_object_roles};
use super::{from_micros, is_unique_violation, micros, name_taken, Store, StoreError, StoreResult};
use crate::rbac::{AccessLevel, ObjectAccess};

#[derive(Debug, Clone)]
pub struct WorkflowRow {
    pub id: String,
    pub name: String,
    pub version: i64,
    pub workflow: Workflow,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub access_level: AccessLevel,
    pub creator_id: Option<String>,
}

/// Who is listing: what decides which objects they may read.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user_id: String,
    /// Their role ids, framed (`crate::store::framed`).
    pub roles: String,
    /// Whether their roles grant reading the resource (what `Everyone` objects ask).
    pub everyone: bool,
    /// super_admin and internal roles read everything.
    pub unrestricted: bool,
}

#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    /// Part of the name, any case.
    pub search: Option<String>,
}

/// A statement reading whole workflow rows (the columns `workflow` maps), then `rest`.
macro_rules! select_workflows {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, version, document, created_by, created_at, updated_at, ",
            "access_level, creator_id FROM workflows ",
            $rest
        )
    };
}

fn workflow(row: &AnyRow) -> StoreResult<WorkflowRow> {
    let document: String = row.try_get("document")?;
    Ok(WorkflowRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        workflow: serde_json::from_str(&document).map_err(StoreError::corrupt)?,
        created_by: row.try_get("created_by")?,
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
        access_level: AccessLevel::from_i64(row.try_get("access_level")?),
        creator_id: row.try_get("creator_id")?,
    })
}

fn document(workflow: &Workflow) -> StoreResult<String> {
    serde_json::to_string(workflow).map_err(StoreError::corrupt)
}

/// What an update found.
#[derive(Debug)]
pub enum Updated {
    Done(Box<WorkflowRow>),
    NotFound,
    /// Someone else saved first: the version now stored.
    Stale(i64),
}

impl Store {
    /// Store a new workflow (version 1) with its permissions; its id and name must be free.
    pub async fn insert_workflow(
        &self,
        workflow: &Workflow,
        created_by: Option<&str>,
        access: &ObjectAccess,
    ) -> StoreResult<WorkflowRow> {
        let _turn = self.write_turn().await;
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "INSERT INTO workflows (id, name, version, document, created_by, created_at, updated_at, \
             access_level, creator_id) VALUES ($1, $2, 1, $3, $4, $5, $5, $6, $7)",
        )
        .bind(&workflow.id)
        .bind(&workflow.name)
        .bind(document(workflow)?)
        .bind(created_by)
        .bind(micros(now))
        .bind(access.level as i64)
        .bind(access.creator_id.as_deref())
        .execute(&mut *tx)
        .await;
        if let Err(e) = result {
            drop(tx);
            if is_unique_violation(&e) && self.workflow(&workflow.id).await?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a workflow with id '{}' exists",
                    workflow.id
                )));
            }
            return Err(name_taken("workflow", &workflow.name)(e));
        }
        write_object_roles(&mut tx, &workflow.id, access).await?;
        tx.commit().await?;
        Ok(WorkflowRow {
            id: workflow.id.clone(),
            name: workflow.name.clone(),
            version: 1,
            workflow: workflow.clone(),
            created_by: created_by.map(str::to_string),
            created_at: truncate_micros(now),
            updated_at: truncate_micros(now),
            access_level: access.level,
            creator_id: access.creator_id.clone(),
        })
    }

    pub async fn workflow(&self, id: &str) -> StoreResult<Option<WorkflowRow>> {
        sqlx::query(select_workflows!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(workflow)
            .transpose()
    }

    pub async fn workflow_name_taken(&self, name: &str) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT id FROM workflows WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Replace a workflow's document (and its permissions, when given) when its stored version
    /// is `expected` (any version when `None`); the version goes up by one.
    pub async fn update_workflow(
        &self,
        workflow: &Workflow,
        expected: Option<i64>,
        access: Option<&ObjectAccess>,
    ) -> StoreResult<Updated> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query("SELECT version FROM workflows WHERE id = $1")
            .bind(&workflow.id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current else {
            return Ok(Updated::NotFound);
        };
        let version: i64 = current.try_get("version")?;
        if expected.is_some_and(|e| e != version) {
            return Ok(Updated::Stale(version));
        }
        let now = Utc::now();
        let changed = sqlx::query(
            "UPDATE workflows SET name = $1, document = $2, version = version + 1, updated_at = $3 \
             WHERE id = $4 AND version = $5",
        )
        .bind(&workflow.name)
        .bind(document(workflow)?)
        .bind(micros(now))
        .bind(&workflow.id)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(name_taken("workflow", &workflow.name))?;
        if changed.rows_affected() != 1 {
            return Ok(Updated::Stale(version + 1));
        }
        if let Some(access) = access {
            sqlx::query("UPDATE workflows SET access_level = $1 WHERE id = $2")
                .bind(access.level as i64)
                .bind(&workflow.id)
                .execute(&mut *tx)
                .await?;
            write_object_roles(&mut tx, &workflow.id, access).await?;
        }
        tx.commit().await?;
        Ok(match self.workflow(&workflow.id).await? {
            Some(row) => Updated::Done(Box::new(row)),
            None => Updated::NotFound,
        })
    }

    pub async fn delete_workflow(&self, id: &str) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM workflows WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        forget_object(&mut tx, id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Up to `limit` workflows `viewer` may read after `after` (a name), by name.
    pub async fn workflows(
        &self,
        filter: &WorkflowFilter,
        viewer: &Viewer,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<WorkflowRow>> {
        let pattern = filter
            .search
            .as_deref()
            .map(|s| format!("%{}%", escape_like(&s.to_lowercase())));
        let rows = sqlx::query(select_workflows!(
            "WHERE (CAST($1 AS TEXT) IS NULL OR name > $1) \
             AND (CAST($2 AS TEXT) IS NULL OR LOWER(name) LIKE $2 ESCAPE '\\') \
             AND ($4 = 1 OR creator_id = $5 OR (access_level = 1 AND $6 = 1) \
                  OR (access_level = 2 AND EXISTS (SELECT 1 FROM object_permissions p \
                      WHERE p.object_id = workflows.id AND p.can_read = 1 \
                      AND $7 LIKE '%,' || p.role_id || ',%'))) \
             ORDER BY name LIMIT $3"
        ))
        .bind(after)
        .bind(pattern)
        .bind(limit)
        .bind(i64::from(viewer.unrestricted))
        .bind(&viewer.user_id)
        .bind(i64::from(viewer.everyone))
        .bind(&viewer.roles)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(workflow).collect()
    }
}

/// `LIKE` wildcards in user text match themselves.
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// What a time reads back as from the store.
pub fn truncate_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    from_micros(micros(at))
}
