//! What an administrator sets through the API (`settings`, `updateSettings`).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError, StoreResult};

/// The settings, each with WALKOFF's default where WALKOFF had one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Settings {
    /// How long an access token lives (WALKOFF's `access_token_life_mins`).
    pub access_token_lifetime_minutes: u32,
    /// How long a refresh token lives (WALKOFF's `refresh_token_life_days`).
    pub refresh_token_lifetime_days: u32,
    /// Failed logins allowed per minute, for one username and for one client address each.
    pub login_attempts_per_minute: u32,
    /// Finished executions older than this many days are deleted with their events; 0 keeps
    /// them for ever.
    pub execution_retention_days: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            access_token_lifetime_minutes: 15,
            refresh_token_lifetime_days: 90,
            login_attempts_per_minute: 10,
            execution_retention_days: 0,
        }
    }
}

impl Settings {
    /// Every value out of its range, by field name.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut range = |field: &str, value: u32, low: u32, high: u32| {
            if value < low || value > high {
                problems.push(format!("{field}: {value} is not between {low} and {high}"));
            }
        };
        range(
            "accessTokenLifetimeMinutes",
            self.access_token_lifetime_minutes,
            1,
            24 * 60,
        );
        range(
            "refreshTokenLifetimeDays",
            self.refresh_token_lifetime_days,
            1,
            3650,
        );
        range(
            "loginAttemptsPerMinute",
            self.login_attempts_per_minute,
            1,
            10_000,
        );
        range(
            "executionRetentionDays",
            self.execution_retention_days,
            0,
            36_500,
        );
        if u64::from(self.access_token_lifetime_minutes)
            >= u64::from(self.refresh_token_lifetime_days) * 24 * 60
        {
            problems.push(
                "accessTokenLifetimeMinutes: an access token must live shorter than a refresh token"
                    .into(),
            );
        }
        problems
    }
}

const NAME: &str = "settings";
const KEY_CHECK: &str = "key check";

impl Store {
    /// The stored settings, or the defaults when none were ever stored.
    pub async fn settings(&self) -> StoreResult<Settings> {
        let row = sqlx::query("SELECT document FROM settings WHERE name = $1")
            .bind(NAME)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(Settings::default()),
            Some(row) => serde_json::from_str(&row.try_get::<String, _>("document")?)
                .map_err(StoreError::corrupt),
        }
    }

    /// A value sealed with the master key the store's globals are sealed with, if any.
    pub async fn key_check(&self) -> StoreResult<Option<serde_json::Value>> {
        let row = sqlx::query("SELECT document FROM settings WHERE name = $1")
            .bind(KEY_CHECK)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            serde_json::from_str(&row.try_get::<String, _>("document")?)
                .map_err(StoreError::corrupt)
        })
        .transpose()
    }

    pub async fn save_key_check(&self, sealed: &serde_json::Value) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO settings (name, document) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET document = excluded.document",
        )
        .bind(KEY_CHECK)
        .bind(sealed.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn save_settings(&self, settings: &Settings) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let document = serde_json::to_string(settings).map_err(StoreError::corrupt)?;
        sqlx::query(
            "INSERT INTO settings (name, document) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET document = excluded.document",
        )
        .bind(NAME)
        .bind(document)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
