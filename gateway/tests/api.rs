//! The API through `schema.execute`, without a socket, on the embedded engine and a real
//! store: SQLite in a temporary directory, and PostgreSQL for the store's own guarantees.

mod common;
mod postgres_server;

use common::*;

use std::time::Duration;

use async_graphql::{Request, Response, Variables};
use futures::StreamExt;
use serde_json::json;
use walkoff_gateway::graphql::sdl;
use walkoff_gateway::GatewayConfig;

#[test]
fn the_checked_in_sdl_is_the_served_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/walkoff.graphql");
    let served = sdl();
    if std::env::var_os("WALKOFF_WRITE_SDL").is_some() {
        std::fs::write(path, &served).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == served,
        "schema/walkoff.graphql differs from the served schema; rerun this test with WALKOFF_WRITE_SDL=1 and commit the file"
    );
}

#[tokio::test]
async fn every_operation_but_login_needs_a_valid_token() {
    let api = Api::start().await;
    for query in [
        "{ me { id } }",
        "{ workflows { edges { node { id } } } }",
        "{ apps { name } }",
        "{ executions { edges { node { id } } } }",
    ] {
        let (code, _) = api.error(None, query, json!({})).await;
        assert_eq!(code, "UNAUTHENTICATED", "{query}");
        let (code, _) = api.error(Some("wa_forged"), query, json!({})).await;
        assert_eq!(code, "UNAUTHENTICATED", "{query} with a forged token");
    }
    let (code, _) = api
        .error(
            None,
            "mutation { login(username: \"admin\", password: \"wrong\") { accessToken } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "UNAUTHENTICATED");
    let token = api.login().await;
    let me = api
        .ok(&token, "{ me { username roles { name } } }", json!({}))
        .await;
    assert_eq!(me["me"]["username"], "admin");
    assert_eq!(me["me"]["roles"][0]["name"], "admin");
    api.stop().await;
}

#[tokio::test]
async fn logout_and_refresh_take_effect_at_once() {
    let api = Api::start().await;
    let tokens = api
        .ok_anonymous(
            "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken refreshToken } }",
            json!({"p": PASSWORD}),
        )
        .await;
    let access = tokens["login"]["accessToken"].as_str().unwrap();
    let refresh = tokens["login"]["refreshToken"].as_str().unwrap();
    // Checked (and cached) once, then refreshed: the refresh token is used up.
    api.ok(access, "{ me { id } }", json!({})).await;
    let renewed = api
        .ok_anonymous(
            "mutation($r: String!) { refresh(refreshToken: $r) { accessToken refreshToken } }",
            json!({"r": refresh}),
        )
        .await;
    let new_access = renewed["refresh"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    api.ok(&new_access, "{ me { id } }", json!({})).await;
    // Presenting the used refresh token again revokes the whole login.
    let (code, _) = api
        .error(
            None,
            "mutation($r: String!) { refresh(refreshToken: $r) { accessToken } }",
            json!({"r": refresh}),
        )
        .await;
    assert_eq!(code, "UNAUTHENTICATED");
    let (code, _) = api
        .error(Some(&new_access), "{ me { id } }", json!({}))
        .await;
    assert_eq!(
        code, "UNAUTHENTICATED",
        "the family is revoked, cache or not"
    );

    let token = api.login().await;
    api.ok(&token, "{ me { id } }", json!({})).await;
    api.ok(&token, "mutation { logout }", json!({})).await;
    let (code, _) = api.error(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(
        code, "UNAUTHENTICATED",
        "a logged-out token is refused at once"
    );
    api.stop().await;
}

#[tokio::test]
async fn an_invalid_workflow_is_refused_with_every_problem_and_nothing_stored() {
    let api = Api::start().await;
    let token = api.login().await;
    let broken = json!({
        "id": "broken", "name": "Broken", "start": "a",
        "nodes": [
            {"label": "a", "kind": "action", "app": "basics", "action": "no_such_action"},
            {"label": "b", "kind": "condition", "code": "selected_node = ("}
        ],
        "branches": [{"from": "a", "to": "b"}, {"from": "b", "to": "nowhere"}]
    });
    for mutation in [
        "mutation($json: JSON!) { createWorkflow(json: $json) { id } }",
        IMPORT,
    ] {
        let (code, extensions) = api
            .error(Some(&token), mutation, json!({"json": broken}))
            .await;
        assert_eq!(code, "VALIDATION_FAILED");
        let problems = extensions["problems"].as_array().unwrap();
        assert!(problems.len() >= 3, "every problem at once: {problems:?}");
        assert!(problems.iter().any(|p| p["label"] == "a"));
        assert!(problems
            .iter()
            .any(|p| p["code"] == "script_syntax" && p["line"].is_number()));
    }
    let validation = api
        .ok(
            &token,
            "query($json: JSON!) { validateWorkflow(json: $json) { valid format problems { code label } } }",
            json!({"json": broken}),
        )
        .await;
    assert_eq!(validation["validateWorkflow"]["valid"], false);
    let (code, _) = api
        .error(Some(&token), IMPORT, json!({"json": "{ not json"}))
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
    let list = api
        .ok(&token, "{ workflows { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(list["workflows"]["edges"], json!([]), "nothing was stored");
    api.stop().await;
}

#[tokio::test]
async fn a_walkoff_workflow_runs_to_the_end_through_the_api() {
    let api = Api::start().await;
    let token = api.login().await;
    let workflow_id = api.import_the_example(&token).await;
    assert_ne!(
        workflow_id, "f01e4dc6-0443-500a-a85e-076784fd7e0e",
        "ids are regenerated"
    );
    // Imported again: a new workflow beside the first, never an overwrite.
    let again = api
        .ok(&token, IMPORT, json!({"json": semantics_mix()}))
        .await;
    assert_eq!(again["importWorkflow"]["name"], "Semantics mix (2)");

    // A WALKOFF 1.0 export as it comes, bookkeeping and all (positions with an id_, the run's
    // execution_id): imported, with what was ignored as warnings.
    let mut export = semantics_mix();
    export["execution_id"] = json!("5f1c9a62-0000-4000-8000-000000000000");
    export["actions"][0]["position"]["id_"] = json!("0c0c0c0c-0000-4000-8000-000000000000");
    let imported = api
        .ok(
            &token,
            "mutation($json: JSON!) { importWorkflow(json: $json) { id warnings } }",
            json!({"json": export}),
        )
        .await;
    let warnings = imported["importWorkflow"]["warnings"].to_string();
    for field in ["workflow.execution_id", "actions[0].position.id_"] {
        assert!(warnings.contains(field), "{field} in {warnings}");
    }
    let checked = api
        .ok(
            &token,
            "query($json: JSON!) { validateWorkflow(json: $json) { valid warnings } }",
            json!({"json": export}),
        )
        .await;
    assert_eq!(checked["validateWorkflow"]["valid"], true);
    assert!(checked["validateWorkflow"]["warnings"]
        .to_string()
        .contains("actions[0].position.id_"));

    // Subscribe before the execution exists, with the id the client picked.
    let execution_id = uuid::Uuid::new_v4().to_string();
    let mut events = api
        .schema
        .execute_stream(
            Request::new(EVENTS)
                .variables(Variables::from_json(json!({"e": execution_id})))
                .data(api.credentials(Some(&token)).await),
        )
        .boxed();
    let started = api
        .ok(
            &token,
            EXECUTE,
            json!({"w": workflow_id, "e": execution_id}),
        )
        .await;
    assert_eq!(started["executeWorkflow"]["id"], execution_id.as_str());

    let mut seen = Vec::new();
    let mut sent_trigger = false;
    while let Some(response) = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("events keep coming")
    {
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let event = response.data.into_json().unwrap()["executionEvents"].clone();
        if event["status"] == "AWAITING_DATA" && !sent_trigger {
            sent_trigger = true;
            api.ok(
                &token,
                "mutation($e: ID!) { sendTriggerData(executionId: $e, trigger: \"approval\", data: {approved: true}) }",
                json!({"e": execution_id}),
            )
            .await;
        }
        seen.push(event);
    }
    let sequences: Vec<i64> = seen
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        (1..=seen.len() as i64).collect::<Vec<_>>(),
        "in order, no gap"
    );
    assert_eq!(seen.last().unwrap()["status"], "COMPLETED");

    // The same events, replayed from the store; and a resumption mid-way.
    let replayed = api.events_of(&token, &execution_id, 3).await;
    assert_eq!(replayed, seen[2..].to_vec());

    let execution = api
        .ok(
            &token,
            "query($e: ID!) { execution(id: $e) { status startedAt finishedAt nodes { label status result attempts } } }",
            json!({"e": execution_id}),
        )
        .await;
    let nodes = execution["execution"]["nodes"].as_array().unwrap();
    let node = |label: &str| nodes.iter().find(|n| n["label"] == label).cloned().unwrap();
    assert_eq!(execution["execution"]["status"], "COMPLETED");
    assert_eq!(node("shout")["result"], "ECHOING: WENT LEFT");
    assert_eq!(node("approval")["result"], json!({"approved": true}));
    assert_eq!(node("right")["status"], "SKIPPED");
    api.stop().await;
}

#[tokio::test]
async fn a_changed_workflow_runs_as_changed_at_once() {
    let api = Api::start().await;
    let token = api.login().await;
    let echo = |text: &str| {
        json!({"id": "echo", "name": "Echo", "start": "say",
               "nodes": [{"label": "say", "kind": "action", "app": "basics", "action": "echo_string",
                          "parameters": [{"name": "call", "value": text}]}]})
    };
    let created = api
        .ok(
            &token,
            "mutation($json: JSON!) { createWorkflow(json: $json) { id version } }",
            json!({"json": echo("first")}),
        )
        .await;
    assert_eq!(created["createWorkflow"]["version"], 1);
    let result_of = |execution: String| {
        let api = &api;
        let token = token.clone();
        async move {
            let events = api.events_of(&token, &execution, 1).await;
            events
                .iter()
                .find(|e| e["label"] == "say" && e["status"] == "SUCCESS")
                .map(|e| e["result"].clone())
        }
    };
    let run = api.ok(&token, EXECUTE, json!({"w": "echo"})).await;
    let first = result_of(run["executeWorkflow"]["id"].as_str().unwrap().into()).await;
    assert_eq!(first, Some(json!("ECHOING: first")));

    // A save based on version 1 works once; a second one based on it is stale.
    let update = "mutation($json: JSON!, $v: Int) { updateWorkflow(id: \"echo\", json: $json, expectedVersion: $v) { version } }";
    let updated = api
        .ok(&token, update, json!({"json": echo("second"), "v": 1}))
        .await;
    assert_eq!(updated["updateWorkflow"]["version"], 2);
    let (code, _) = api
        .error(Some(&token), update, json!({"json": echo("third"), "v": 1}))
        .await;
    assert_eq!(code, "CONFLICT");

    let run = api.ok(&token, EXECUTE, json!({"w": "echo"})).await;
    let second = result_of(run["executeWorkflow"]["id"].as_str().unwrap().into()).await;
    assert_eq!(
        second,
        Some(json!("ECHOING: second")),
        "the cached plan of version 1 is not used"
    );

    // Execute-time overrides of the start action's parameters, for one run only.
    let run = api
        .ok(
            &token,
            "mutation { executeWorkflow(workflowId: \"echo\", parameters: [{name: \"call\", value: \"override\"}]) { id } }",
            json!({}),
        )
        .await;
    let overridden = result_of(run["executeWorkflow"]["id"].as_str().unwrap().into()).await;
    assert_eq!(overridden, Some(json!("ECHOING: override")));
    api.stop().await;
}

#[tokio::test]
async fn a_trigger_nobody_answers_fails_when_its_wait_is_over() {
    let api = Api::start().await;
    let token = api.login().await;
    let workflow = json!({"id": "approve", "name": "Approve", "start": "approval",
        "nodes": [
            {"label": "approval", "kind": "trigger", "timeout_ms": 300,
             "schema": {"type": "object", "required": ["approved"]}},
            {"label": "after", "kind": "transform", "code": "result = approval"}
        ],
        "branches": [{"from": "approval", "to": "after"}]});
    api.ok(
        &token,
        "mutation($json: JSON!) { createWorkflow(json: $json) { id } }",
        json!({"json": workflow}),
    )
    .await;
    let run = api.ok(&token, EXECUTE, json!({"w": "approve"})).await;
    let execution = run["executeWorkflow"]["id"].as_str().unwrap().to_string();
    // The stream ends with the workflow's final event: nobody answered, so it ends by itself.
    let events = api.events_of(&token, &execution, 1).await;
    let statuses: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["label"].as_str().unwrap_or(""),
                e["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("", "EXECUTING"),
            ("approval", "AWAITING_DATA"),
            ("approval", "FAILURE"),
            ("after", "SKIPPED"),
            ("", "FAILED"),
        ],
        "{events:#?}"
    );
    let failed = &events[2];
    assert_eq!(
        failed["error"],
        "trigger 'approval' received no data within 300 milliseconds"
    );
    // Data that comes too late is refused, and changes nothing.
    let (code, message) = api
        .error(
            Some(&token),
            "mutation($e: ID!) { sendTriggerData(executionId: $e, trigger: \"approval\", data: {approved: true}) }",
            json!({"e": execution}),
        )
        .await;
    assert!(
        code == "NOT_FOUND" || code == "CONFLICT",
        "{code}: {message}"
    );
    api.stop().await;
}

#[tokio::test]
async fn unknown_ids_and_bad_arguments_are_typed_errors() {
    let mut config = GatewayConfig::default();
    config.limits.pending_execution_wait = Duration::from_millis(300);
    let api = Api::start_with(config).await;
    let token = api.login().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for (query, code) in [
        ("{ workflow(id: \"nope\") { id } }", "NOT_FOUND"),
        ("mutation { deleteWorkflow(id: \"nope\") }", "NOT_FOUND"),
        ("mutation { executeWorkflow(workflowId: \"nope\") { id } }", "NOT_FOUND"),
        ("mutation { executeWorkflow(workflowId: \"nope\", executionId: \"not-a-uuid\") { id } }", "BAD_USER_INPUT"),
        ("{ workflows(first: 0) { edges { cursor } } }", "BAD_USER_INPUT"),
        ("{ workflows(after: \"!!\") { edges { cursor } } }", "BAD_USER_INPUT"),
        ("{ executions(filter: {statuses: [SKIPPED]}) { edges { cursor } } }", "BAD_USER_INPUT"),
    ] {
        let (got, _) = api.error(Some(&token), query, json!({})).await;
        assert_eq!(got, code, "{query}");
    }
    for query in [
        format!("{{ execution(id: \"{unknown}\") {{ id }} }}"),
        format!("mutation {{ abortExecution(id: \"{unknown}\") }}"),
        format!(
            "mutation {{ sendTriggerData(executionId: \"{unknown}\", trigger: \"t\", data: 1) }}"
        ),
    ] {
        let (got, _) = api.error(Some(&token), &query, json!({})).await;
        assert_eq!(got, "NOT_FOUND", "{query}");
    }
    // A subscription to an execution that never comes ends with NOT_FOUND.
    let responses: Vec<Response> = api
        .schema
        .execute_stream(
            Request::new(EVENTS)
                .variables(Variables::from_json(json!({"e": unknown})))
                .data(api.credentials(Some(&token)).await),
        )
        .collect()
        .await;
    let last = responses.last().unwrap();
    let code = serde_json::to_value(&last.errors[0].extensions).unwrap()["code"].clone();
    assert_eq!(code, "NOT_FOUND");
    api.stop().await;
}

#[tokio::test]
async fn queries_beyond_the_depth_limit_are_refused() {
    let mut config = GatewayConfig::default();
    config.limits.max_depth = 3;
    let api = Api::start_with(config).await;
    let token = api.login().await;
    let response = api
        .run(
            Some(&token),
            "{ workflows { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert!(
        response.errors[0].message.contains("too deep"),
        "{:?}",
        response.errors
    );
    api.stop().await;
}

#[tokio::test]
async fn the_store_works_the_same_on_postgresql() {
    let server = postgres_server::PostgresServer::start();
    let url = server.database("api");
    let api = Api::on(&url, GatewayConfig::default(), tempfile::tempdir().unwrap()).await;
    let token = api.login().await;
    let workflow_id = api.import_the_example(&token).await;
    let again = api
        .ok(&token, IMPORT, json!({"json": semantics_mix()}))
        .await;
    assert_eq!(again["importWorkflow"]["name"], "Semantics mix (2)");
    let listed = api
        .ok(
            &token,
            "{ workflows(first: 1, filter: {search: \"MIX\"}) { edges { cursor node { name } } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["workflows"]["pageInfo"]["hasNextPage"], true);
    let run = api.ok(&token, EXECUTE, json!({"w": workflow_id})).await;
    let id = run["executeWorkflow"]["id"].as_str().unwrap().to_string();
    api.ok(
        &token,
        "mutation($e: ID!) { sendTriggerData(executionId: $e, trigger: \"approval\", data: {approved: true}) }",
        json!({"e": id}),
    )
    .await;
    let events = api.events_of(&token, &id, 1).await;
    assert_eq!(events.last().unwrap()["status"], "COMPLETED");
    let page = api
        .ok(
            &token,
            "{ executions(filter: {statuses: [COMPLETED]}) { edges { node { id status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(page["executions"]["edges"][0]["node"]["id"], id.as_str());
    let deleted = api
        .ok(
            &token,
            "mutation($t: DateTime!) { deleteExecutions(olderThan: $t) }",
            json!({"t": chrono::Utc::now() + chrono::Duration::seconds(1)}),
        )
        .await;
    assert_eq!(deleted["deleteExecutions"], 1);
    api.stop().await;
}
