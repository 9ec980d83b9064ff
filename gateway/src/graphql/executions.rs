//! Executions: start one (with WALKOFF's execute-time overrides), deliver trigger data, abort,
//! list and read them with every node's result, delete old ones, and follow them live.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use walkoff_dataflow::{ControlError, ExecutionSummary, Plan, SubmitError};
use walkoff_schema::{
    Event, EventKind, NodeKind, NodeStatus, Parameter, Variant, Workflow, WorkflowStatus,
};

use super::json::Json;
use super::workflows::{plan, workflow_for};
use super::{allowed, decode_cursor, encode_cursor, gateway, page_size, parse_uuid};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::hub::LiveEvents;
use crate::rbac::{Operation, Resource};
use crate::store::{ExecutionFilter, ExecutionRow, NewExecution};
use crate::Gateway;
use async_graphql::Result as GqlResult;

/// The status of an execution (PENDING, EXECUTING, COMPLETED, FAILED, ABORTED) or of a node
/// (PENDING, EXECUTING, AWAITING_DATA, SUCCESS, FAILURE, SKIPPED, ABORTED).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Status {
    Pending,
    Executing,
    AwaitingData,
    Success,
    Failure,
    Skipped,
    Aborted,
    Completed,
    Failed,
}

impl From<NodeStatus> for Status {
    fn from(s: NodeStatus) -> Self {
        match s {
            NodeStatus::Pending => Status::Pending,
            NodeStatus::Executing => Status::Executing,
            NodeStatus::AwaitingData => Status::AwaitingData,
            NodeStatus::Success => Status::Success,
            NodeStatus::Failure => Status::Failure,
            NodeStatus::Skipped => Status::Skipped,
            NodeStatus::Aborted => Status::Aborted,
        }
    }
}

impl From<WorkflowStatus> for Status {
    fn from(s: WorkflowStatus) -> Self {
        match s {
            WorkflowStatus::Pending => Status::Pending,
            WorkflowStatus::Executing => Status::Executing,
            WorkflowStatus::Completed => Status::Completed,
            WorkflowStatus::Failed => Status::Failed,
            WorkflowStatus::Aborted => Status::Aborted,
        }
    }
}

impl Status {
    fn workflow_status(self) -> Option<WorkflowStatus> {
        Some(match self {
            Status::Pending => WorkflowStatus::Pending,
            Status::Executing => WorkflowStatus::Executing,
            Status::Completed => WorkflowStatus::Completed,
            Status::Failed => WorkflowStatus::Failed,
            Status::Aborted => WorkflowStatus::Aborted,
            _ => return None,
        })
    }
}

/// One run of a workflow.
pub struct ExecutionObject(pub Arc<ExecutionRow>);

#[Object(name = "Execution")]
impl ExecutionObject {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn status(&self) -> Status {
        self.0.status.into()
    }

    async fn workflow_id(&self) -> ID {
        ID(self.0.workflow_id.clone())
    }

    async fn workflow_name(&self) -> &str {
        &self.0.workflow_name
    }

    async fn workflow_version(&self) -> i64 {
        self.0.workflow_version
    }

    /// The workflow as it ran (walkoff's JSON, execute-time overrides applied).
    async fn workflow(&self) -> Json {
        Json(serde_json::to_value(&self.0.workflow).unwrap_or_default())
    }

