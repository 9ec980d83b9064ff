//! Workflows: list, read, create, update, delete, copy, import, export and validate, in either
//! format (walkoff's JSON or WALKOFF 1.0's, detected from the content).

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use serde_json::Value;
use walkoff_dataflow::{compile, BusError, Plan};
use walkoff_schema::{dump_workflow, load_workflow_with_warnings, Format, Problem, Workflow};

use super::json::Json;
use super::permissions::{check_object, parse_permissions, Permissions, PermissionsInput};
use super::{allowed, decode_cursor, encode_cursor, gateway, page_size, signed_in};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{ObjectAccess, Operation, Resource};
use crate::store::{WorkflowFilter, WorkflowRow};
use crate::Gateway;
use async_graphql::Result as GqlResult;

/// A stored workflow.
/// A stored workflow, with what importing its document accepted without using (only on
/// `importWorkflow`'s answer).
pub struct WorkflowObject(pub WorkflowRow, pub Vec<String>);

#[Object(name = "Workflow")]
impl WorkflowObject {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn description(&self) -> Option<&str> {
        self.0.workflow.description.as_deref()
    }

    async fn tags(&self) -> &[String] {
        &self.0.workflow.tags
    }

    /// Raised by every update; `updateWorkflow(expectedVersion:)` refuses a stale save.
    async fn version(&self) -> i64 {
        self.0.version
    }

    /// The name of the user who created it.
    async fn created_by(&self) -> Option<&str> {
        self.0.created_by.as_deref()
    }

