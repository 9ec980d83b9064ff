//! Signing in and out, who the caller is, and managing users and roles.

use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};

use super::{allowed, credentials, gateway, signed_in};
use crate::auth::{hash_password, Caller, ClientAddress};
use crate::error::{ApiError, ApiResult};
use crate::rbac::{
    default_roles, is_reserved_role, Grants, Operation, Resource, INTERNAL_USER_ROLE,
    SUPER_ADMIN_ROLE,
};
use crate::store::{RoleRow, UserRow};
use crate::Gateway;
use async_graphql::Result as GqlResult;

#[derive(SimpleObject)]
pub struct AuthTokens {
    /// Sent as `Authorization: Bearer <accessToken>`; short-lived.
    pub access_token: String,
    /// Exchanged once for a new pair with `refresh`.
    pub refresh_token: String,
}

/// What a role grants on one resource.
#[derive(SimpleObject, Clone)]
pub struct ResourceGrant {
    /// WALKOFF's resource name, e.g. `workflows`.
    pub name: String,
    pub operations: Vec<String>,
}

fn resource_grants(grants: &Grants) -> Vec<ResourceGrant> {
    grants
        .0
        .iter()
        .map(|(resource, ops)| ResourceGrant {
            name: resource.as_str().to_string(),
            operations: ops.iter().map(|o| o.as_str().to_string()).collect(),
        })
        .collect()
}

pub struct RoleObject(RoleRow);

#[Object(name = "Role")]
impl RoleObject {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// What it grants, by resource.
    async fn resources(&self) -> Vec<ResourceGrant> {
        resource_grants(&self.0.grants)
    }
    /// One of the default roles, which cannot be changed or deleted.
    async fn builtin(&self) -> bool {
        self.0.builtin
    }
}

/// The roles with these ids (a role deleted meanwhile is left out).
async fn role_objects(ctx: &Context<'_>, ids: &[String]) -> ApiResult<Vec<RoleObject>> {
    let known = gateway(ctx).auth.roles().await?;
    Ok(ids
        .iter()
        .filter_map(|id| known.get(id).cloned().map(RoleObject))
        .collect())
}

pub struct UserObject(UserRow);

#[Object(name = "User")]
impl UserObject {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn username(&self) -> &str {
        &self.0.username
    }
    async fn active(&self) -> bool {
        self.0.active
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn roles(&self, ctx: &Context<'_>) -> GqlResult<Vec<RoleObject>> {
        Ok(role_objects(ctx, &self.0.roles).await?)
    }
}

/// The signed-in user, with what their roles grant together (what a UI builds its menus
/// from).
pub struct Me(Caller);

#[Object]
impl Me {
    async fn id(&self) -> ID {
        ID(self.0.user_id.clone())
    }
    async fn username(&self) -> &str {
        &self.0.username
    }
    async fn roles(&self, ctx: &Context<'_>) -> GqlResult<Vec<RoleObject>> {
        Ok(role_objects(ctx, &self.0.roles).await?)
    }
    /// Everything their roles grant together.
    async fn permissions(&self) -> Vec<ResourceGrant> {
        resource_grants(&self.0.grants)
    }
}

#[derive(InputObject)]
pub struct CreateUserInput {
    pub username: String,
    pub password: String,
    #[graphql(default)]
    pub role_ids: Vec<ID>,
    #[graphql(default = true)]
    pub active: bool,
}

/// What to change; what is left out stays as it is.
#[derive(InputObject)]
pub struct UpdateUserInput {
    pub username: Option<String>,
    /// A new password (an administrator's reset: the old one is not asked for).
    pub password: Option<String>,
    pub role_ids: Option<Vec<ID>>,
    pub active: Option<bool>,
}

#[derive(InputObject)]
pub struct UpdateMeInput {
    /// Always required, whatever changes.
    pub old_password: String,
    pub username: Option<String>,
    pub new_password: Option<String>,
}

#[derive(InputObject)]
pub struct ResourceGrantInput {
    pub name: String,
    pub operations: Vec<String>,
}

#[derive(InputObject)]
pub struct CreateRoleInput {
    pub name: String,
    #[graphql(default)]
    pub description: String,
    #[graphql(default)]
    pub resources: Vec<ResourceGrantInput>,
}

#[derive(InputObject)]
pub struct UpdateRoleInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub resources: Option<Vec<ResourceGrantInput>>,
}

