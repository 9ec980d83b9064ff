//! The app catalogue: every app version the engine can run, with its actions and their
//! parameters' JSON Schemas, as the workflow editor needs them.

use super::json::Json;
use async_graphql::{Context, Object, SimpleObject};
use walkoff_schema::{ActionApi, AppApi};

use super::{allowed, gateway};
use crate::rbac::{Operation, Resource};
use async_graphql::Result as GqlResult;

#[derive(SimpleObject)]
pub struct App {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub actions: Vec<AppAction>,
}

#[derive(SimpleObject)]
pub struct AppAction {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Vec<AppParameter>,
    /// What the action returns, as its `api.yaml` describes it.
    pub returns: Option<Json>,
}

#[derive(SimpleObject)]
pub struct AppParameter {
    pub name: String,
    pub description: Option<String>,
    /// The JSON Schema a value must satisfy.
    pub schema: Option<Json>,
    pub required: bool,
    /// Whether a parallel action may split this parameter into shards.
    pub parallelizable: bool,
}

fn action(api: &ActionApi) -> AppAction {
    AppAction {
        name: api.name.clone(),
        description: api.description.clone(),
        parameters: api
            .parameters
            .iter()
            .map(|p| AppParameter {
                name: p.name.clone(),
                description: p.description.clone(),
                schema: p.json_schema.clone().map(Json),
                required: p.required,
                parallelizable: p.parallelizable,
            })
            .collect(),
        returns: api.returns.clone().map(Json),
    }
}

fn app(api: &AppApi) -> App {
    App {
        name: api.name.clone(),
        version: api.app_version.clone(),
        description: api.description.clone(),
        actions: api.actions.iter().map(action).collect(),
    }
}

#[derive(Default)]
pub struct AppQuery;

#[Object]
impl AppQuery {
    /// Every app version, by name then version.
    async fn apps(&self, ctx: &Context<'_>) -> GqlResult<Vec<App>> {
        allowed(ctx, Resource::AppApis, Operation::Read)?;
        let catalog = gateway(ctx)
            .engine
            .catalog(false)
            .await
            .map_err(super::workflows::engine_down)?;
        Ok(catalog.apps().map(app).collect())
    }
}
