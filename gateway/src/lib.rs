//! The GraphQL gateway of walkoff: the schema and its resolvers (one module per resource), the
//! store, authentication, the recorder that persists every event, live subscriptions, and the
//! HTTP and WebSocket transport.
//!
//! Tests call [`graphql::build_schema`]'s `execute` directly, or [`http::router`] through
//! `tower::ServiceExt::oneshot`, without a socket.

pub mod auth;
pub mod config;
pub mod distributed;
pub mod engine;
pub mod error;
pub mod graphql;
pub mod http;
pub mod hub;
pub mod rbac;
pub mod recorder;
pub mod serve;
pub mod store;
pub mod ui;

use std::sync::Arc;

use moka::future::Cache;
use walkoff_dataflow::Plan;

pub use config::{GatewayConfig, Limits};
pub use error::{ApiError, ApiResult};
/// The master key and what is derived from it (shared with executors, which open globals).
pub use walkoff_executors::keys;
pub use walkoff_executors::secrets;

/// Everything a request may need, shared by every request.
pub struct Gateway {
    pub store: store::Store,
    pub auth: Arc<auth::Auth>,
    pub engine: Arc<dyn engine::Engine>,
    pub hub: Arc<hub::Hub>,
    pub config: GatewayConfig,
    /// Compiled plans by (workflow id, version): a stored version never changes, so an entry
    /// is right for as long as it lives; updates and deletes drop the old ones at once.
    pub plans: Cache<(String, i64), Arc<Plan>>,
    /// Permissions of workflows by id (`None`: no such workflow), for the checks that run per
    /// event of a subscription. Changes here drop theirs at once; another replica's show
    /// within the time to live.
    pub access: Cache<String, Option<Arc<rbac::ObjectAccess>>>,
    /// Seals globals' values (and opens them for callers who may read them).
    pub secrets: Arc<secrets::Secrets>,
    /// Each execution's workflow and starter, which never change: who may follow it is decided
    /// without a store read for the executions this gateway started or saw.
    owners: Cache<String, (String, Option<String>)>,
}

impl Gateway {
    pub fn new(
        store: store::Store,
        engine: Arc<dyn engine::Engine>,
        hub: Arc<hub::Hub>,
        config: GatewayConfig,
    ) -> Arc<Gateway> {
        let auth = auth::Auth::new(store.clone(), &config.key);
        let secrets = Arc::new(secrets::Secrets::new(&config.key));
        Arc::new(Gateway {
            store,
            auth,
            engine,
            hub,
            config,
            plans: Cache::builder().max_capacity(1024).build(),
            access: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(5))
                .build(),
            secrets,
            owners: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(3600))
                .build(),
        })
    }

    /// The permissions of a workflow (`None` when there is no such workflow).
    pub async fn workflow_access(&self, id: &str) -> ApiResult<Option<Arc<rbac::ObjectAccess>>> {
        if let Some(known) = self.access.get(id).await {
            return Ok(known);
        }
        let access = self
            .store
            .object_access(store::Table::Workflows, id)
            .await?
            .map(Arc::new);
        self.access.insert(id.to_string(), access.clone()).await;
        Ok(access)
    }

    /// Whether `caller` may see an execution: they started it, or may read its workflow.
    pub async fn may_see_execution(
        &self,
        caller: &auth::Caller,
        row: &store::ExecutionRow,
    ) -> ApiResult<bool> {
        self.may_see(caller, &row.workflow_id, row.started_by_id.as_deref())
            .await
    }

    /// Remember who an execution belongs to (when it is recorded).
    pub async fn remember_owner(&self, execution: &store::ExecutionRow) {
        self.owners
            .insert(
                execution.id.clone(),
                (
                    execution.workflow_id.clone(),
                    execution.started_by_id.clone(),
                ),
            )
            .await;
    }

    /// An execution's workflow and starter (`None`: no such execution).
    pub async fn execution_owner(&self, id: &str) -> ApiResult<Option<(String, Option<String>)>> {
        if let Some(owner) = self.owners.get(id).await {
            return Ok(Some(owner));
        }
        let owner = self.store.execution_owner(id).await?;
        if let Some(owner) = &owner {
            self.owners.insert(id.to_string(), owner.clone()).await;
        }
        Ok(owner)
    }

    /// Whether `caller` may see the execution of `workflow_id` started by `started_by_id`.
    pub async fn may_see(
        &self,
        caller: &auth::Caller,
        workflow_id: &str,
        started_by_id: Option<&str>,
    ) -> ApiResult<bool> {
        if caller.unrestricted || started_by_id == Some(caller.user_id.as_str()) {
            return Ok(true);
        }
        Ok(match self.workflow_access(workflow_id).await? {
            Some(access) => {
                caller.may_on(rbac::Resource::Workflows, &access, rbac::Operation::Read)
            }
            None => false,
        })
    }
}
