//! Roles, and the per-object permissions that name them.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{name_taken, Store, StoreError, StoreResult};
use crate::rbac::{default_roles, AccessLevel, Grants, ObjectAccess, ObjectOperations};

#[derive(Debug, Clone, PartialEq)]
pub struct RoleRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub grants: Grants,
    /// One of the six default roles: never changed or deleted through the API.
    pub builtin: bool,
}

fn role(row: &AnyRow) -> StoreResult<RoleRow> {
    let resources: String = row.try_get("resources")?;
    Ok(RoleRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        grants: serde_json::from_str(&resources).map_err(StoreError::corrupt)?,
        builtin: row.try_get::<i64, _>("builtin")? != 0,
    })
}

fn grants_json(grants: &Grants) -> StoreResult<String> {
    serde_json::to_string(grants).map_err(StoreError::corrupt)
}

/// Role ids as one comma-framed text (`,a,b,`), so a statement matches any of them with
/// `LIKE '%,' || role_id || ',%'` and stays one text for any number of roles.
pub fn framed(ids: &[String]) -> String {
    format!(",{},", ids.join(","))
}

impl Store {
    /// Write the default roles as this version defines them (a newer version may grant them
    /// more); custom roles are left alone.
    pub async fn seed_default_roles(&self) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        for default in default_roles() {
            sqlx::query(
                "INSERT INTO roles (id, name, description, resources, builtin) \
                 VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 description = excluded.description, resources = excluded.resources, builtin = 1",
            )
            .bind(default.id)
            .bind(default.name)
            .bind(default.description)
            .bind(grants_json(&default.grants)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn roles(&self) -> StoreResult<Vec<RoleRow>> {
        sqlx::query("SELECT id, name, description, resources, builtin FROM roles ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(role)
            .collect()
    }

    pub async fn insert_role(&self, new: &RoleRow) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO roles (id, name, description, resources, builtin) VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(&new.id)
        .bind(&new.name)
        .bind(&new.description)
        .bind(grants_json(&new.grants)?)
        .execute(&self.pool)
        .await
        .map_err(name_taken("role", &new.name))?;
        Ok(())
    }

    /// Replace a custom role's name, description and grants; false when there is no such
    /// custom role.
    pub async fn update_role(&self, changed: &RoleRow) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE roles SET name = $1, description = $2, resources = $3 WHERE id = $4 AND builtin = 0",
        )
        .bind(&changed.name)
        .bind(&changed.description)
        .bind(grants_json(&changed.grants)?)
        .bind(&changed.id)
        .execute(&mut *tx)
        .await
        .map_err(name_taken("role", &changed.name))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        super::users::a_user_manager_remains(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Delete a custom role: users stop holding it and objects stop naming it, in one
    /// transaction. Returns the users who held it.
    pub async fn delete_role(&self, id: &str) -> StoreResult<Option<Vec<String>>> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM roles WHERE id = $1 AND builtin = 0")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let holders = super::users::users_holding(&mut tx, id).await?;
        for (user_id, mut roles) in holders.clone() {
            roles.retain(|r| r != id);
            super::users::set_roles(&mut tx, &user_id, &roles).await?;
        }
        sqlx::query("DELETE FROM object_permissions WHERE role_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        super::users::a_user_manager_remains(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(holders.into_iter().map(|(user, _)| user).collect()))
    }

    /// The permissions of one object, or `None` when it has no row in `table`.
    pub async fn object_access(&self, table: Table, id: &str) -> StoreResult<Option<ObjectAccess>> {
        let row = sqlx::query(table.access_sql())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let level = AccessLevel::from_i64(row.try_get("access_level")?);
        let creator_id: Option<String> = row.try_get("creator_id")?;
        let mut roles = BTreeMap::new();
        if level == AccessLevel::RoleBased {
            let rows = sqlx::query(
                "SELECT role_id, can_read, can_update, can_delete, can_execute \
                 FROM object_permissions WHERE object_id = $1",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let flag =
                    |column: &str| -> StoreResult<bool> { Ok(row.try_get::<i64, _>(column)? != 0) };
                roles.insert(
                    row.try_get("role_id")?,
                    ObjectOperations {
                        read: flag("can_read")?,
                        update: flag("can_update")?,
                        delete: flag("can_delete")?,
                        execute: flag("can_execute")?,
                    },
                );
            }
        }
        Ok(Some(ObjectAccess {
            level,
            creator_id,
            roles,
        }))
    }
}

/// The tables whose rows carry per-object permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Workflows,
    Globals,
}

impl Table {
    fn access_sql(self) -> &'static str {
        match self {
            Table::Workflows => "SELECT access_level, creator_id FROM workflows WHERE id = $1",
            Table::Globals => "SELECT access_level, creator_id FROM globals WHERE id = $1",
        }
    }
}

/// Replace the role rows of one object's permissions, inside the transaction that writes it.
pub(super) async fn write_object_roles(
    tx: &mut Transaction<'static, Any>,
    object_id: &str,
    access: &ObjectAccess,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM object_permissions WHERE object_id = $1")
        .bind(object_id)
        .execute(&mut **tx)
        .await?;
    if access.level != AccessLevel::RoleBased {
        return Ok(());
    }
    for (role_id, ops) in &access.roles {
        sqlx::query(
            "INSERT INTO object_permissions (object_id, role_id, can_read, can_update, can_delete, can_execute) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(object_id)
        .bind(role_id)
        .bind(i64::from(ops.read))
        .bind(i64::from(ops.update))
        .bind(i64::from(ops.delete))
        .bind(i64::from(ops.execute))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Drop the role rows of a deleted object.
pub(super) async fn forget_object(
    tx: &mut Transaction<'static, Any>,
    object_id: &str,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM object_permissions WHERE object_id = $1")
        .bind(object_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