    async fn started_by(&self) -> Option<&str> {
        self.0.started_by.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }

    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }

    /// Why it failed before any node ran, when it did.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }

    /// The sequence number of its newest recorded event.
    async fn last_sequence(&self) -> i64 {
        self.0.last_seq
    }

    /// Every node that has a status, with its result, as the recorded events tell it.
    async fn nodes(&self, ctx: &Context<'_>) -> GqlResult<Vec<NodeResult>> {
        let store = &gateway(ctx).store;
        let mut summary = ExecutionSummary::new(&self.0.id);
        let mut from = 1;
        loop {
            let events = store.events(&self.0.id, from, 4096).await?;
            let Some(last) = events.last() else { break };
            from = last.seq + 1;
            for event in &events {
                summary.apply(event);
            }
        }
        let labels: BTreeMap<&str, usize> = self
            .0
            .workflow
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.label.as_str(), i))
            .collect();
        let mut nodes: Vec<NodeResult> = summary
            .nodes
            .into_iter()
            .map(|(label, node)| NodeResult {
                node_id: ID(node.id),
                label,
                status: node.status.into(),
                result: node.result.map(Json),
                error: node.error,
                attempts: node.attempts as i32,
                started_at: node.started_at,
                finished_at: node.finished_at,
            })
            .collect();
        // In the workflow's order, as a user reads it.
        nodes.sort_by_key(|n| labels.get(n.label.as_str()).copied().unwrap_or(usize::MAX));
        Ok(nodes)
    }

    /// Its recorded events from `fromSequence` (1 by default), at most `first` (1000 by default).
    async fn events(
        &self,
        ctx: &Context<'_>,
        from_sequence: Option<i64>,
        first: Option<i32>,
    ) -> GqlResult<Vec<ExecutionEvent>> {
        let limit = first.unwrap_or(1000).clamp(1, 10_000);
        let from = from_sequence.unwrap_or(1).max(1) as u64;
        let events = gateway(ctx)
            .store
            .events(&self.0.id, from, i64::from(limit))
            .await
            .map_err(ApiError::from)?;
        Ok(events
            .into_iter()
            .map(|event| ExecutionEvent(Arc::new(event)))
            .collect())
    }
}

#[derive(SimpleObject)]
pub struct NodeResult {
    pub node_id: ID,
    pub label: String,
    pub status: Status,
    pub result: Option<Json>,
    pub error: Option<String>,
    /// Attempts made (retries included).
    pub attempts: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum EventSubject {
    /// The execution as a whole.
    Workflow,
    /// One node (or one shard of a parallel node).
    Node,
}

/// The stored event itself, shared by every subscriber it goes to: each field is read from it
/// only when a query selects it.
#[derive(Clone, Debug)]
pub struct ExecutionEvent(Arc<Event>);

impl ExecutionEvent {
    fn node(&self) -> Option<&walkoff_schema::NodeEvent> {
        match &self.0.kind {
            EventKind::Node(node) => Some(node),
            EventKind::Workflow { .. } => None,
        }
    }
}

/// A status change of an execution or of one of its nodes.
#[Object]
impl ExecutionEvent {
    /// 1, 2, 3 … without gaps within an execution.
    async fn sequence(&self) -> i64 {
        self.0.seq as i64
    }

    async fn execution_id(&self) -> ID {
        ID(self.0.execution_id.clone())
    }

    async fn subject(&self) -> EventSubject {
        match self.0.kind {
            EventKind::Workflow { .. } => EventSubject::Workflow,
            EventKind::Node(_) => EventSubject::Node,
        }
    }

    async fn status(&self) -> Status {
        match &self.0.kind {
            EventKind::Workflow { status, .. } => (*status).into(),
            EventKind::Node(node) => node.status.into(),
        }
    }

    /// The node's label; null for the execution's own events.
    async fn label(&self) -> Option<&str> {
        self.node().map(|node| node.label.as_str())
    }

    async fn node_id(&self) -> Option<&str> {
        self.node().map(|node| node.node_id.as_str())
    }

    async fn attempt(&self) -> Option<i32> {
        self.node().map(|node| node.attempt as i32)
    }

    /// The shard of a parallel action this event is about.
    async fn shard(&self) -> Option<i32> {
        self.node().and_then(|node| node.shard).map(|s| s as i32)
    }

    /// The parameters an action ran with.
    async fn parameters(&self) -> Option<Json> {
        self.node()
            .and_then(|node| node.parameters.clone())
            .map(|p| Json(Value::Object(p)))
    }

    async fn result(&self) -> Option<Json> {
        self.node().and_then(|node| node.result.clone()).map(Json)
    }

    async fn error(&self) -> Option<&str> {
        match &self.0.kind {
            EventKind::Workflow { error, .. } => error.as_deref(),
            EventKind::Node(node) => node.error.as_deref(),
        }
    }

    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
}

#[derive(InputObject, Default)]
pub struct ExecutionFilterInput {
    pub workflow_id: Option<ID>,
    /// Execution statuses (PENDING, EXECUTING, COMPLETED, FAILED, ABORTED).
    pub statuses: Option<Vec<Status>>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
}

fn workflow_statuses(statuses: Option<Vec<Status>>) -> ApiResult<Vec<WorkflowStatus>> {
    statuses
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            s.workflow_status().ok_or_else(|| {
                ApiError::BadUserInput(format!(
                    "{s:?} is a node status; executions are PENDING, EXECUTING, COMPLETED, FAILED or ABORTED"
                ))
            })
        })
        .collect()
}

