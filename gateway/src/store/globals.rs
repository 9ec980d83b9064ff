//! Global variables: their sealed values, with per-object permissions.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::roles::{forget_object, write_object_roles};
use super::{from_micros, micros, name_taken, Store, StoreError, StoreResult, Viewer};
use crate::rbac::{AccessLevel, ObjectAccess};

#[derive(Debug, Clone)]
pub struct GlobalRow {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The value, sealed: only executors and readers allowed to see it open it.
    pub sealed: Value,
    pub access_level: AccessLevel,
    pub creator_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! select_globals {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, description, sealed, access_level, creator_id, created_at, ",
            "updated_at FROM globals ",
            $rest
        )
    };
}

fn global(row: &AnyRow) -> StoreResult<GlobalRow> {
    let sealed: String = row.try_get("sealed")?;
    Ok(GlobalRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        sealed: serde_json::from_str(&sealed).map_err(StoreError::corrupt)?,
        access_level: AccessLevel::from_i64(row.try_get("access_level")?),
        creator_id: row.try_get("creator_id")?,
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}

impl Store {
    pub async fn insert_global(&self, row: &GlobalRow, access: &ObjectAccess) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO globals (id, name, description, sealed, access_level, creator_id, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(&row.description)
        .bind(row.sealed.to_string())
        .bind(access.level as i64)
        .bind(access.creator_id.as_deref())
        .bind(micros(row.created_at))
        .execute(&mut *tx)
        .await
        .map_err(name_taken("global", &row.name))?;
        write_object_roles(&mut tx, &row.id, access).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replace a global's name, description and sealed value (and permissions, when given);
    /// false when there is none.
    pub async fn update_global(
        &self,
        row: &GlobalRow,
        access: Option<&ObjectAccess>,
    ) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE globals SET name = $1, description = $2, sealed = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(&row.name)
        .bind(&row.description)
        .bind(row.sealed.to_string())
        .bind(micros(Utc::now()))
        .bind(&row.id)
        .execute(&mut *tx)
        .await
        .map_err(name_taken("global", &row.name))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(access) = access {
            sqlx::query("UPDATE globals SET access_level = $1 WHERE id = $2")
                .bind(access.level as i64)
                .bind(&row.id)
                .execute(&mut *tx)
                .await?;
            write_object_roles(&mut tx, &row.id, access).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn delete_global(&self, id: &str) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM globals WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        forget_object(&mut tx, id).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// A global by id, or else by name.
    pub async fn global(&self, id_or_name: &str) -> StoreResult<Option<GlobalRow>> {
        let row = sqlx::query(select_globals!("WHERE id = $1"))
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
        let row = match row {
            Some(row) => Some(row),
            None => {
                sqlx::query(select_globals!("WHERE name = $1"))
                    .bind(id_or_name)
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        row.as_ref().map(global).transpose()
    }

    /// The globals `viewer` may read or use (execute), by name.
    pub async fn globals(&self, viewer: &Viewer, may_use: bool) -> StoreResult<Vec<GlobalRow>> {
        sqlx::query(select_globals!(
            "WHERE ($1 = 1 OR creator_id = $2 OR (access_level = 1 AND $3 = 1) \
             OR (access_level = 2 AND EXISTS (SELECT 1 FROM object_permissions p \
                 WHERE p.object_id = globals.id AND (p.can_read = 1 OR p.can_execute = 1) \
                 AND $4 LIKE '%,' || p.role_id || ',%'))) ORDER BY name"
        ))
        .bind(i64::from(viewer.unrestricted))
        .bind(&viewer.user_id)
        .bind(i64::from(viewer.everyone || may_use))
        .bind(&viewer.roles)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(global)
        .collect()
    }

    /// Every global (for re-sealing them under a new key).
    pub async fn all_globals(&self) -> StoreResult<Vec<GlobalRow>> {
        sqlx::query(select_globals!("ORDER BY id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(global)
            .collect()
    }

    /// Replace every global's sealed value and the key check at once (`walkoff rotate-key`).
    pub async fn reseal(&self, sealed: &[(String, Value)], key_check: &Value) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        for (id, value) in sealed {
            sqlx::query("UPDATE globals SET sealed = $1 WHERE id = $2")
                .bind(value.to_string())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO settings (name, document) VALUES ('key check', $1) \
             ON CONFLICT (name) DO UPDATE SET document = excluded.document",
        )
        .bind(key_check.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
