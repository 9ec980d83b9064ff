//! Users and their tokens.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{from_micros, micros, name_taken, Backend, Store, StoreError, StoreResult};
use crate::rbac::{Grants, Operation, Resource};

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub user_id: String,
    pub family: String,
    pub kind: String,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

fn user(row: &AnyRow) -> StoreResult<UserRow> {
    let roles: String = row.try_get("roles")?;
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        roles: serde_json::from_str(&roles).map_err(StoreError::corrupt)?,
        active: row.try_get::<i64, _>("active")? != 0,
        created_at: from_micros(row.try_get("created_at")?),
    })
}

impl Store {
    pub async fn user_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    pub async fn insert_user(&self, user: &UserRow) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let roles = serde_json::to_string(&user.roles).map_err(StoreError::corrupt)?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, roles, active, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(roles)
        .bind(i64::from(user.active))
        .bind(micros(user.created_at))
        .execute(&self.pool)
        .await
        .map_err(name_taken("user", &user.username))?;
        Ok(())
    }

    pub async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRow>> {
        const SQL: &str = "SELECT id, username, password_hash, roles, active, created_at \
                           FROM users WHERE username = $1";
        sqlx::query(SQL)
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user)
            .transpose()
    }

    /// Every user, by name.
    pub async fn users(&self) -> StoreResult<Vec<UserRow>> {
        sqlx::query(
            "SELECT id, username, password_hash, roles, active, created_at FROM users ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(user)
        .collect()
    }

    /// Replace a user's name, password hash, roles and active flag, revoking every login of
    /// theirs; refused when no active user able to manage users would remain. Returns the
    /// token hashes revoked, or `None` when there is no such user.
    pub async fn update_user(&self, changed: &UserRow) -> StoreResult<Option<Vec<String>>> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        self.lock_users(&mut tx).await?;
        let roles = serde_json::to_string(&changed.roles).map_err(StoreError::corrupt)?;
        let done = sqlx::query(
            "UPDATE users SET username = $1, password_hash = $2, roles = $3, active = $4 WHERE id = $5",
        )
        .bind(&changed.username)
        .bind(&changed.password_hash)
        .bind(roles)
        .bind(i64::from(changed.active))
        .bind(&changed.id)
        .execute(&mut *tx)
        .await
        .map_err(name_taken("user", &changed.username))?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        a_user_manager_remains(&mut tx).await?;
        let revoked = revoke_user_tokens(&mut tx, &changed.id).await?;
        tx.commit().await?;
        Ok(Some(revoked))
    }

    /// Delete a user (their tokens go with them); refused when no active user able to manage
    /// users would remain. Returns the token hashes that stop working, or `None` when there is
    /// no such user.
    pub async fn delete_user(&self, id: &str) -> StoreResult<Option<Vec<String>>> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        self.lock_users(&mut tx).await?;
        let revoked = revoke_user_tokens(&mut tx, id).await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        a_user_manager_remains(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(revoked))
    }

    /// Changes that must leave a user manager hold every user row until they commit, so two of
    /// them (two admins deleting each other) cannot both pass the check. SQLite writes one
    /// transaction at a time already.
    async fn lock_users(&self, tx: &mut Transaction<'static, Any>) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM users FOR UPDATE")
                .fetch_all(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Revoke every login of a user; the token hashes revoked.
    pub async fn revoke_user(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let revoked = revoke_user_tokens(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<UserRow>> {
        const SQL: &str = "SELECT id, username, password_hash, roles, active, created_at \
                           FROM users WHERE id = $1";
        sqlx::query(SQL)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user)
            .transpose()
    }

    /// Store a pair of tokens (by their hashes) in one transaction.
    pub async fn insert_tokens(&self, tokens: &[(String, TokenRow)]) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        for (hash, token) in tokens {
            sqlx::query(
                "INSERT INTO tokens (token_hash, user_id, family, kind, expires_at, revoked) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(hash)
            .bind(&token.user_id)
            .bind(&token.family)
            .bind(&token.kind)
            .bind(micros(token.expires_at))
            .bind(i64::from(token.revoked))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The user `user_id` when their login `family` still has an unrevoked refresh token (one
    /// read: what checking a new access token costs).
    pub async fn user_of_live_login(
        &self,
        user_id: &str,
        family: &str,
    ) -> StoreResult<Option<UserRow>> {
        sqlx::query(
            "SELECT id, username, password_hash, roles, active, created_at FROM users u \
             WHERE u.id = $1 AND EXISTS (SELECT 1 FROM tokens t WHERE t.family = $2 \
             AND t.user_id = u.id AND t.revoked = 0 AND t.expires_at > $3)",
        )
        .bind(user_id)
        .bind(family)
        .bind(micros(Utc::now()))
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(user)
        .transpose()
    }

    pub async fn token(&self, hash: &str) -> StoreResult<Option<TokenRow>> {
        let row = sqlx::query(
            "SELECT user_id, family, kind, expires_at, revoked FROM tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(TokenRow {
                user_id: row.try_get("user_id")?,
                family: row.try_get("family")?,
                kind: row.try_get("kind")?,
                expires_at: from_micros(row.try_get("expires_at")?),
                revoked: row.try_get::<i64, _>("revoked")? != 0,
            })
        })
        .transpose()
    }

    /// Revoke every token of a login (its family); returns the hashes revoked.
    pub async fn revoke_family(&self, family: &str) -> StoreResult<Vec<String>> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        let hashes = sqlx::query("SELECT token_hash FROM tokens WHERE family = $1 AND revoked = 0")
            .bind(family)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get::<String, _>("token_hash"))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE family = $1")
            .bind(family)
            .execute(&mut *tx)
            .await?;
        // Expired tokens are of no use to anyone: the revocation sweeps them away.
        sqlx::query("DELETE FROM tokens WHERE expires_at < $1")
            .bind(micros(Utc::now()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(hashes)
    }

    /// Mark one refresh token used (revoked), unless it already was; true when this call did it,
    /// so two refreshes racing with the same token cannot both succeed.
    pub async fn use_refresh_token(&self, hash: &str) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE tokens SET revoked = 1 WHERE token_hash = $1 AND revoked = 0 AND kind = 'refresh'",
        )
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Users holding the role `role_id`, with all their roles.
pub(super) async fn users_holding(
    tx: &mut Transaction<'static, Any>,
    role_id: &str,
) -> StoreResult<Vec<(String, Vec<String>)>> {
    let pattern = format!("%\"{role_id}\"%");
    let rows = sqlx::query("SELECT id, roles FROM users WHERE roles LIKE $1")
        .bind(pattern)
        .fetch_all(&mut **tx)
        .await?;
    let mut holders = Vec::new();
    for row in rows {
        let roles: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("roles")?)
            .map_err(StoreError::corrupt)?;
        if roles.iter().any(|r| r == role_id) {
            holders.push((row.try_get("id")?, roles));
        }
    }
    Ok(holders)
}

pub(super) async fn set_roles(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    roles: &[String],
) -> StoreResult<()> {
    let roles = serde_json::to_string(roles).map_err(StoreError::corrupt)?;
    sqlx::query("UPDATE users SET roles = $1 WHERE id = $2")
        .bind(roles)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn revoke_user_tokens(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
) -> StoreResult<Vec<String>> {
    let hashes = sqlx::query("SELECT token_hash FROM tokens WHERE user_id = $1 AND revoked = 0")
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|row| row.try_get::<String, _>("token_hash"))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query("UPDATE tokens SET revoked = 1 WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(hashes)
}

/// Refuses (CONFLICT) unless some active user's roles still grant managing users: the last
/// account able to give others their rights cannot be removed, deactivated or demoted.
pub(super) async fn a_user_manager_remains(tx: &mut Transaction<'static, Any>) -> StoreResult<()> {
    let roles = sqlx::query("SELECT id, resources FROM roles")
        .fetch_all(&mut **tx)
        .await?;
    let mut managing = std::collections::BTreeSet::new();
    for row in roles {
        let grants: Grants = serde_json::from_str(&row.try_get::<String, _>("resources")?)
            .map_err(StoreError::corrupt)?;
        if grants.allows(Resource::Users, Operation::Update) {
            managing.insert(row.try_get::<String, _>("id")?);
        }
    }
    let users = sqlx::query("SELECT roles FROM users WHERE active = 1")
        .fetch_all(&mut **tx)
        .await?;
    for row in users {
        let held: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("roles")?)
            .map_err(StoreError::corrupt)?;
        if held.iter().any(|r| managing.contains(r)) {
            return Ok(());
        }
    }
    Err(StoreError::Conflict(
        "this would leave no active user able to manage users (users: update); give that right to another user first".into(),
    ))
}