/// A parameter of the start action, replaced for this run.
#[derive(InputObject)]
pub struct ParameterOverride {
    pub name: String,
    pub value: Json,
}

/// A workflow variable (by name or id) with its value for this run.
#[derive(InputObject)]
pub struct VariableOverride {
    pub name: String,
    pub value: Json,
}

/// `workflow` as this run sees it: another start node (an action or trigger, by id or label)
/// and the start action's parameters replaced (static values), as WALKOFF's execute allowed.
fn with_overrides(
    workflow: &Workflow,
    start: Option<&str>,
    parameters: &[ParameterOverride],
) -> ApiResult<Workflow> {
    let mut workflow = workflow.clone();
    if let Some(start) = start {
        let node = workflow
            .nodes
            .iter()
            .find(|n| n.id == start || n.label == start)
            .ok_or_else(|| {
                ApiError::BadUserInput(format!("start '{start}': the workflow has no such node"))
            })?;
        if !matches!(node.kind, NodeKind::Action(_) | NodeKind::Trigger(_)) {
            return Err(ApiError::BadUserInput(format!(
                "start '{start}': a run can start at an action or a trigger, not a {}",
                node.kind.name()
            )));
        }
        workflow.start = node.id.clone();
    }
    if parameters.is_empty() {
        return Ok(workflow);
    }
    let start_id = workflow.start.clone();
    let Some(NodeKind::Action(action)) = workflow
        .nodes
        .iter_mut()
        .find(|n| n.id == start_id)
        .map(|n| &mut n.kind)
    else {
        return Err(ApiError::BadUserInput(
            "parameters override the start action's, and this run does not start at an action"
                .into(),
        ));
    };
    for o in parameters {
        match action.parameters.iter_mut().find(|p| p.name == o.name) {
            Some(existing) => {
                existing.variant = Variant::StaticValue;
                existing.value = o.value.0.clone();
                existing.pointer = None;
            }
            None => action.parameters.push(Parameter {
                name: o.name.clone(),
                variant: Variant::StaticValue,
                value: o.value.0.clone(),
                pointer: None,
                parallelized: false,
                id: None,
            }),
        }
    }
    Ok(workflow)
}

/// The compiled plan of a stored workflow version, from the cache when it is there.
async fn cached_plan(
    gateway: &Gateway,
    id: &str,
    version: i64,
    workflow: &Workflow,
) -> ApiResult<Arc<Plan>> {
    let key = (id.to_string(), version);
    if let Some(plan) = gateway.plans.get(&key).await {
        return Ok(plan);
    }
    let plan = Arc::new(
        plan(gateway, workflow)
            .await?
            .map_err(ApiError::ValidationFailed)?,
    );
    gateway.plans.insert(key, Arc::clone(&plan)).await;
    Ok(plan)
}

/// An execution `caller` may see (NOT_FOUND otherwise, as for one that does not exist).
async fn stored_execution(gateway: &Gateway, caller: &Caller, id: &str) -> ApiResult<ExecutionRow> {
    match gateway.store.execution(id).await? {
        Some(row) if gateway.may_see_execution(caller, &row).await? => Ok(row),
        _ => Err(ApiError::not_found("execution", id)),
    }
}

/// An execution `caller` may control (abort, send trigger data): they started it, or may
/// execute its workflow.
async fn controlled_execution(
    gateway: &Gateway,
    caller: &Caller,
    id: &str,
) -> ApiResult<ExecutionRow> {
    let row = stored_execution(gateway, caller, id).await?;
    if caller.unrestricted || row.started_by_id.as_deref() == Some(caller.user_id.as_str()) {
        return Ok(row);
    }
    let may = match gateway.workflow_access(&row.workflow_id).await? {
        Some(access) => caller.may_on(Resource::Workflows, &access, Operation::Execute),
        None => false,
    };
    if !may {
        return Err(ApiError::Forbidden(format!(
            "'{}' may not control execution '{id}': they did not start it and may not execute its workflow",
            caller.username
        )));
    }
    Ok(row)
}

