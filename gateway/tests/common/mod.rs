//! What the API tests share: a gateway on the embedded engine and a real store, driven through
//! `schema.execute` without a socket.
#![allow(dead_code)]

use std::sync::Arc;

use async_graphql::{Request, Response, Variables};
use futures::StreamExt;
use serde_json::{json, Value};
use walkoff_gateway::auth::Credentials;
use walkoff_gateway::graphql::{build_schema, WalkoffSchema};
use walkoff_gateway::serve::Embedded;
use walkoff_gateway::store::Store;
use walkoff_gateway::GatewayConfig;

pub const PASSWORD: &str = "correct horse battery staple";
pub const SUPER_PASSWORD: &str = "super correct horse battery staple";

pub struct Api {
    pub embedded: Option<Embedded>,
    pub schema: WalkoffSchema,
    _dir: tempfile::TempDir,
}

impl Api {
    pub async fn start() -> Api {
        Api::start_with(GatewayConfig::default()).await
    }

    pub async fn start_with(config: GatewayConfig) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("walkoff.db").display());
        Api::on(&url, config, dir).await
    }

    pub async fn on(url: &str, config: GatewayConfig, dir: tempfile::TempDir) -> Api {
        let store = Store::connect(url).await.unwrap();
        let registry = walkoff_apps::builtin_registry();
        let embedded = Embedded::start(store, &registry, config).await.unwrap();
        embedded
            .gateway
            .auth
            .bootstrap(Some(PASSWORD.into()), Some(SUPER_PASSWORD.into()))
            .await
            .unwrap();
        let schema = build_schema(Arc::clone(&embedded.gateway));
        Api {
            embedded: Some(embedded),
            schema,
            _dir: dir,
        }
    }

    pub async fn credentials(&self, token: Option<&str>) -> Credentials {
        let header = token.map(|t| format!("Bearer {t}"));
        self.embedded
            .as_ref()
            .unwrap()
            .gateway
            .auth
            .credentials(header.as_deref())
            .await
    }

    pub async fn run(&self, token: Option<&str>, query: &str, variables: Value) -> Response {
        let request = Request::new(query)
            .variables(Variables::from_json(variables))
            .data(self.credentials(token).await);
        self.schema.execute(request).await
    }

    /// The data of a request that must succeed.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self.run(Some(token), query, variables).await;
        assert!(response.errors.is_empty(), "{query}: {:?}", response.errors);
        response.data.into_json().unwrap()
    }

    /// The `extensions.code` of a request that must fail.
    pub async fn error(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (String, Value) {
        let response = self.run(token, query, variables).await;
        let error = response
            .errors
            .first()
            .unwrap_or_else(|| panic!("{query} should fail"));
        let extensions = serde_json::to_value(&error.extensions).unwrap();
        (
            extensions["code"].as_str().unwrap_or_default().to_string(),
            extensions,
        )
    }

    pub async fn login(&self) -> String {
        let data = self
            .ok_anonymous(
                "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken refreshToken } }",
                json!({"p": PASSWORD}),
            )
            .await;
        data["login"]["accessToken"].as_str().unwrap().to_string()
    }

    /// An access token for `username`.
    pub async fn login_as(&self, username: &str, password: &str) -> String {
        let data = self
            .ok_anonymous(
                "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }",
                json!({"u": username, "p": password}),
            )
            .await;
        data["login"]["accessToken"].as_str().unwrap().to_string()
    }

    pub async fn ok_anonymous(&self, query: &str, variables: Value) -> Value {
        let response = self.run(None, query, variables).await;
        assert!(response.errors.is_empty(), "{query}: {:?}", response.errors);
        response.data.into_json().unwrap()
    }

    /// Import the WALKOFF 1.0 example; its new id.
    pub async fn import_the_example(&self, token: &str) -> String {
        let imported = self
            .ok(token, IMPORT, json!({"json": semantics_mix()}))
            .await;
        imported["importWorkflow"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every event of an execution, to its end, through the subscription.
    pub async fn events_of(&self, token: &str, execution_id: &str, from: i64) -> Vec<Value> {
        self.schema
            .execute_stream(
                Request::new(EVENTS)
                    .variables(Variables::from_json(
                        json!({"e": execution_id, "from": from}),
                    ))
                    .data(self.credentials(Some(token)).await),
            )
            .map(|r| r.data.into_json().unwrap()["executionEvents"].clone())
            .collect()
            .await
    }

    pub async fn stop(mut self) {
        if let Some(embedded) = self.embedded.take() {
            embedded.stop().await;
        }
    }
}

pub fn semantics_mix() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/walkoff1/semantics-mix.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

pub const IMPORT: &str =
    "mutation($json: JSON!) { importWorkflow(json: $json) { id name version } }";
pub const EXECUTE: &str =
    "mutation($w: ID!, $e: ID) { executeWorkflow(workflowId: $w, executionId: $e) { id status } }";
pub const EVENTS: &str = "subscription($e: ID!, $from: Int) { executionEvents(executionId: $e, fromSequence: $from) { sequence subject status label result error } }";
