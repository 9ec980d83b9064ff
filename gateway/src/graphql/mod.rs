//! The GraphQL schema: one module per resource, merged here. The schema is a plain value; the
//! transport (`crate::http`) only carries requests to it.

mod apps;
mod executions;
mod globals;
mod json;
mod permissions;
mod settings;
mod users;
mod workflows;

use std::sync::Arc;

use async_graphql::{
    BatchRequest, BatchResponse, Context, Data, Executor, MergedObject, MergedSubscription,
    Request, Response, Schema,
};
use base64::Engine as _;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::auth::{authorize, Caller, Credentials};
use crate::error::{ApiError, ApiResult};
use crate::rbac::{Operation, Resource};
use crate::Gateway;

pub use executions::{ExecutionEvent, Status, SubscriptionSlots};

#[derive(MergedObject, Default)]
pub struct Query(
    users::UserQuery,
    workflows::WorkflowQuery,
    executions::ExecutionQuery,
    apps::AppQuery,
    settings::SettingsQuery,
    globals::GlobalQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    users::UserMutation,
    workflows::WorkflowMutation,
    executions::ExecutionMutation,
    settings::SettingsMutation,
    globals::GlobalMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(executions::ExecutionSubscription);

/// The schema, every response of which has a code on each error (see [`with_codes`]): what
/// the transport and the tests run requests through.
///
/// Not an async-graphql extension: with any extension registered, async-graphql resolves every
/// field through the extension chain (a `ResolveInfo` and a boxed future per field), which
/// halved the throughput of a subscription fanned out to many subscribers.
#[derive(Clone)]
pub struct WalkoffSchema(Schema<Query, Mutation, Subscription>);

impl WalkoffSchema {
    pub async fn execute(&self, request: impl Into<Request>) -> Response {
        with_codes(self.0.execute(request).await)
    }

    pub async fn execute_batch(&self, batch: BatchRequest) -> BatchResponse {
        match self.0.execute_batch(batch).await {
            BatchResponse::Single(response) => BatchResponse::Single(with_codes(response)),
            BatchResponse::Batch(responses) => {
                BatchResponse::Batch(responses.into_iter().map(with_codes).collect())
            }
        }
    }

    pub fn execute_stream(&self, request: impl Into<Request>) -> BoxStream<'static, Response> {
        Executor::execute_stream(self, request.into(), None)
    }
}

impl Executor for WalkoffSchema {
    async fn execute(&self, request: Request) -> Response {
        WalkoffSchema::execute(self, request).await
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        self.0
            .execute_stream_with_session_data(request, session_data.unwrap_or_default())
            .map(with_codes)
            .boxed()
    }
}

/// The schema serving `gateway`, with its limits.
pub fn build_schema(gateway: Arc<Gateway>) -> WalkoffSchema {
    let limits = gateway.config.limits.clone();
    WalkoffSchema(
        Schema::build(
            Query::default(),
            Mutation::default(),
            Subscription::default(),
        )
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .data(gateway)
        .finish(),
    )
}

/// Gives every error a code: the resolvers' carry theirs; what async-graphql refuses before a
/// resolver runs (a syntax error, an unknown field, a query too deep or too complex, an argument
/// of the wrong type) is the caller's doing, BAD_USER_INPUT.
fn with_codes(mut response: Response) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_USER_INPUT");
        }
    }
    response
}

/// The schema's SDL, as checked in at `schema/walkoff.graphql`.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .finish()
    .sdl()
}

pub(crate) fn gateway<'a>(ctx: &Context<'a>) -> &'a Arc<Gateway> {
    ctx.data_unchecked::<Arc<Gateway>>()
}

/// The caller of this request, allowed to do `operation` on `resource`: the one gate every
/// resolver goes through.
pub(crate) fn allowed<'a>(
    ctx: &Context<'a>,
    resource: Resource,
    operation: Operation,
) -> ApiResult<&'a Caller> {
    let caller = credentials(ctx).caller()?;
    authorize(caller, resource, operation)?;
    Ok(caller)
}

/// The caller of this request, signed in (what they may do is checked per object).
pub(crate) fn signed_in<'a>(ctx: &Context<'a>) -> ApiResult<&'a Caller> {
    credentials(ctx).caller()
}

pub(crate) fn credentials<'a>(ctx: &Context<'a>) -> &'a Credentials {
    static NONE: Credentials = Credentials::None;
    ctx.data_opt::<Credentials>().unwrap_or(&NONE)
}

/// How many items a page holds: `first`, checked against the limit (20 when not given).
pub(crate) fn page_size(ctx: &Context<'_>, first: Option<i32>) -> ApiResult<usize> {
    let max = gateway(ctx).config.limits.max_page;
    match first {
        None => Ok(20.min(max)),
        Some(n) if n >= 1 && (n as usize) <= max => Ok(n as usize),
        Some(n) => Err(ApiError::BadUserInput(format!(
            "first must be between 1 and {max}, not {n}"
        ))),
    }
}

pub(crate) fn encode_cursor(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position)
}

pub(crate) fn decode_cursor(cursor: &str) -> ApiResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| ApiError::BadUserInput(format!("'{cursor}' is not a cursor of this list")))
}

/// An id that must be a UUID (execution ids are).
pub(crate) fn parse_uuid(what: &str, id: &str) -> ApiResult<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::BadUserInput(format!("{what} '{id}' is not a UUID")))
}