/// Why an execution refuses trigger data or an abort.
fn control_error(id: &str, error: ControlError) -> ApiError {
    match error {
        ControlError::UnknownExecution(_) | ControlError::Finished(_) => {
            ApiError::Conflict(format!("execution '{id}' has finished"))
        }
        ControlError::UnknownNode { node, .. } => {
            ApiError::BadUserInput(format!("execution '{id}' has no node '{node}'"))
        }
        ControlError::InvalidTriggerData(message) => ApiError::BadUserInput(message),
        ControlError::TriggerAlreadyResolved(label) => {
            ApiError::Conflict(format!("trigger '{label}' has already received its data"))
        }
        ControlError::Bus(e) => ApiError::Internal(e.to_string()),
    }
}

#[derive(Default)]
pub struct ExecutionQuery;

#[Object]
impl ExecutionQuery {
    /// Executions, newest first, a page at a time.
    async fn executions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<ExecutionFilterInput>,
    ) -> GqlResult<Connection<String, ExecutionObject>> {
        let caller = allowed(ctx, Resource::Workflowstatus, Operation::Read)?;
        let size = page_size(ctx, first)?;
        let after = match after {
            None => None,
            Some(cursor) => {
                let position = decode_cursor(&cursor)?;
                let parsed = position.split_once(':').and_then(|(at, id)| {
                    Some((
                        DateTime::from_timestamp_micros(at.parse().ok()?)?,
                        id.to_string(),
                    ))
                });
                Some(parsed.ok_or_else(|| {
                    ApiError::BadUserInput(format!("'{cursor}' is not a cursor of this list"))
                })?)
            }
        };
        let filter = filter.unwrap_or_default();
        let filter = ExecutionFilter {
            workflow_id: filter.workflow_id.map(|id| id.to_string()),
            statuses: workflow_statuses(filter.statuses)?,
            created_after: filter.created_after,
            created_before: filter.created_before,
        };
        let mut rows = gateway(ctx)
            .store
            .executions(
                &filter,
                &caller.viewer(Resource::Workflows),
                after.as_ref().map(|(at, id)| (*at, id.as_str())),
                size as i64 + 1,
            )
            .await
            .map_err(ApiError::from)?;
        let more = rows.len() > size;
        rows.truncate(size);
        let mut page = Connection::new(after.is_some(), more);
        page.edges.extend(rows.into_iter().map(|row| {
            let cursor =
                encode_cursor(&format!("{}:{}", row.created_at.timestamp_micros(), row.id));
            Edge::new(cursor, ExecutionObject(Arc::new(row)))
        }));
        Ok(page)
    }

    async fn execution(&self, ctx: &Context<'_>, id: ID) -> GqlResult<ExecutionObject> {
        let caller = allowed(ctx, Resource::Workflowstatus, Operation::Read)?;
        let row = stored_execution(gateway(ctx), caller, &id).await?;
        Ok(ExecutionObject(Arc::new(row)))
    }
}

#[derive(Default)]
pub struct ExecutionMutation;