/// A username: 1 to 64 characters, no control characters, no surrounding spaces.
fn checked_username(username: &str) -> ApiResult<String> {
    let trimmed = username.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 64 || trimmed != username {
        return Err(ApiError::BadUserInput(
            "username: 1 to 64 characters, without spaces around it".into(),
        ));
    }
    if username.chars().any(char::is_control) {
        return Err(ApiError::BadUserInput(
            "username: no control characters".into(),
        ));
    }
    Ok(username.to_string())
}

/// A password: at least 8 characters, at most 1024 bytes (argon2 hashes what it is given;
/// a megabyte of password would be an easy way to keep the server busy).
fn checked_password(field: &str, password: &str) -> ApiResult<()> {
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(ApiError::BadUserInput(format!(
            "{field}: at least 8 characters and at most 1024 bytes"
        )));
    }
    Ok(())
}

async fn hash(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Role ids a caller gives a user: each must exist, and none be reserved.
async fn checked_roles(gateway: &Gateway, ids: &[ID]) -> ApiResult<Vec<String>> {
    let known = gateway.auth.roles().await?;
    let mut roles = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if !known.contains_key(id.as_str()) {
            return Err(ApiError::BadUserInput(format!(
                "roleIds[{i}]: there is no role '{}'",
                id.as_str()
            )));
        }
        if is_reserved_role(id) {
            return Err(ApiError::Forbidden(format!(
                "roleIds[{i}]: the role '{}' cannot be given to anyone",
                known[id.as_str()].name
            )));
        }
        if !roles.iter().any(|r| r == id.as_str()) {
            roles.push(id.to_string());
        }
    }
    Ok(roles)
}

/// A user by id or username, hidden internal accounts excepted.
async fn find_user(gateway: &Gateway, id_or_name: &str) -> ApiResult<UserRow> {
    let by_id = gateway.store.user_by_id(id_or_name).await?;
    let found = match by_id {
        Some(user) => Some(user),
        None => gateway.store.user_by_name(id_or_name).await?,
    };
    match found {
        Some(user) if !user.roles.iter().any(|r| r == INTERNAL_USER_ROLE) => Ok(user),
        _ => Err(ApiError::not_found("user", id_or_name)),
    }
}

fn holds_super_admin(user: &UserRow) -> bool {
    user.roles.iter().any(|r| r == SUPER_ADMIN_ROLE)
}

/// A role by id or name; the hidden internal role is not found.
async fn find_role(gateway: &Gateway, id_or_name: &str) -> ApiResult<RoleRow> {
    let known = gateway.auth.roles().await?;
    known
        .values()
        .find(|r| (r.id == id_or_name || r.name == id_or_name) && r.id != INTERNAL_USER_ROLE)
        .cloned()
        .ok_or_else(|| ApiError::not_found("role", id_or_name))
}

/// A description: any text but a NUL character (which PostgreSQL cannot store).
pub(crate) fn checked_description(description: String) -> ApiResult<String> {
    if description.contains('\0') {
        return Err(ApiError::BadUserInput(
            "description: a NUL character (\\u0000) cannot be stored".into(),
        ));
    }
    Ok(description)
}

fn parse_grants(resources: &[ResourceGrantInput]) -> ApiResult<Grants> {
    Grants::parse(
        resources
            .iter()
            .map(|r| (r.name.as_str(), r.operations.as_slice())),
    )
    .map_err(|e| ApiError::BadUserInput(format!("resources: {e}")))
}

fn checked_role_name(name: &str) -> ApiResult<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadUserInput(
            "name: 1 to 64 characters, no control characters".into(),
        ));
    }
    Ok(trimmed.to_string())
}

