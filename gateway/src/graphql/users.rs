//! Signing in and out, and who the caller is. (Managing users and roles comes with the
//! security work; the seam is `crate::auth::authorize`.)

use async_graphql::{Context, Object, SimpleObject, ID};

use super::{credentials, gateway};
use async_graphql::Result as GqlResult;

#[derive(SimpleObject)]
pub struct AuthTokens {
    /// Sent as `Authorization: Bearer <accessToken>`; short-lived.
    pub access_token: String,
    /// Exchanged once for a new pair with `refresh`.
    pub refresh_token: String,
}

#[derive(SimpleObject)]
pub struct Me {
    pub id: ID,
    pub username: String,
    pub roles: Vec<String>,
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> GqlResult<Me> {
        let caller = credentials(ctx).caller()?;
        Ok(Me {
            id: ID(caller.user_id.clone()),
            username: caller.username.clone(),
            roles: caller.roles.clone(),
        })
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Exchange a username and password for tokens.
    async fn login(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> GqlResult<AuthTokens> {
        let tokens = gateway(ctx).auth.login(&username, &password).await?;
        Ok(AuthTokens {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        })
    }

    /// A new pair of tokens for a refresh token, which is used up: presenting it again ends the
    /// login it belongs to.
    async fn refresh(&self, ctx: &Context<'_>, refresh_token: String) -> GqlResult<AuthTokens> {
        let tokens = gateway(ctx).auth.refresh(&refresh_token).await?;
        Ok(AuthTokens {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        })
    }

    /// End the caller's login: its access and refresh tokens stop working at once.
    async fn logout(&self, ctx: &Context<'_>) -> GqlResult<bool> {
        let caller = credentials(ctx).caller()?;
        gateway(ctx).auth.logout(caller).await?;
        Ok(true)
    }
}
