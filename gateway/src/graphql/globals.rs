//! Global variables: values sealed at rest, opened only for callers who may read them; callers
//! who may only execute (use) them see that they exist, and their workflows use them without
//! anyone seeing the value.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_graphql::{Context, InputObject, Object, ID};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::json::Json;
use super::permissions::{parse_permissions, Permissions, PermissionsInput};
use super::{allowed, gateway, signed_in};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{ObjectAccess, Operation, Resource};
use crate::store::{GlobalRow, Table};
use crate::Gateway;
use async_graphql::Result as GqlResult;

/// Largest value a global may hold, as JSON.
const MAX_VALUE_BYTES: usize = 64 * 1024;

pub struct GlobalObject {
    row: GlobalRow,
    access: Arc<ObjectAccess>,
}

#[Object(name = "Global")]
impl GlobalObject {
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }
    async fn name(&self) -> &str {
        &self.row.name
    }
    async fn description(&self) -> &str {
        &self.row.description
    }
    /// The value, opened: only for callers who may read it (FORBIDDEN for those who may only
    /// use it in workflows).
    async fn value(&self, ctx: &Context<'_>) -> GqlResult<Json> {
        let caller = signed_in(ctx)?;
        if !caller.may_on(Resource::GlobalVariables, &self.access, Operation::Read) {
            return Err(ApiError::Forbidden(format!(
                "'{}' may use global '{}' but not read its value",
                caller.username, self.row.name
            ))
            .into());
        }
        let secrets = &gateway(ctx).secrets;
        match secrets.open(&self.row.sealed) {
            Ok(Some(value)) => Ok(Json(value)),
            Ok(None) => {
                Err(ApiError::Internal("a global's value is stored unsealed".into()).into())
            }
            Err(e) => Err(ApiError::Internal(e.to_string()).into()),
        }
    }
    async fn permissions(&self) -> Permissions {
        Permissions::from(self.access.as_ref())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at
    }
}

#[derive(InputObject)]
pub struct CreateGlobalInput {
    pub name: String,
    /// Any JSON value.
    pub value: Json,
    #[graphql(default)]
    pub description: String,
    /// EVERYONE (as their roles allow) by default.
    pub permissions: Option<PermissionsInput>,
}

/// What to change; what is left out stays.
#[derive(InputObject)]
pub struct UpdateGlobalInput {
    pub name: Option<String>,
    pub value: Option<Json>,
    pub description: Option<String>,
    pub permissions: Option<PermissionsInput>,
}

fn checked_name(name: &str) -> ApiResult<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::BadUserInput(
            "name: 1 to 128 characters, no control characters".into(),
        ));
    }
    Ok(trimmed.to_string())
}

fn checked_value(value: &Value) -> ApiResult<()> {
    if serde_json::to_vec(value).map_or(0, |v| v.len()) > MAX_VALUE_BYTES {
        return Err(ApiError::BadUserInput(format!(
            "value: at most {} KiB of JSON",
            MAX_VALUE_BYTES / 1024
        )));
    }
    Ok(())
}

/// A global `caller` may do `operation` on: NOT_FOUND when there is none or they may neither
/// read nor use it, FORBIDDEN when they may see it but not do this. (`Read` asks only to see
/// it: its value is opened for readers alone, by `Global.value`.)
async fn global_for(
    gateway: &Gateway,
    caller: &Caller,
    id: &str,
    operation: Operation,
) -> ApiResult<GlobalObject> {
    let Some(row) = gateway.store.global(id).await? else {
        return Err(ApiError::not_found("global", id));
    };
    let Some(access) = gateway.store.object_access(Table::Globals, &row.id).await? else {
        return Err(ApiError::not_found("global", id));
    };
    let may = |op| caller.may_on(Resource::GlobalVariables, &access, op);
    if !may(Operation::Read) && !may(Operation::Execute) {
        return Err(ApiError::not_found("global", id));
    }
    if operation != Operation::Read && !may(operation) {
        return Err(ApiError::Forbidden(format!(
            "'{}' may not {operation} global '{}': its permissions do not allow it",
            caller.username, row.name
        )));
    }
    Ok(GlobalObject {
        row,
        access: Arc::new(access),
    })
}

