//! Per-object permissions as the API shows and takes them (workflows now, globals next), and
//! the checks that turn them into NOT_FOUND or FORBIDDEN.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, InputObject, SimpleObject, ID};

use super::gateway;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{AccessLevel, ObjectAccess, ObjectOperations, Operation, Resource};

/// Who may see and change an object.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "AccessLevel")]
pub enum AccessLevelValue {
    /// Only its creator (and super_admin).
    OnlyMe,
    /// Everyone, as far as their roles allow on the resource.
    Everyone,
    /// The roles listed, with the operations listed for each (and its creator, and
    /// super_admin).
    RoleBased,
}

impl From<AccessLevel> for AccessLevelValue {
    fn from(level: AccessLevel) -> Self {
        match level {
            AccessLevel::OnlyMe => AccessLevelValue::OnlyMe,
            AccessLevel::Everyone => AccessLevelValue::Everyone,
            AccessLevel::RoleBased => AccessLevelValue::RoleBased,
        }
    }
}

impl From<AccessLevelValue> for AccessLevel {
    fn from(level: AccessLevelValue) -> Self {
        match level {
            AccessLevelValue::OnlyMe => AccessLevel::OnlyMe,
            AccessLevelValue::Everyone => AccessLevel::Everyone,
            AccessLevelValue::RoleBased => AccessLevel::RoleBased,
        }
    }
}

#[derive(InputObject)]
pub struct RolePermissionInput {
    pub role_id: ID,
    /// Any of `read`, `update`, `delete`, `execute`.
    pub operations: Vec<String>,
}

#[derive(InputObject)]
pub struct PermissionsInput {
    pub access_level: AccessLevelValue,
    /// For ROLE_BASED only: what each role may do.
    #[graphql(default)]
    pub roles: Vec<RolePermissionInput>,
}

#[derive(SimpleObject)]
pub struct RolePermission {
    pub role_id: ID,
    pub operations: Vec<String>,
}

#[derive(SimpleObject)]
pub struct Permissions {
    pub access_level: AccessLevelValue,
    /// The user who created the object.
    pub creator_id: Option<ID>,
    pub roles: Vec<RolePermission>,
}

impl From<&ObjectAccess> for Permissions {
    fn from(access: &ObjectAccess) -> Self {
        Permissions {
            access_level: access.level.into(),
            creator_id: access.creator_id.clone().map(ID),
            roles: access
                .roles
                .iter()
                .map(|(role, ops)| RolePermission {
                    role_id: ID(role.clone()),
                    operations: ops
                        .operations()
                        .into_iter()
                        .map(|o| o.as_str().to_string())
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Permissions as given, checked: every role must exist, every operation be one an object has,
/// and roles are listed only for ROLE_BASED.
pub async fn parse_permissions(
    ctx: &Context<'_>,
    input: Option<PermissionsInput>,
    creator_id: &str,
) -> ApiResult<ObjectAccess> {
    let Some(input) = input else {
        return Ok(ObjectAccess::everyone(Some(creator_id.to_string())));
    };
    let level: AccessLevel = input.access_level.into();
    if level != AccessLevel::RoleBased && !input.roles.is_empty() {
        return Err(ApiError::BadUserInput(
            "permissions.roles: roles are listed only with accessLevel ROLE_BASED".into(),
        ));
    }
    let known = gateway(ctx).auth.roles().await?;
    let mut roles = BTreeMap::new();
    for (i, row) in input.roles.iter().enumerate() {
        if !known.contains_key(row.role_id.as_str()) {
            return Err(ApiError::BadUserInput(format!(
                "permissions.roles[{i}].roleId: there is no role '{}'",
                row.role_id.as_str()
            )));
        }
        let mut operations = Vec::new();
        for op in &row.operations {
            operations.push(op.parse::<Operation>().map_err(|e| {
                ApiError::BadUserInput(format!("permissions.roles[{i}].operations: {e}"))
            })?);
        }
        let ops = ObjectOperations::from_operations(&operations).map_err(|e| {
            ApiError::BadUserInput(format!("permissions.roles[{i}].operations: {e}"))
        })?;
        if roles.insert(row.role_id.to_string(), ops).is_some() {
            return Err(ApiError::BadUserInput(format!(
                "permissions.roles[{i}].roleId: role '{}' is listed more than once",
                row.role_id.as_str()
            )));
        }
    }
    Ok(ObjectAccess {
        level,
        creator_id: Some(creator_id.to_string()),
        roles,
    })
}

/// Whether `caller` may do `operation` on an object with permissions `access`: NOT_FOUND when
/// they may not even read it (the answer gives no hint that it exists), FORBIDDEN when they
/// may read it but not do this.
pub fn check_object(
    caller: &Caller,
    resource: Resource,
    what: &str,
    id: &str,
    access: &ObjectAccess,
    operation: Operation,
) -> ApiResult<()> {
    if !caller.may_on(resource, access, Operation::Read) {
        return Err(ApiError::not_found(what, id));
    }
    if operation != Operation::Read && !caller.may_on(resource, access, operation) {
        return Err(ApiError::Forbidden(format!(
            "'{}' may not {operation} {what} '{id}': its permissions do not allow it",
            caller.username
        )));
    }
    Ok(())
}