    /// Who may see, change, delete and run it.
    async fn permissions(&self, ctx: &Context<'_>) -> GqlResult<Permissions> {
        let access = gateway(ctx)
            .workflow_access(&self.0.id)
            .await?
            .ok_or_else(|| ApiError::not_found("workflow", &self.0.id))?;
        Ok(Permissions::from(access.as_ref()))
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// What importing this document accepted without using (a WALKOFF 1.0 export's validation
    /// results, run ids, permissions); only on `importWorkflow`'s answer, empty elsewhere.
    async fn warnings(&self) -> &[String] {
        &self.1
    }

    /// The workflow in walkoff's JSON.
    async fn document(&self) -> Json {
        Json(dump_workflow(&self.0.workflow, Format::Canonical))
    }

    /// Problems against the apps known now (none when it saved, but apps can change).
    async fn problems(&self, ctx: &Context<'_>) -> GqlResult<Vec<ProblemObject>> {
        Ok(match plan(gateway(ctx), &self.0.workflow).await? {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(ProblemObject::from).collect(),
        })
    }
}

/// One problem of a workflow: which node and field, and where in a script.
#[derive(SimpleObject, Clone)]
#[graphql(name = "Problem")]
pub struct ProblemObject {
    /// Stable code, e.g. `unknown_action`.
    pub code: String,
    pub message: String,
    pub node_id: Option<String>,
    pub label: Option<String>,
    pub field: Option<String>,
    pub line: Option<i32>,
    pub column: Option<i32>,
}

impl From<Problem> for ProblemObject {
    fn from(p: Problem) -> Self {
        ProblemObject {
            code: p.code.as_str().to_string(),
            message: p.message,
            node_id: p.node_id,
            label: p.label,
            field: p.field,
            line: p.line.map(|l| l as i32),
            column: p.column.map(|c| c as i32),
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum WorkflowFormat {
    /// walkoff's JSON.
    Walkoff,
    /// WALKOFF 1.0's workflow JSON.
    Walkoff1,
}

impl From<Format> for WorkflowFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Canonical => WorkflowFormat::Walkoff,
            Format::Walkoff1 => WorkflowFormat::Walkoff1,
        }
    }
}

#[derive(SimpleObject)]
pub struct Validation {
    pub valid: bool,
    /// The format the document was read as.
    pub format: WorkflowFormat,
    /// Every problem found, at once.
    pub problems: Vec<ProblemObject>,
    /// What the document holds that import accepts without using (a WALKOFF 1.0 export's
    /// validation results, run ids, permissions).
    pub warnings: Vec<String>,
}

#[derive(InputObject, Default)]
pub struct WorkflowFilterInput {
    /// Part of the name, any case.
    pub search: Option<String>,
}

/// Read a workflow document given as JSON, or as a string holding the file's text (then
/// problems with the text carry its line and column).
fn parse(json: &Json) -> ApiResult<(Workflow, Format, Vec<String>)> {
    let text = match &json.0 {
        Value::String(text) => text.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    let parsed =
        load_workflow_with_warnings(&text).map_err(|e| ApiError::BadUserInput(e.to_string()))?;
    if parsed.0.name.chars().any(char::is_control) {
        return Err(ApiError::BadUserInput(
            "name: a workflow's name holds no control characters".into(),
        ));
    }
    Ok(parsed)
}

/// Compile `workflow` against the apps the engine knows; when that fails and the catalogue
/// came from a cache, once more against a fresh one (an executor may just have registered the
/// app the workflow names).
pub(crate) async fn plan(
    gateway: &Gateway,
    workflow: &Workflow,
) -> ApiResult<Result<Plan, Vec<Problem>>> {
    let workflow = Arc::new(workflow.clone());
    let catalog = gateway.engine.catalog(false).await.map_err(engine_down)?;
    match compile(Arc::clone(&workflow), &catalog, None) {
        Ok(plan) => Ok(Ok(plan)),
        Err(problems) => {
            let fresh = gateway.engine.catalog(true).await.map_err(engine_down)?;
            if Arc::ptr_eq(&fresh, &catalog) {
                return Ok(Err(problems.0));
            }
            Ok(compile(workflow, &fresh, None).map_err(|p| p.0))
        }
    }
}

pub(crate) fn engine_down(e: BusError) -> ApiError {
    ApiError::Internal(format!("the engine cannot be reached: {e}"))
}

async fn valid(gateway: &Gateway, workflow: &Workflow) -> ApiResult<()> {
    plan(gateway, workflow)
        .await?
        .map(|_| ())
        .map_err(ApiError::ValidationFailed)
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `name`, or the first of `name (2)`, `name (3)`, … that no workflow has.
async fn free_name(gateway: &Gateway, name: &str) -> ApiResult<String> {
    if !gateway.store.workflow_name_taken(name).await? {
        return Ok(name.to_string());
    }
    for n in 2..100 {
        let candidate = format!("{name} ({n})");
        if !gateway.store.workflow_name_taken(&candidate).await? {
            return Ok(candidate);
        }
    }
    Ok(format!("{name} ({})", fresh_id()))
}

/// A stored workflow `caller` may do `operation` on: NOT_FOUND when there is none or they may
/// not read it, FORBIDDEN when they may read it but not do this.
pub(crate) async fn workflow_for(
    gateway: &Gateway,
    caller: &Caller,
    id: &str,
    operation: Operation,
) -> ApiResult<(WorkflowRow, Arc<ObjectAccess>)> {
    let row = gateway.store.workflow(id).await?;
    let access = gateway.workflow_access(id).await?;
    let (Some(row), Some(access)) = (row, access) else {
        return Err(ApiError::not_found("workflow", id));
    };
    check_object(
        caller,
        Resource::Workflows,
        "workflow",
        id,
        &access,
        operation,
    )?;
    Ok((row, access))
}

#[derive(Default)]
pub struct WorkflowQuery;

#[Object]
impl WorkflowQuery {
    /// Workflows by name, a page at a time.
    async fn workflows(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<WorkflowFilterInput>,
    ) -> GqlResult<Connection<String, WorkflowObject>> {
        let caller = signed_in(ctx)?;
        let size = page_size(ctx, first)?;
        let after = after.as_deref().map(decode_cursor).transpose()?;
        let filter = WorkflowFilter {
            search: filter.and_then(|f| f.search).filter(|s| !s.is_empty()),
        };
        let viewer = caller.viewer(Resource::Workflows);
        let mut rows = gateway(ctx)
            .store
            .workflows(&filter, &viewer, after.as_deref(), size as i64 + 1)
            .await
            .map_err(ApiError::from)?;
        let more = rows.len() > size;
        rows.truncate(size);
        let mut page = Connection::new(after.is_some(), more);
        page.edges.extend(
            rows.into_iter()
                .map(|row| Edge::new(encode_cursor(&row.name), WorkflowObject(row, Vec::new()))),
        );
        Ok(page)
    }

    async fn workflow(&self, ctx: &Context<'_>, id: ID) -> GqlResult<WorkflowObject> {
        let caller = signed_in(ctx)?;
        let (row, _) = workflow_for(gateway(ctx), caller, &id, Operation::Read).await?;
        Ok(WorkflowObject(row, Vec::new()))
    }

    /// Every problem of a workflow document (either format), without storing anything.
    async fn validate_workflow(&self, ctx: &Context<'_>, json: Json) -> GqlResult<Validation> {
        allowed(ctx, Resource::AppApis, Operation::Read)?;
        let (workflow, format, warnings) = parse(&json)?;
        let problems = match plan(gateway(ctx), &workflow).await? {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(ProblemObject::from).collect(),
        };
        Ok(Validation {
            valid: problems.is_empty(),
            format: format.into(),
            problems,
            warnings,
        })
    }

    /// A stored workflow as a document in the chosen format (walkoff's by default).
    async fn export_workflow(
        &self,
        ctx: &Context<'_>,
        id: ID,
        format: Option<WorkflowFormat>,
    ) -> GqlResult<Json> {
        let caller = signed_in(ctx)?;
        let (row, _) = workflow_for(gateway(ctx), caller, &id, Operation::Read).await?;
        let format = match format.unwrap_or(WorkflowFormat::Walkoff) {
            WorkflowFormat::Walkoff => Format::Canonical,
            WorkflowFormat::Walkoff1 => Format::Walkoff1,
        };
        Ok(Json(dump_workflow(&row.workflow, format)))
    }
}

#[derive(Default)]
pub struct WorkflowMutation;

#[Object]
impl WorkflowMutation {
    /// Store a new workflow (either format) under the id and name it carries; both must be
    /// free, and it must be valid (every problem is listed in `extensions.problems`).
    /// `permissions` default to EVERYONE (as each caller's roles allow).
    async fn create_workflow(
        &self,
        ctx: &Context<'_>,
        json: Json,
        permissions: Option<PermissionsInput>,
    ) -> GqlResult<WorkflowObject> {
        let caller = allowed(ctx, Resource::Workflows, Operation::Create)?;
        let gateway = gateway(ctx);
        let access = parse_permissions(ctx, permissions, &caller.user_id).await?;
        let (workflow, _, _) = parse(&json)?;
        valid(gateway, &workflow).await?;
        let row = gateway
            .store
            .insert_workflow(&workflow, Some(&caller.username), &access)
            .await
            .map_err(ApiError::from)?;
        gateway.access.invalidate(&row.id).await;
        Ok(WorkflowObject(row, Vec::new()))
    }

    /// Replace a workflow's document (and its permissions, when given). With
    /// `expectedVersion`, a save based on an older version than the stored one is refused with
    /// CONFLICT instead of overwriting someone's change.
    async fn update_workflow(
        &self,
        ctx: &Context<'_>,
        id: ID,
        json: Json,
        expected_version: Option<i64>,
        permissions: Option<PermissionsInput>,
    ) -> GqlResult<WorkflowObject> {
        let caller = signed_in(ctx)?;
        let gateway = gateway(ctx);
        let (_, current) = workflow_for(gateway, caller, &id, Operation::Update).await?;
        let access = match permissions {
            None => None,
            Some(input) => {
                let creator = current.creator_id.as_deref().unwrap_or(&caller.user_id);
                Some(parse_permissions(ctx, Some(input), creator).await?)
            }
        };
        let (mut workflow, _, _) = parse(&json)?;
        workflow.id = id.to_string();
        valid(gateway, &workflow).await?;
        let updated = gateway
            .store
            .update_workflow(&workflow, expected_version, access.as_ref())
            .await
            .map_err(ApiError::from)?;
        gateway.access.invalidate(id.as_str()).await;
        match updated {
            crate::store::Updated::Done(row) => {
                gateway
                    .plans
                    .invalidate(&(row.id.clone(), row.version - 1))
                    .await;
                Ok(WorkflowObject(*row, Vec::new()))
            }
            crate::store::Updated::NotFound => Err(ApiError::not_found("workflow", &id).into()),
            crate::store::Updated::Stale(version) => Err(ApiError::Conflict(format!(
                "workflow '{}' is at version {version}, not {}: reload it and apply the change again",
                id.as_str(),
                expected_version.unwrap_or_default()
            )).into()),
        }
    }

    async fn delete_workflow(&self, ctx: &Context<'_>, id: ID) -> GqlResult<bool> {
        let caller = signed_in(ctx)?;
        let gateway = gateway(ctx);
        let (row, _) = workflow_for(gateway, caller, &id, Operation::Delete).await?;
        if !gateway
            .store
            .delete_workflow(&id)
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::not_found("workflow", &id).into());
        }
        gateway.access.invalidate(id.as_str()).await;
        gateway.plans.invalidate(&(row.id, row.version)).await;
        Ok(true)
    }

    /// A copy with every id new and every reference rewired; named `name`, or after the source
    /// with " (Copy)". It keeps the source's permissions, with the caller as its creator.
    async fn copy_workflow(
        &self,
        ctx: &Context<'_>,
        id: ID,
        name: Option<String>,
    ) -> GqlResult<WorkflowObject> {
        let caller = allowed(ctx, Resource::Workflows, Operation::Create)?;
        let gateway = gateway(ctx);
        let (source, source_access) = workflow_for(gateway, caller, &id, Operation::Read).await?;
        let access = ObjectAccess {
            creator_id: Some(caller.user_id.clone()),
            ..source_access.as_ref().clone()
        };
        let mut copy = source.workflow.with_new_ids(fresh_id);
        copy.name = match name.filter(|n| !n.trim().is_empty()) {
            Some(name) => name,
            None => free_name(gateway, &format!("{} (Copy)", source.name)).await?,
        };
        let row = gateway
            .store
            .insert_workflow(&copy, Some(&caller.username), &access)
            .await
            .map_err(ApiError::from)?;
        gateway.access.invalidate(&row.id).await;
        Ok(WorkflowObject(row, Vec::new()))
    }

    /// Store a workflow file (either format) as a new workflow: ids are regenerated and
    /// references rewired, and a taken name gets a number, so an import never overwrites.
    /// `permissions` default to EVERYONE (a WALKOFF export's own are not kept: they name
    /// another server's roles and users).
    async fn import_workflow(
        &self,
        ctx: &Context<'_>,
        json: Json,
        permissions: Option<PermissionsInput>,
    ) -> GqlResult<WorkflowObject> {
        let caller = allowed(ctx, Resource::Workflows, Operation::Create)?;
        let gateway = gateway(ctx);
        let access = parse_permissions(ctx, permissions, &caller.user_id).await?;
        let (workflow, _, warnings) = parse(&json)?;
        valid(gateway, &workflow).await?;
        let mut imported = workflow.with_new_ids(fresh_id);
        imported.name = free_name(gateway, &workflow.name).await?;
        let row = gateway
            .store
            .insert_workflow(&imported, Some(&caller.username), &access)
            .await
            .map_err(ApiError::from)?;
        gateway.access.invalidate(&row.id).await;
        Ok(WorkflowObject(row, warnings))
    }
}