/// The sealed values of the globals a workflow names (by id or name), each checked: it must
/// exist, and `caller` may use it (execute).
pub(crate) async fn globals_for_run(
    gateway: &Gateway,
    caller: &Caller,
    keys: impl IntoIterator<Item = String>,
) -> ApiResult<BTreeMap<String, Value>> {
    let mut sealed = BTreeMap::new();
    for key in keys {
        let global = match global_for(gateway, caller, &key, Operation::Execute).await {
            Ok(global) => global,
            Err(ApiError::NotFound(_)) => {
                return Err(ApiError::BadUserInput(format!(
                    "the workflow uses the global '{key}', which does not exist or which you may not use"
                )))
            }
            Err(e) => return Err(e),
        };
        sealed.insert(key, global.row.sealed);
    }
    Ok(sealed)
}

#[derive(Default)]
pub struct GlobalQuery;

#[Object]
impl GlobalQuery {
    /// The globals the caller may read or use, by name.
    async fn globals(&self, ctx: &Context<'_>) -> GqlResult<Vec<GlobalObject>> {
        let caller = signed_in(ctx)?;
        let gateway = gateway(ctx);
        let viewer = caller.viewer(Resource::GlobalVariables);
        let may_use = caller.may(Resource::GlobalVariables, Operation::Execute);
        let rows = gateway
            .store
            .globals(&viewer, may_use)
            .await
            .map_err(ApiError::from)?;
        let mut globals = Vec::with_capacity(rows.len());
        for row in rows {
            let access = gateway
                .store
                .object_access(Table::Globals, &row.id)
                .await
                .map_err(ApiError::from)?
                .unwrap_or_else(|| ObjectAccess::everyone(row.creator_id.clone()));
            globals.push(GlobalObject {
                row,
                access: Arc::new(access),
            });
        }
        Ok(globals)
    }

    /// A global by id or name.
    async fn global(&self, ctx: &Context<'_>, id: ID) -> GqlResult<GlobalObject> {
        let caller = signed_in(ctx)?;
        Ok(global_for(gateway(ctx), caller, &id, Operation::Read).await?)
    }
}

#[derive(Default)]
pub struct GlobalMutation;

#[Object]
impl GlobalMutation {
    /// Store a new global; its value is sealed before it is written anywhere.
    async fn create_global(
        &self,
        ctx: &Context<'_>,
        input: CreateGlobalInput,
    ) -> GqlResult<GlobalObject> {
        let caller = allowed(ctx, Resource::GlobalVariables, Operation::Create)?;
        let gateway = gateway(ctx);
        let name = checked_name(&input.name)?;
        checked_value(&input.value.0)?;
        let access = parse_permissions(ctx, input.permissions, &caller.user_id).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = crate::store::truncate_micros(Utc::now());
        let row = GlobalRow {
            sealed: gateway.secrets.seal(&id, &input.value.0),
            id,
            name,
            description: super::users::checked_description(input.description)?,
            access_level: access.level,
            creator_id: access.creator_id.clone(),
            created_at: now,
            updated_at: now,
        };
        gateway
            .store
            .insert_global(&row, &access)
            .await
            .map_err(ApiError::from)?;
        Ok(GlobalObject {
            row,
            access: Arc::new(access),
        })
    }

    async fn update_global(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateGlobalInput,
    ) -> GqlResult<GlobalObject> {
        let caller = signed_in(ctx)?;
        let gateway = gateway(ctx);
        let GlobalObject { mut row, access } =
            global_for(gateway, caller, &id, Operation::Update).await?;
        if let Some(name) = &input.name {
            row.name = checked_name(name)?;
        }
        if let Some(description) = input.description {
            row.description = super::users::checked_description(description)?;
        }
        if let Some(value) = &input.value {
            checked_value(&value.0)?;
            row.sealed = gateway.secrets.seal(&row.id, &value.0);
        }
        let new_access = match input.permissions {
            None => None,
            Some(permissions) => {
                let creator = access.creator_id.as_deref().unwrap_or(&caller.user_id);
                Some(parse_permissions(ctx, Some(permissions), creator).await?)
            }
        };
        if !gateway
            .store
            .update_global(&row, new_access.as_ref())
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::not_found("global", &id).into());
        }
        row.updated_at = Utc::now();
        Ok(GlobalObject {
            row,
            access: new_access.map(Arc::new).unwrap_or(access),
        })
    }

    async fn delete_global(&self, ctx: &Context<'_>, id: ID) -> GqlResult<bool> {
        let caller = signed_in(ctx)?;
        let gateway = gateway(ctx);
        let global = global_for(gateway, caller, &id, Operation::Delete).await?;
        if !gateway
            .store
            .delete_global(&global.row.id)
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::not_found("global", &id).into());
        }
        Ok(true)
    }
}