#[Object]
impl ExecutionMutation {
    /// Start a run of a stored workflow. `executionId` (a UUID) lets a client subscribe to its
    /// events first; `start`, `parameters` and `workflowVariables` change this run only.
    #[allow(clippy::too_many_arguments)]
    async fn execute_workflow(
        &self,
        ctx: &Context<'_>,
        workflow_id: ID,
        execution_id: Option<ID>,
        start: Option<String>,
        parameters: Option<Vec<ParameterOverride>>,
        workflow_variables: Option<Vec<VariableOverride>>,
    ) -> GqlResult<ExecutionObject> {
        let caller = super::signed_in(ctx)?;
        let gateway = gateway(ctx);
        let execution_id = match execution_id {
            Some(id) => parse_uuid("executionId", &id)?,
            None => walkoff_dataflow::new_execution_id(),
        };
        let (stored, _) = workflow_for(gateway, caller, &workflow_id, Operation::Execute).await?;
        let parameters = parameters.unwrap_or_default();
        let (workflow, plan) = if start.is_none() && parameters.is_empty() {
            let plan = cached_plan(gateway, &stored.id, stored.version, &stored.workflow).await?;
            (stored.workflow.clone(), plan)
        } else {
            let workflow = with_overrides(&stored.workflow, start.as_deref(), &parameters)?;
            let plan = Arc::new(
                plan(gateway, &workflow)
                    .await?
                    .map_err(ApiError::ValidationFailed)?,
            );
            (workflow, plan)
        };
        let mut variables = BTreeMap::new();
        for o in workflow_variables.unwrap_or_default() {
            if !workflow
                .variables
                .iter()
                .any(|v| v.name == o.name || v.id == o.name)
            {
                return Err(ApiError::BadUserInput(format!(
                    "workflowVariables: the workflow has no variable '{}'",
                    o.name
                ))
                .into());
            }
            if variables.insert(o.name.clone(), o.value.0).is_some() {
                return Err(ApiError::BadUserInput(format!(
                    "workflowVariables: '{}' is given more than once",
                    o.name
                ))
                .into());
            }
        }
        // The globals it uses, sealed: the caller must be allowed to use each.
        let globals =
            super::globals::globals_for_run(gateway, caller, plan.referenced_globals()).await?;
        // Committed before it is enqueued: whatever happens next, the execution is on record.
        let row = gateway
            .store
            .insert_execution(&NewExecution {
                id: &execution_id,
                workflow_id: &stored.id,
                workflow_version: stored.version,
                workflow: &workflow,
                started_by: Some(&caller.username),
                started_by_id: Some(&caller.user_id),
            })
            .await
            .map_err(ApiError::from)?;
        if let Err(e) = gateway
            .engine
            .submit(plan, execution_id.clone(), variables, globals)
            .await
        {
            gateway
                .store
                .remove_unstarted_execution(&execution_id)
                .await
                .map_err(ApiError::from)?;
            let error = match e {
                SubmitError::Invalid(problems) => ApiError::ValidationFailed(problems.0),
                SubmitError::UnknownVariable(name) => ApiError::BadUserInput(format!(
                    "workflowVariables: the workflow has no variable '{name}'"
                )),
                SubmitError::MissingGlobal(name) => {
                    ApiError::BadUserInput(format!("the global '{name}' has no value"))
                }
                SubmitError::Bus(e) => ApiError::Internal(format!("the engine refused: {e}")),
            };
            return Err(error.into());
        }
        gateway.remember_owner(&row).await;
        gateway.hub.status_changed(row.clone());
        Ok(ExecutionObject(Arc::new(row)))
    }

    /// Stop a running execution: unfinished nodes end ABORTED, then the execution.
    async fn abort_execution(&self, ctx: &Context<'_>, id: ID) -> GqlResult<bool> {
        let caller = super::signed_in(ctx)?;
        let gateway = gateway(ctx);
        let row = controlled_execution(gateway, caller, &id).await?;
        if row.status.is_terminal() {
            return Err(ApiError::Conflict(format!(
                "execution '{}' has finished ({})",
                row.id, row.status
            ))
            .into());
        }
        gateway
            .engine
            .abort(&row.id)
            .await
            .map_err(|e| control_error(&row.id, e))?;
        Ok(true)
    }

    /// Deliver data to a trigger (by label or id); it is checked against the trigger's schema
    /// now, and kept until the trigger is reached when it comes early.
    async fn send_trigger_data(
        &self,
        ctx: &Context<'_>,
        execution_id: ID,
        trigger: String,
        data: Json,
    ) -> GqlResult<bool> {
        let caller = super::signed_in(ctx)?;
        let gateway = gateway(ctx);
        let row = controlled_execution(gateway, caller, &execution_id).await?;
        if row.status.is_terminal() {
            return Err(ApiError::Conflict(format!(
                "execution '{}' has finished ({})",
                row.id, row.status
            ))
            .into());
        }
        match row
            .workflow
            .nodes
            .iter()
            .find(|n| n.id == trigger || n.label == trigger)
        {
            Some(node) if matches!(node.kind, NodeKind::Trigger(_)) => {}
            Some(node) => {
                return Err(ApiError::BadUserInput(format!(
                    "'{trigger}' is a {}, not a trigger",
                    node.kind.name()
                ))
                .into())
            }
            None => {
                return Err(ApiError::BadUserInput(format!(
                    "execution '{}' has no trigger '{trigger}'",
                    row.id
                ))
                .into())
            }
        }
        gateway
            .engine
            .trigger(&row.id, &trigger, data.0)
            .await
            .map_err(|e| control_error(&row.id, e))?;
        Ok(true)
    }

    /// Delete finished executions created before `olderThan`, with their events; returns how
    /// many went.
    async fn delete_executions(
        &self,
        ctx: &Context<'_>,
        older_than: DateTime<Utc>,
    ) -> GqlResult<i64> {
        allowed(ctx, Resource::Workflowstatus, Operation::Delete)?;
        let deleted = gateway(ctx)
            .store
            .delete_executions(older_than)
            .await
            .map_err(ApiError::from)?;
        Ok(deleted as i64)
    }
}

