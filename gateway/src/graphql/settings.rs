//! `settings` and `updateSettings`: token lifetimes, login throttling, retention of executions.

use async_graphql::{Context, InputObject, Object, SimpleObject};

use super::{allowed, gateway};
use crate::error::ApiError;
use crate::rbac::{Operation, Resource};
use crate::store::Settings;
use async_graphql::Result as GqlResult;

#[derive(SimpleObject)]
#[graphql(name = "Settings")]
pub struct SettingsObject {
    /// How long an access token lives (new tokens; 1 to 1440).
    pub access_token_lifetime_minutes: u32,
    /// How long a refresh token lives (new tokens; 1 to 3650).
    pub refresh_token_lifetime_days: u32,
    /// Login attempts allowed per minute for one username (and ten times as many for one
    /// client address); beyond them `login` answers RATE_LIMITED.
    pub login_attempts_per_minute: u32,
    /// Finished executions older than this many days are deleted, with their events, within
    /// the hour; 0 keeps them for ever.
    pub execution_retention_days: u32,
}

impl From<&Settings> for SettingsObject {
    fn from(s: &Settings) -> Self {
        SettingsObject {
            access_token_lifetime_minutes: s.access_token_lifetime_minutes,
            refresh_token_lifetime_days: s.refresh_token_lifetime_days,
            login_attempts_per_minute: s.login_attempts_per_minute,
            execution_retention_days: s.execution_retention_days,
        }
    }
}

/// What to change; what is left out stays.
#[derive(InputObject)]
pub struct SettingsInput {
    pub access_token_lifetime_minutes: Option<u32>,
    pub refresh_token_lifetime_days: Option<u32>,
    pub login_attempts_per_minute: Option<u32>,
    pub execution_retention_days: Option<u32>,
}

#[derive(Default)]
pub struct SettingsQuery;

#[Object]
impl SettingsQuery {
    async fn settings(&self, ctx: &Context<'_>) -> GqlResult<SettingsObject> {
        allowed(ctx, Resource::Settings, Operation::Read)?;
        let settings = gateway(ctx).auth.settings().await?;
        Ok(SettingsObject::from(settings.as_ref()))
    }
}

#[derive(Default)]
pub struct SettingsMutation;

#[Object]
impl SettingsMutation {
    /// Change settings: every value is checked first, and nothing changes unless all are in
    /// range. New lifetimes apply to tokens issued from now on.
    async fn update_settings(
        &self,
        ctx: &Context<'_>,
        input: SettingsInput,
    ) -> GqlResult<SettingsObject> {
        allowed(ctx, Resource::Settings, Operation::Update)?;
        let gateway = gateway(ctx);
        let mut settings = gateway.auth.settings().await?.as_ref().clone();
        if let Some(v) = input.access_token_lifetime_minutes {
            settings.access_token_lifetime_minutes = v;
        }
        if let Some(v) = input.refresh_token_lifetime_days {
            settings.refresh_token_lifetime_days = v;
        }
        if let Some(v) = input.login_attempts_per_minute {
            settings.login_attempts_per_minute = v;
        }
        if let Some(v) = input.execution_retention_days {
            settings.execution_retention_days = v;
        }
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(ApiError::BadUserInput(problems.join("; ")).into());
        }
        gateway.auth.save_settings(&settings).await?;
        Ok(SettingsObject::from(&settings))
    }
}