/// After a user changed: their cached checks go, so the next request sees the change.
fn forget(gateway: &Gateway, user_id: &str) {
    gateway.auth.forget_user(user_id);
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> GqlResult<Me> {
        Ok(Me(signed_in(ctx)?.clone()))
    }

    /// Every user, by name.
    async fn users(&self, ctx: &Context<'_>) -> GqlResult<Vec<UserObject>> {
        allowed(ctx, Resource::Users, Operation::Read)?;
        Ok(gateway(ctx)
            .store
            .users()
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .filter(|u| !u.roles.iter().any(|r| r == INTERNAL_USER_ROLE))
            .map(UserObject)
            .collect())
    }

    /// A user by id or username.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> GqlResult<UserObject> {
        allowed(ctx, Resource::Users, Operation::Read)?;
        Ok(UserObject(find_user(gateway(ctx), &id).await?))
    }

    /// Every role, by name (the internal one is hidden).
    async fn roles(&self, ctx: &Context<'_>) -> GqlResult<Vec<RoleObject>> {
        allowed(ctx, Resource::Roles, Operation::Read)?;
        let known = gateway(ctx).auth.roles().await?;
        let mut roles: Vec<RoleRow> = known
            .values()
            .filter(|r| r.id != INTERNAL_USER_ROLE)
            .cloned()
            .collect();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(roles.into_iter().map(RoleObject).collect())
    }

    /// A role by id or name.
    async fn role(&self, ctx: &Context<'_>, id: ID) -> GqlResult<RoleObject> {
        allowed(ctx, Resource::Roles, Operation::Read)?;
        Ok(RoleObject(find_role(gateway(ctx), &id).await?))
    }

    /// Every resource a role can grant, with the operations it offers.
    async fn available_resource_actions(&self, ctx: &Context<'_>) -> GqlResult<Vec<ResourceGrant>> {
        allowed(ctx, Resource::Roles, Operation::Read)?;
        Ok(resource_grants(&Grants::everything()))
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
        let address = ctx.data_opt::<ClientAddress>().map(|a| a.0);
        let tokens = gateway(ctx)
            .auth
            .login(&username, &password, address)
            .await?;
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

    async fn create_user(
        &self,
        ctx: &Context<'_>,
        input: CreateUserInput,
    ) -> GqlResult<UserObject> {
        allowed(ctx, Resource::Users, Operation::Create)?;
        let gateway = gateway(ctx);
        let username = checked_username(&input.username)?;
        checked_password("password", &input.password)?;
        let roles = checked_roles(gateway, &input.role_ids).await?;
        let row = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            username,
            password_hash: hash(input.password).await?,
            roles,
            active: input.active,
            created_at: crate::store::truncate_micros(Utc::now()),
        };
        gateway
            .store
            .insert_user(&row)
            .await
            .map_err(ApiError::from)?;
        Ok(UserObject(row))
    }

    /// Change a user (by id or username); every login of theirs ends. A super_admin account is
    /// changed only by itself.
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateUserInput,
    ) -> GqlResult<UserObject> {
        let caller = allowed(ctx, Resource::Users, Operation::Update)?;
        let gateway = gateway(ctx);
        let mut user = find_user(gateway, &id).await?;
        if holds_super_admin(&user) {
            if caller.user_id != user.id {
                return Err(ApiError::Forbidden(
                    "the super_admin account is changed only by itself".into(),
                )
                .into());
            }
            if input.role_ids.is_some() || input.active == Some(false) {
                return Err(ApiError::Forbidden(
                    "the super_admin account keeps its role and cannot be deactivated".into(),
                )
                .into());
            }
        }
        if let Some(username) = &input.username {
            user.username = checked_username(username)?;
        }
        if let Some(password) = input.password {
            checked_password("password", &password)?;
            user.password_hash = hash(password).await?;
        }
        if let Some(ids) = &input.role_ids {
            user.roles = checked_roles(gateway, ids).await?;
        }
        if let Some(active) = input.active {
            user.active = active;
        }
        if gateway
            .store
            .update_user(&user)
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::not_found("user", &id).into());
        }
        forget(gateway, &user.id);
        Ok(UserObject(user))
    }

    /// Delete a user (by id or username): not oneself, not super_admin, not the last user able
    /// to manage users. Their logins end at once.
    async fn delete_user(&self, ctx: &Context<'_>, id: ID) -> GqlResult<bool> {
        let caller = allowed(ctx, Resource::Users, Operation::Delete)?;
        let gateway = gateway(ctx);
        let user = find_user(gateway, &id).await?;
        if user.id == caller.user_id {
            return Err(ApiError::Forbidden("users cannot delete themselves".into()).into());
        }
        if holds_super_admin(&user) {
            return Err(
                ApiError::Forbidden("the super_admin account cannot be deleted".into()).into(),
            );
        }
        if gateway
            .store
            .delete_user(&user.id)
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::not_found("user", &id).into());
        }
        forget(gateway, &user.id);
        Ok(true)
    }

    /// Change one's own username or password; the current password is required. Every login
    /// of theirs ends (this one too: sign in again with the new password).
    async fn update_me(&self, ctx: &Context<'_>, input: UpdateMeInput) -> GqlResult<UserObject> {
        let caller = signed_in(ctx)?;
        let gateway = gateway(ctx);
        let Some(mut user) = gateway
            .store
            .user_by_id(&caller.user_id)
            .await
            .map_err(ApiError::from)?
        else {
            return Err(ApiError::Unauthenticated("this user no longer exists".into()).into());
        };
        if !gateway
            .auth
            .password_matches(&input.old_password, &user.password_hash)
            .await
        {
            return Err(
                ApiError::Forbidden("oldPassword: it is not the current password".into()).into(),
            );
        }
        if let Some(username) = &input.username {
            user.username = checked_username(username)?;
        }
        if let Some(password) = input.new_password {
            checked_password("newPassword", &password)?;
            user.password_hash = hash(password).await?;
        }
        if gateway
            .store
            .update_user(&user)
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::not_found("user", &caller.user_id).into());
        }
        forget(gateway, &user.id);
        Ok(UserObject(user))
    }

    async fn create_role(
        &self,
        ctx: &Context<'_>,
        input: CreateRoleInput,
    ) -> GqlResult<RoleObject> {
        allowed(ctx, Resource::Roles, Operation::Create)?;
        let gateway = gateway(ctx);
        let row = RoleRow {
            id: uuid::Uuid::new_v4().to_string(),
            name: checked_role_name(&input.name)?,
            description: checked_description(input.description)?,
            grants: parse_grants(&input.resources)?,
            builtin: false,
        };
        gateway
            .store
            .insert_role(&row)
            .await
            .map_err(ApiError::from)?;
        gateway.auth.reload_roles().await?;
        Ok(RoleObject(row))
    }

    /// Change a custom role (by id or name); what is left out stays. Its holders' next
    /// requests are checked against what it grants now.
    async fn update_role(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateRoleInput,
    ) -> GqlResult<RoleObject> {
        allowed(ctx, Resource::Roles, Operation::Update)?;
        let gateway = gateway(ctx);
        let mut role = find_role(gateway, &id).await?;
        refuse_builtin(&role)?;
        if let Some(name) = &input.name {
            role.name = checked_role_name(name)?;
        }
        if let Some(description) = input.description {
            role.description = checked_description(description)?;
        }
        if let Some(resources) = &input.resources {
            role.grants = parse_grants(resources)?;
        }
        let updated = gateway
            .store
            .update_role(&role)
            .await
            .map_err(ApiError::from)?;
        gateway.auth.reload_roles().await?;
        if !updated {
            return Err(ApiError::not_found("role", &id).into());
        }
        Ok(RoleObject(role))
    }

    /// Delete a custom role (by id or name): its holders lose it, objects stop naming it.
    async fn delete_role(&self, ctx: &Context<'_>, id: ID) -> GqlResult<bool> {
        allowed(ctx, Resource::Roles, Operation::Delete)?;
        let gateway = gateway(ctx);
        let role = find_role(gateway, &id).await?;
        refuse_builtin(&role)?;
        let holders = gateway
            .store
            .delete_role(&role.id)
            .await
            .map_err(ApiError::from)?;
        gateway.auth.reload_roles().await?;
        gateway.access.invalidate_all();
        let Some(holders) = holders else {
            return Err(ApiError::not_found("role", &id).into());
        };
        for user in holders {
            forget(gateway, &user);
        }
        Ok(true)
    }
}

fn refuse_builtin(role: &RoleRow) -> ApiResult<()> {
    if role.builtin || default_roles().iter().any(|d| d.id == role.id) {
        return Err(ApiError::Forbidden(format!(
            "'{}' is a default role; default roles cannot be changed or deleted",
            role.name
        )));
    }
    Ok(())
}