/// Subscriptions open on one connection, limited.
pub struct SubscriptionSlots {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// Holds one slot for as long as its subscription lives.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SubscriptionSlots {
    pub fn new(max: usize) -> SubscriptionSlots {
        SubscriptionSlots {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    fn take(&self) -> ApiResult<Slot> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(&self.open));
        if before >= self.max {
            return Err(ApiError::RateLimited(format!(
                "this connection already has {} subscriptions open, the most allowed",
                self.max
            )));
        }
        Ok(slot)
    }
}

fn slot(ctx: &Context<'_>) -> ApiResult<Option<Slot>> {
    ctx.data_opt::<SubscriptionSlots>()
        .map(SubscriptionSlots::take)
        .transpose()
}

#[derive(InputObject, Default)]
pub struct ExecutionStatusFilter {
    pub workflow_id: Option<ID>,
    /// Only changes to these statuses.
    pub statuses: Option<Vec<Status>>,
}

#[derive(Default)]
pub struct ExecutionSubscription;

#[Subscription]
impl ExecutionSubscription {
    /// Every event of an execution from `fromSequence` (1 by default): the recorded ones first,
    /// then live ones, with no gap and no duplicate, ending after the execution's final event.
    /// It may start before the execution does (with the id given to `executeWorkflow`).
    async fn execution_events(
        &self,
        ctx: &Context<'_>,
        execution_id: ID,
        from_sequence: Option<i64>,
    ) -> Result<impl Stream<Item = GqlResult<ExecutionEvent>>, async_graphql::Error> {
        let caller = allowed(ctx, Resource::Workflowstatus, Operation::Read)?.clone();
        let id = parse_uuid("executionId", &execution_id)?;
        let slot = slot(ctx)?;
        let gateway = Arc::clone(gateway(ctx));
        let live = gateway.hub.subscribe(&id);
        gateway.engine.follow(&id);
        let follower = Follower {
            live,
            deadline: Instant::now() + gateway.config.limits.pending_execution_wait,
            gateway,
            id,
            next: from_sequence.unwrap_or(1).max(1) as u64,
            backlog: VecDeque::new(),
            read_store: true,
            known: false,
            caller,
            visible: false,
            done: false,
            _slot: slot,
        };
        Ok(futures::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item.map_err(Into::into), f))
        }))
    }

    /// Every status change of every execution (or of one workflow's, or to some statuses):
    /// what a live list of executions needs. A subscriber that falls too far behind is told
    /// how many changes it missed, and goes on.
    async fn execution_status(
        &self,
        ctx: &Context<'_>,
        filter: Option<ExecutionStatusFilter>,
    ) -> Result<impl Stream<Item = GqlResult<ExecutionObject>>, async_graphql::Error> {
        let caller = allowed(ctx, Resource::Workflowstatus, Operation::Read)?.clone();
        let gateway = Arc::clone(gateway(ctx));
        let slot = slot(ctx)?;
        let filter = filter.unwrap_or_default();
        let workflow_id = filter.workflow_id.map(|id| id.to_string());
        let statuses = workflow_statuses(filter.statuses)?;
        let receiver = gateway.hub.subscribe_statuses();
        let state = (receiver, slot);
        Ok(futures::stream::unfold(
            state,
            move |(mut receiver, slot)| {
                let workflow_id = workflow_id.clone();
                let statuses = statuses.clone();
                let gateway = Arc::clone(&gateway);
                let caller = caller.clone();
                async move {
                    loop {
                        match receiver.recv().await {
                            Ok(row) => {
                                if workflow_id.as_ref().is_some_and(|w| *w != row.workflow_id)
                                    || (!statuses.is_empty() && !statuses.contains(&row.status))
                                {
                                    continue;
                                }
                                // Only executions this subscriber may see (the workflow's
                                // permissions are cached, so this costs no store read per
                                // change).
                                match gateway.may_see_execution(&caller, &row).await {
                                    Ok(true) => {}
                                    Ok(false) => continue,
                                    Err(e) => return Some((Err(e.into()), (receiver, slot))),
                                }
                                return Some((Ok(ExecutionObject(row)), (receiver, slot)));
                            }
                            Err(RecvError::Lagged(missed)) => {
                                let error = ApiError::RateLimited(format!(
                                "this subscriber fell behind and missed {missed} status changes; read `executions` again to catch up"
                            ));
                                return Some((Err(error.into()), (receiver, slot)));
                            }
                            Err(RecvError::Closed) => return None,
                        }
                    }
                }
            },
        ))
    }
}

/// Follows one execution for one subscriber: the store from `next` on, then the live feed,
/// going back to the store whenever the feed skipped something (the subscriber lagged, or the
/// events came before it listened).
struct Follower {
    gateway: Arc<Gateway>,
    id: String,
    live: LiveEvents,
    /// The sequence number the subscriber gets next.
    next: u64,
    backlog: VecDeque<Arc<Event>>,
    read_store: bool,
    /// Whether the execution is known to exist.
    known: bool,
    caller: Caller,
    /// Whether the caller was found to be allowed to see it (checked before its first event).
    visible: bool,
    /// When a subscription to an execution that does not exist gives up.
    deadline: Instant,
    done: bool,
    _slot: Option<Slot>,
}

/// Stored events read per round.
const STORE_PAGE: i64 = 512;

impl Follower {
    async fn next(&mut self) -> Option<ApiResult<ExecutionEvent>> {
        loop {
            if self.done {
                return None;
            }
            if !self.visible && !self.backlog.is_empty() {
                let seen = match self.gateway.execution_owner(&self.id).await {
                    Ok(Some((workflow, starter))) => {
                        self.gateway
                            .may_see(&self.caller, &workflow, starter.as_deref())
                            .await
                    }
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                };
                match seen {
                    Ok(true) => self.visible = true,
                    Ok(false) => {
                        self.done = true;
                        return Some(Err(ApiError::not_found("execution", &self.id)));
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            if let Some(event) = self.backlog.pop_front() {
                if event.seq < self.next {
                    continue;
                }
                self.next = event.seq + 1;
                self.done = event.is_final();
                return Some(Ok(ExecutionEvent(event)));
            }
            if !self.known {
                // How far it is recorded (a cheap read): nothing to read while it has not
                // started, and nothing at all past the end of a finished one.
                match self.gateway.store.progress(&[self.id.as_str()]).await {
                    Ok(progress) => match progress.get(&self.id) {
                        Some(recorded) => {
                            self.known = true;
                            if recorded.finished && self.next > recorded.last_seq {
                                return None;
                            }
                            self.read_store &= recorded.last_seq >= self.next;
                        }
                        None if Instant::now() >= self.deadline => {
                            self.done = true;
                            return Some(Err(ApiError::not_found("execution", &self.id)));
                        }
                        // Not there yet: its first event comes live.
                        None => self.read_store = false,
                    },
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e.into()));
                    }
                }
            }
            if self.read_store {
                match self
                    .gateway
                    .store
                    .events(&self.id, self.next, STORE_PAGE)
                    .await
                {
                    Ok(events) => {
                        self.read_store = events.len() as i64 == STORE_PAGE;
                        if !events.is_empty() {
                            self.known = true;
                            self.backlog = events.into_iter().map(Arc::new).collect();
                            continue;
                        }
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e.into()));
                    }
                }
            }
            // Its first event wakes a subscriber waiting for an execution to start; the
            // deadline ends the wait for one that never does. Where the live feed may miss
            // what another process stored (several gateways), the store is read again now
            // and then, and the execution followed again.
            let recheck = self.gateway.engine.store_recheck();
            let wait = if !self.known {
                self.deadline.saturating_duration_since(Instant::now())
            } else {
                recheck.unwrap_or(Duration::from_secs(3600))
            };
            match tokio::time::timeout(wait, self.live.recv()).await {
                Ok(Ok(event)) => {
                    self.known = true;
                    if event.seq == self.next {
                        self.backlog.push_back(event);
                    } else if event.seq > self.next {
                        // Something came before this subscriber listened: it is stored.
                        self.read_store = true;
                    }
                }
                Ok(Err(RecvError::Lagged(_))) => self.read_store = true,
                Ok(Err(RecvError::Closed)) => return None,
                Err(_elapsed) => {
                    if self.known && recheck.is_some() {
                        self.read_store = true;
                        self.gateway.engine.follow(&self.id);
                    }
                }
            }
        }
    }
}
