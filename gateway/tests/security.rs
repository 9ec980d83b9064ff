//! Who may do what, through the GraphQL API: the role matrix and the per-object matrix read from
//! `docs/security.md` and run cell by cell, the rules of users and roles, and a property test
//! that no sequence of role changes leaves a user with rights their roles do not grant.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};

const SECURITY_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md");

/// The rows of the table between `<!-- NAME:start -->` and `<!-- NAME:end -->`, header first.
fn doc_table(name: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(SECURITY_DOC).unwrap();
    let start = text
        .find(&format!("<!-- {name}:start -->"))
        .unwrap_or_else(|| panic!("docs/security.md has no {name} table"));
    let end = text.find(&format!("<!-- {name}:end -->")).unwrap();
    text[start..end]
        .lines()
        .filter(|line| line.starts_with('|') && !line.starts_with("|---"))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

/// What a request came to: `✓`, or the code of its first error.
async fn outcome(api: &Api, token: &str, query: &str, variables: Value) -> String {
    let response = api.run(Some(token), query, variables).await;
    match response.errors.first() {
        None => "✓".into(),
        Some(error) => serde_json::to_value(&error.extensions).unwrap()["code"]
            .as_str()
            .unwrap_or("no code")
            .to_string(),
    }
}

struct World {
    api: Api,
    root: String,
    roles: BTreeMap<String, String>,
    counter: std::sync::atomic::AtomicUsize,
}

impl World {
    async fn start() -> World {
        let api = Api::start().await;
        let root = api.login_as("super_admin", SUPER_PASSWORD).await;
        let listed = api.ok(&root, "{ roles { id name } }", json!({})).await;
        let roles = listed["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        World {
            api,
            root,
            roles,
            counter: Default::default(),
        }
    }

    fn unique(&self, prefix: &str) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}-{n}")
    }

    /// A new user holding `role_ids`; their id.
    async fn user(&self, role_ids: &[&str]) -> (String, String) {
        let username = self.unique("user");
        let created = self
            .api
            .ok(
                &self.root,
                "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                json!({"i": {"username": username, "password": PASSWORD, "roleIds": role_ids}}),
            )
            .await;
        (
            created["createUser"]["id"].as_str().unwrap().to_string(),
            username,
        )
    }

    /// The callers of the object matrices: `creator` (a workflow_developer, whose token is
    /// also returned), another workflow_developer, an operator, admin and super_admin.
    async fn matrix_callers(&self) -> (String, BTreeMap<&'static str, String>) {
        let developer = self.roles["workflow_developer"].clone();
        let (_, dev) = self.user(&[developer.as_str()]).await;
        let dev = self.api.login_as(&dev, PASSWORD).await;
        let mut callers = BTreeMap::new();
        callers.insert("creator", dev.clone());
        callers.insert(
            "other workflow_developer",
            self.token_for("workflow_developer").await,
        );
        for role in ["workflow_operator", "admin", "super_admin"] {
            callers.insert(role, self.token_for(role).await);
        }
        (dev, callers)
    }

    /// A signed-in user holding the role named `role`.
    async fn token_for(&self, role: &str) -> String {
        if role == "super_admin" {
            return self.root.clone();
        }
        let id = self.roles[role].clone();
        let (_, username) = self.user(&[id.as_str()]).await;
        self.api.login_as(&username, PASSWORD).await
    }

    async fn import(&self, token: &str, permissions: Option<Value>) -> String {
        let data = self
            .api
            .ok(
                token,
                "mutation($json: JSON!, $p: PermissionsInput) { importWorkflow(json: $json, permissions: $p) { id } }",
                json!({"json": semantics_mix(), "p": permissions}),
            )
            .await;
        data["importWorkflow"]["id"].as_str().unwrap().to_string()
    }

    async fn export(&self, id: &str) -> Value {
        self.api
            .ok(
                &self.root,
                "query($id: ID!) { exportWorkflow(id: $id) }",
                json!({"id": id}),
            )
            .await["exportWorkflow"]
            .clone()
    }

    async fn role(&self) -> String {
        let data = self
            .api
            .ok(
                &self.root,
                "mutation($n: String!) { createRole(input: {name: $n}) { id } }",
                json!({"n": self.unique("role")}),
            )
            .await;
        data["createRole"]["id"].as_str().unwrap().to_string()
    }

    /// Run `operation` on `resource` as `token`, on objects made for it by super_admin.
    async fn attempt(&self, token: &str, resource: &str, operation: &str) -> String {
        let api = &self.api;
        match (resource, operation) {
            ("app_apis", "read") => outcome(api, token, "{ apps { name } }", json!({})).await,
            ("settings", "read") => {
                outcome(api, token, "{ settings { loginAttemptsPerMinute } }", json!({})).await
            }
            ("settings", "update") => {
                outcome(
                    api,
                    token,
                    "mutation { updateSettings(input: {executionRetentionDays: 0}) { executionRetentionDays } }",
                    json!({}),
                )
                .await
            }
            ("global_variables", "create") => {
                outcome(
                    api,
                    token,
                    "mutation($n: String!) { createGlobal(input: {name: $n, value: \"v\"}) { id } }",
                    json!({"n": self.unique("global")}),
                )
                .await
            }
            ("global_variables", op) => {
                let id = self.global(None).await;
                self.on_global(token, op, &id).await
            }
            ("workflows", "create") => {
                outcome(
                    api,
                    token,
                    "mutation($json: JSON!) { importWorkflow(json: $json) { id } }",
                    json!({"json": semantics_mix()}),
                )
                .await
            }
            ("workflows", op) => {
                let id = self.import(&self.root, None).await;
                self.on_workflow(token, op, &id).await
            }
            ("workflowstatus", "read") => {
                outcome(
                    api,
                    token,
                    "{ executions { edges { node { id } } } }",
                    json!({}),
                )
                .await
            }
            ("workflowstatus", "delete") => {
                outcome(
                    api,
                    token,
                    "mutation { deleteExecutions(olderThan: \"2000-01-01T00:00:00Z\") }",
                    json!({}),
                )
                .await
            }
            ("roles", "create") => {
                outcome(
                    api,
                    token,
                    "mutation($n: String!) { createRole(input: {name: $n}) { id } }",
                    json!({"n": self.unique("role")}),
                )
                .await
            }
            ("roles", "read") => outcome(api, token, "{ roles { id } }", json!({})).await,
            ("roles", "update") => {
                let id = self.role().await;
                outcome(
                    api,
                    token,
                    "mutation($id: ID!) { updateRole(id: $id, input: {description: \"changed\"}) { id } }",
                    json!({"id": id}),
                )
                .await
            }
            ("roles", "delete") => {
                let id = self.role().await;
                outcome(
                    api,
                    token,
                    "mutation($id: ID!) { deleteRole(id: $id) }",
                    json!({"id": id}),
                )
                .await
            }
            ("users", "create") => {
                outcome(
                    api,
                    token,
                    "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                    json!({"i": {"username": self.unique("new"), "password": PASSWORD}}),
                )
                .await
            }
            ("users", "read") => outcome(api, token, "{ users { id } }", json!({})).await,
            ("users", "update") => {
                let (id, _) = self.user(&[]).await;
                outcome(
                    api,
                    token,
                    "mutation($id: ID!) { updateUser(id: $id, input: {active: false}) { id } }",
                    json!({"id": id}),
                )
                .await
            }
            ("users", "delete") => {
                let (id, _) = self.user(&[]).await;
                outcome(
                    api,
                    token,
                    "mutation($id: ID!) { deleteUser(id: $id) }",
                    json!({"id": id}),
                )
                .await
            }
            other => panic!("the role matrix names {other:?}, which this test cannot run"),
        }
    }

    /// A global made by super_admin (holding "the value"), with these permissions.
    async fn global(&self, permissions: Option<Value>) -> String {
        self.global_as(&self.root, permissions).await
    }

    async fn global_as(&self, token: &str, permissions: Option<Value>) -> String {
        let data = self
            .api
            .ok(
                token,
                "mutation($n: String!, $p: PermissionsInput) { createGlobal(input: {name: $n, value: \"the value\", permissions: $p}) { id } }",
                json!({"n": self.unique("global"), "p": permissions}),
            )
            .await;
        data["createGlobal"]["id"].as_str().unwrap().to_string()
    }

    /// One operation on one global; `execute` runs a workflow (open to everyone) that uses it.
    async fn on_global(&self, token: &str, operation: &str, id: &str) -> String {
        let api = &self.api;
        match operation {
            "read" => {
                outcome(
                    api,
                    token,
                    "query($id: ID!) { global(id: $id) { id value } }",
                    json!({"id": id}),
                )
                .await
            }
            "update" => {
                outcome(
                    api,
                    token,
                    "mutation($id: ID!) { updateGlobal(id: $id, input: {description: \"changed\"}) { id } }",
                    json!({"id": id}),
                )
                .await
            }
            "delete" => {
                outcome(
                    api,
                    token,
                    "mutation($id: ID!) { deleteGlobal(id: $id) }",
                    json!({"id": id}),
                )
                .await
            }
            "execute" => {
                let workflow = json!({
                    "id": uuid::Uuid::new_v4().to_string(),
                    "name": self.unique("uses a global"),
                    "start": "use",
                    "nodes": [{"label": "use", "kind": "action", "app": "basics", "action": "echo_string",
                               "parameters": [{"name": "call", "variant": "GLOBAL", "value": id}]}],
                    "branches": []
                });
                let created = api
                    .ok(
                        &self.root,
                        "mutation($j: JSON!) { createWorkflow(json: $j) { id } }",
                        json!({"j": workflow}),
                    )
                    .await;
                let workflow = created["createWorkflow"]["id"].as_str().unwrap().to_string();
                outcome(api, token, EXECUTE, json!({"w": workflow})).await
            }
            other => panic!("no global operation '{other}'"),
        }
    }

    async fn global_listed(&self, token: &str, id: &str) -> bool {
        let data = self.api.ok(token, "{ globals { id } }", json!({})).await;
        data["globals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == id)
    }

    /// One operation on one workflow.
    async fn on_workflow(&self, token: &str, operation: &str, id: &str) -> String {
        let api = &self.api;
        match operation {
            "read" => {
                outcome(
                    api,
                    token,
                    "query($id: ID!) { workflow(id: $id) { id } }",
                    json!({"id": id}),
                )
                .await
            }
            "update" => {
                let document = self.export(id).await;
                outcome(
                    api,
                    token,
                    "mutation($id: ID!, $json: JSON!) { updateWorkflow(id: $id, json: $json) { id } }",
                    json!({"id": id, "json": document}),
                )
                .await
            }
            "delete" => {
                outcome(
                    api,
                    token,
                    "mutation($id: ID!) { deleteWorkflow(id: $id) }",
                    json!({"id": id}),
                )
                .await
            }
            "execute" => outcome(api, token, EXECUTE, json!({"w": id})).await,
            other => panic!("no workflow operation '{other}'"),
        }
    }

    async fn listed(&self, token: &str, id: &str) -> bool {
        let data = self
            .api
            .ok(
                token,
                "{ workflows(first: 200) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        data["workflows"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"]["id"] == id)
    }
}

#[tokio::test]
async fn every_default_role_may_do_what_the_role_matrix_says_and_nothing_else() {
    let world = World::start().await;
    let table = doc_table("role-matrix");
    let header = &table[0];
    let role_columns: Vec<String> = header[2..].to_vec();

    // The table covers every visible default role and every operation a role can grant.
    let listed = world
        .api
        .ok(
            &world.root,
            "{ roles { name builtin } availableResourceActions { name operations } }",
            json!({}),
        )
        .await;
    let defaults: BTreeSet<String> = listed["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["builtin"] == true)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        defaults,
        role_columns.iter().cloned().collect::<BTreeSet<_>>(),
        "the matrix's columns are the visible default roles"
    );
    let mut catalogue = BTreeSet::new();
    for resource in listed["availableResourceActions"].as_array().unwrap() {
        for op in resource["operations"].as_array().unwrap() {
            catalogue.insert((
                resource["name"].as_str().unwrap().to_string(),
                op.as_str().unwrap().to_string(),
            ));
        }
    }
    let rows: BTreeSet<(String, String)> = table[1..]
        .iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect();
    assert_eq!(
        rows, catalogue,
        "the matrix's rows are every resource × operation"
    );

    let mut tokens = BTreeMap::new();
    for role in &role_columns {
        tokens.insert(role.clone(), world.token_for(role).await);
    }
    let mut wrong = Vec::new();
    for row in &table[1..] {
        let (resource, operation) = (&row[0], &row[1]);
        for (column, role) in role_columns.iter().enumerate() {
            let expected = &row[2 + column];
            let got = world.attempt(&tokens[role], resource, operation).await;
            if &got != expected {
                wrong.push(format!(
                    "{role} {operation} {resource}: expected {expected}, got {got}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A role granting nothing (WALKOFF's limited_role) is refused everything: before any
    // lookup, or as if the workflow did not exist.
    let nothing = world.role().await;
    let (_, limited) = world.user(&[nothing.as_str()]).await;
    let limited = world.api.login_as(&limited, PASSWORD).await;
    for (resource, operation) in &catalogue {
        let expected = if (resource == "workflows" || resource == "global_variables")
            && operation != "create"
        {
            "NOT_FOUND"
        } else {
            "FORBIDDEN"
        };
        let got = world.attempt(&limited, resource, operation).await;
        assert_eq!(
            got, expected,
            "a user without grants: {operation} {resource}"
        );
    }
    world.api.stop().await;
}

#[tokio::test]
async fn each_access_level_lets_whom_the_object_matrix_says() {
    let world = World::start().await;
    let table = doc_table("object-matrix");
    assert_eq!(
        table[0],
        [
            "Access level",
            "Caller",
            "listed",
            "read",
            "update",
            "delete",
            "execute"
        ]
    );
    let (dev, callers) = world.matrix_callers().await;
    let operator = world.roles["workflow_operator"].clone();
    let mut wrong = Vec::new();
    for row in &table[1..] {
        let level = row[0].as_str();
        let permissions = match level {
            "ROLE_BASED" => json!({"accessLevel": level, "roles": [
                {"roleId": operator, "operations": ["read", "execute"]}
            ]}),
            _ => json!({"accessLevel": level}),
        };
        let caller = row[1].as_str();
        let token = callers
            .get(caller)
            .unwrap_or_else(|| panic!("the object matrix names an unknown caller '{caller}'"));
        let id = world.import(&dev, Some(permissions.clone())).await;
        let listed = if world.listed(token, &id).await {
            "✓"
        } else {
            "no"
        };
        if listed != row[2] {
            wrong.push(format!(
                "{level} {caller} listed: expected {}, got {listed}",
                row[2]
            ));
        }
        // An execution its creator started is visible exactly when the workflow is readable.
        let started = world.api.ok(&dev, EXECUTE, json!({"w": id})).await;
        let execution = started["executeWorkflow"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let seen = outcome(
            &world.api,
            token,
            "query($id: ID!) { execution(id: $id) { id } }",
            json!({"id": execution}),
        )
        .await;
        if seen != row[3] {
            wrong.push(format!(
                "{level} {caller} reading an execution: expected {}, got {seen}",
                row[3]
            ));
        }
        for (column, operation) in ["read", "update", "delete", "execute"].iter().enumerate() {
            let expected = &row[3 + column];
            let id = world.import(&dev, Some(permissions.clone())).await;
            let got = world.on_workflow(token, operation, &id).await;
            if &got != expected {
                wrong.push(format!(
                    "{level} {caller} {operation}: expected {expected}, got {got}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    world.api.stop().await;
}

#[tokio::test]
async fn each_access_level_lets_whom_the_global_matrix_says() {
    let world = World::start().await;
    let table = doc_table("global-matrix");
    assert_eq!(
        table[0],
        [
            "Access level",
            "Caller",
            "listed",
            "read",
            "update",
            "delete",
            "execute"
        ]
    );
    let (dev, callers) = world.matrix_callers().await;
    let operator = world.roles["workflow_operator"].clone();
    let mut wrong = Vec::new();
    for row in &table[1..] {
        let level = row[0].as_str();
        let permissions = match level {
            "ROLE_BASED" => json!({"accessLevel": level, "roles": [
                {"roleId": operator, "operations": ["execute"]}
            ]}),
            _ => json!({"accessLevel": level}),
        };
        let caller = row[1].as_str();
        let token = &callers[caller];
        let id = world.global_as(&dev, Some(permissions.clone())).await;
        let listed = if world.global_listed(token, &id).await {
            "✓"
        } else {
            "no"
        };
        if listed != row[2] {
            wrong.push(format!(
                "{level} {caller} listed: expected {}, got {listed}",
                row[2]
            ));
        }
        for (column, operation) in ["read", "update", "delete", "execute"].iter().enumerate() {
            let expected = &row[3 + column];
            let id = world.global_as(&dev, Some(permissions.clone())).await;
            let got = world.on_global(token, operation, &id).await;
            if &got != expected {
                wrong.push(format!(
                    "{level} {caller} {operation}: expected {expected}, got {got}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    world.api.stop().await;
}

#[tokio::test]
async fn users_and_roles_keep_walkoffs_rules() {
    let world = World::start().await;
    let api = &world.api;
    let root = world.root.as_str();
    let admin = api.login().await;

    // WALKOFF's seeded accounts, with its fixed ids; the internal role is hidden.
    let users = api
        .ok(root, "{ users { id username roles { name } } }", json!({}))
        .await;
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "super_admin"]);
    let admin_user = api
        .ok(
            root,
            "{ user(id: \"admin\") { id roles { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        admin_user["user"]["id"],
        "00000000-0000-6164-6d69-6e5f75736572"
    );
    assert_eq!(
        admin_user["user"]["roles"][0]["id"],
        "00000000-0000-6164-6d69-6e5f726f6c65"
    );
    let roles = api.ok(root, "{ roles { name } }", json!({})).await;
    assert_eq!(roles["roles"].as_array().unwrap().len(), 5);
    let (code, _) = api
        .error(
            Some(root),
            "{ role(id: \"internal_user\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) = api
        .error(Some(root), "{ user(id: \"404\") { id } }", json!({}))
        .await;
    assert_eq!(code, "NOT_FOUND");

    // Nobody deletes themselves; nobody touches super_admin but super_admin.
    let delete = "mutation($id: ID!) { deleteUser(id: $id) }";
    let (code, _) = api
        .error(Some(&admin), delete, json!({"id": "admin"}))
        .await;
    assert_eq!(code, "FORBIDDEN");
    let (code, _) = api
        .error(Some(&admin), delete, json!({"id": "super_admin"}))
        .await;
    assert_eq!(code, "FORBIDDEN");
    let (code, _) = api
        .error(Some(root), delete, json!({"id": "super_admin"}))
        .await;
    assert_eq!(code, "FORBIDDEN");
    let rename =
        "mutation($id: ID!, $i: UpdateUserInput!) { updateUser(id: $id, input: $i) { username } }";
    let (code, _) = api
        .error(
            Some(&admin),
            rename,
            json!({"id": "super_admin", "i": {"username": "mine"}}),
        )
        .await;
    assert_eq!(code, "FORBIDDEN");
    let (code, _) = api
        .error(
            Some(root),
            rename,
            json!({"id": "super_admin", "i": {"active": false}}),
        )
        .await;
    assert_eq!(code, "FORBIDDEN", "super_admin cannot deactivate itself");

    // The reserved roles are given to nobody; unknown roles are named.
    let create = "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }";
    for reserved in [
        "00000000-0073-6164-6d69-6e5f726f6c65",
        "00000069-6e74-6572-6e61-6c5f726f6c65",
    ] {
        let (code, _) = api
            .error(
                Some(root),
                create,
                json!({"i": {"username": "x1", "password": PASSWORD, "roleIds": [reserved]}}),
            )
            .await;
        assert_eq!(code, "FORBIDDEN");
    }
    let (code, extensions) = api
        .error(
            Some(root),
            create,
            json!({"i": {"username": "x1", "password": PASSWORD, "roleIds": ["nope"]}}),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT", "{extensions}");
    let (code, _) = api
        .error(
            Some(root),
            create,
            json!({"i": {"username": "admin", "password": PASSWORD}}),
        )
        .await;
    assert_eq!(
        code,
        "CONFLICT",
        "a taken username: {:?}",
        api.run(
            Some(root),
            create,
            json!({"i": {"username": "admin", "password": PASSWORD}})
        )
        .await
        .errors
    );
    let (code, _) = api
        .error(
            Some(root),
            create,
            json!({"i": {"username": "short", "password": "1234567"}}),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT", "a password under 8 characters");

    // Default roles are immutable; custom ones change and go.
    for role in ["admin", "workflow_operator", "super_admin"] {
        let (code, _) = api
            .error(
                Some(root),
                "mutation($id: ID!) { updateRole(id: $id, input: {description: \"x\"}) { id } }",
                json!({"id": role}),
            )
            .await;
        assert_eq!(code, "FORBIDDEN", "updating {role}");
        let (code, _) = api
            .error(
                Some(root),
                "mutation($id: ID!) { deleteRole(id: $id) }",
                json!({"id": role}),
            )
            .await;
        assert_eq!(code, "FORBIDDEN", "deleting {role}");
    }
    let (code, extensions) = api
        .error(
            Some(root),
            "mutation { createRole(input: {name: \"r\", resources: [{name: \"dashboards\", operations: [\"read\"]}]}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT", "{extensions}");

    // The last account able to manage users stays: with super_admin able to, admin may go;
    // a custom role's holder is demoted as soon as the role loses the grant.
    let managers = api
        .ok(
            root,
            "mutation { createRole(input: {name: \"managers\", resources: [{name: \"users\", operations: [\"read\", \"update\"]}]}) { id } }",
            json!({}),
        )
        .await["createRole"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (manager_id, manager) = world.user(&[managers.as_str()]).await;
    let manager = api.login_as(&manager, PASSWORD).await;
    api.ok(&manager, "{ users { id } }", json!({})).await;
    api.ok(
        root,
        "mutation($id: ID!) { updateRole(id: $id, input: {resources: [{name: \"roles\", operations: [\"read\"]}]}) { id } }",
        json!({"id": managers}),
    )
    .await;
    let (code, _) = api
        .error(Some(&manager), "{ users { id } }", json!({}))
        .await;
    assert_eq!(
        code, "FORBIDDEN",
        "a changed role applies to its holders' next request"
    );
    api.ok(root, delete, json!({"id": "admin"})).await;
    api.ok(root, delete, json!({"id": manager_id})).await;
    let (code, _) = api.error(Some(&admin), "{ me { id } }", json!({})).await;
    assert_eq!(
        code, "UNAUTHENTICATED",
        "a deleted user's token stops working at once"
    );

    // updateMe asks for the current password, and ends every login of the user.
    let me = "mutation($i: UpdateMeInput!) { updateMe(input: $i) { username } }";
    let (code, _) = api
        .error(
            Some(root),
            me,
            json!({"i": {"oldPassword": "wrong password", "newPassword": "a new password"}}),
        )
        .await;
    assert_eq!(code, "FORBIDDEN");
    api.ok(
        root,
        me,
        json!({"i": {"oldPassword": SUPER_PASSWORD, "newPassword": "a new password"}}),
    )
    .await;
    let (code, _) = api.error(Some(root), "{ me { id } }", json!({})).await;
    assert_eq!(code, "UNAUTHENTICATED");
    api.login_as("super_admin", "a new password").await;
    world.api.stop().await;
}

#[tokio::test]
async fn the_last_user_manager_cannot_be_removed() {
    let world = World::start().await;
    let api = &world.api;
    let admin = api.login().await;
    let (id, _) = world
        .user(&[world.roles["workflow_operator"].as_str()])
        .await;
    let other = world.user(&[world.roles["admin"].as_str()]).await;
    // A store where admin is the only account able to manage users: super_admin deleted
    // directly, as a migrated WALKOFF deployment might be.
    api.embedded
        .as_ref()
        .unwrap()
        .gateway
        .store
        .delete_user("00000000-0073-6164-6d69-6e5f75736572")
        .await
        .unwrap();
    api.ok(
        &admin,
        "mutation($id: ID!) { deleteUser(id: $id) }",
        json!({"id": other.0}),
    )
    .await;
    let demote = "mutation($i: UpdateUserInput!) { updateUser(id: \"admin\", input: $i) { id } }";
    let (code, extensions) = api
        .error(
            Some(&admin),
            demote,
            json!({"i": {"roleIds": [world.roles["workflow_operator"]]}}),
        )
        .await;
    assert_eq!(code, "CONFLICT", "{extensions}");
    let (code, _) = api
        .error(Some(&admin), demote, json!({"i": {"active": false}}))
        .await;
    assert_eq!(code, "CONFLICT");
    // Nothing was written: admin still manages users, the operator is still there.
    api.ok(
        &admin,
        "query($id: ID!) { user(id: $id) { id } }",
        json!({"id": id}),
    )
    .await;
    world.api.stop().await;
}

/// A step of the property test, applied as super_admin.
#[derive(Debug, Clone)]
enum Change {
    /// Give the custom role `n` these (resource, operation) grants.
    Grant(usize, Vec<(usize, usize)>),
    /// Make the subject hold these custom roles.
    Hold(Vec<usize>),
    DeleteRole(usize),
}

const ROLES: usize = 3;

fn catalogue() -> Vec<(&'static str, &'static str)> {
    vec![
        ("app_apis", "read"),
        ("settings", "read"),
        ("workflows", "create"),
        ("workflows", "read"),
        ("workflows", "execute"),
        ("workflowstatus", "read"),
        ("workflowstatus", "delete"),
        ("roles", "read"),
        ("roles", "create"),
        ("users", "read"),
        ("users", "create"),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    let grants = prop::collection::vec((0..catalogue().len(), 0..1usize), 0..5);
    prop_oneof![
        (0..ROLES, grants).prop_map(|(n, g)| Change::Grant(n, g)),
        prop::collection::vec(0..ROLES, 0..3).prop_map(Change::Hold),
        (0..ROLES).prop_map(Change::DeleteRole),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// After every change, what the subject may do (asked of the gates themselves, with the
    /// token they hold, signing in again only when a change ended their login) is exactly what
    /// their roles grant now.
    #[test]
    fn no_sequence_of_role_changes_leaves_rights_the_roles_do_not_grant(
        changes in prop::collection::vec(change(), 1..7)
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let world = World::start().await;
            let api = &world.api;
            let mut roles: Vec<Option<String>> = Vec::new();
            let mut grants: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); ROLES];
            for _ in 0..ROLES {
                roles.push(Some(world.role().await));
            }
            let (subject, username) = world.user(&[]).await;
            let mut held: BTreeSet<usize> = BTreeSet::new();
            let mut token = api.login_as(&username, PASSWORD).await;
            let table = catalogue();
            for change in changes {
                match change {
                    Change::Grant(n, pairs) => {
                        let Some(id) = roles[n].clone() else { continue };
                        let chosen: BTreeSet<usize> = pairs.into_iter().map(|(i, _)| i).collect();
                        let mut resources: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                        for i in &chosen {
                            resources.entry(table[*i].0).or_default().push(table[*i].1);
                        }
                        let resources: Vec<Value> = resources
                            .into_iter()
                            .map(|(name, ops)| json!({"name": name, "operations": ops}))
                            .collect();
                        api.ok(
                            &world.root,
                            "mutation($id: ID!, $r: [ResourceGrantInput!]) { updateRole(id: $id, input: {resources: $r}) { id } }",
                            json!({"id": id, "r": resources}),
                        )
                        .await;
                        grants[n] = chosen;
                    }
                    Change::Hold(ns) => {
                        let ids: Vec<String> = ns.iter().filter_map(|n| roles[*n].clone()).collect();
                        api.ok(
                            &world.root,
                            "mutation($id: ID!, $r: [ID!]) { updateUser(id: $id, input: {roleIds: $r}) { id } }",
                            json!({"id": subject, "r": ids}),
                        )
                        .await;
                        held = ns.into_iter().filter(|n| roles[*n].is_some()).collect();
                    }
                    Change::DeleteRole(n) => {
                        let Some(id) = roles[n].take() else { continue };
                        api.ok(&world.root, "mutation($id: ID!) { deleteRole(id: $id) }", json!({"id": id})).await;
                        held.remove(&n);
                        grants[n].clear();
                    }
                }
                // The token in hand, or a new one when the change ended the login.
                if !api.run(Some(&token), "{ me { id } }", json!({})).await.errors.is_empty() {
                    token = api.login_as(&username, PASSWORD).await;
                }
                let granted: BTreeSet<usize> = held.iter().flat_map(|n| grants[*n].iter().copied()).collect();
                let read_workflows = table.iter().position(|p| *p == ("workflows", "read"));
                for (i, (resource, operation)) in table.iter().enumerate() {
                    let got = world.attempt(&token, resource, operation).await;
                    let allowed = got == "✓";
                    // A workflow one may not read is not found, whatever else one may do.
                    let expected = granted.contains(&i)
                        && (*resource != "workflows" || *operation == "create"
                            || read_workflows.is_some_and(|r| granted.contains(&r)));
                    assert_eq!(
                        allowed,
                        expected,
                        "{operation} {resource}: got {got}; holding {held:?} with grants {grants:?}"
                    );
                }
            }
            world.api.stop().await;
        });
    }
}

#[tokio::test]
async fn settings_are_read_changed_checked_and_applied_to_new_tokens() {
    let world = World::start().await;
    let api = &world.api;
    let root = world.root.as_str();
    let read = "{ settings { accessTokenLifetimeMinutes refreshTokenLifetimeDays loginAttemptsPerMinute executionRetentionDays } }";
    let defaults = api.ok(root, read, json!({})).await;
    assert_eq!(
        defaults["settings"],
        json!({"accessTokenLifetimeMinutes": 15, "refreshTokenLifetimeDays": 90, "loginAttemptsPerMinute": 10, "executionRetentionDays": 0})
    );
    let update =
        "mutation($i: SettingsInput!) { updateSettings(input: $i) { accessTokenLifetimeMinutes } }";
    // Out of range, or an access token outliving its refresh token: refused, nothing changed.
    for bad in [
        json!({"accessTokenLifetimeMinutes": 0}),
        json!({"refreshTokenLifetimeDays": 4000}),
        json!({"accessTokenLifetimeMinutes": 1440, "refreshTokenLifetimeDays": 1}),
        json!({"loginAttemptsPerMinute": 0, "executionRetentionDays": 5}),
    ] {
        let (code, extensions) = api.error(Some(root), update, json!({"i": bad})).await;
        assert_eq!(code, "BAD_USER_INPUT", "{bad}: {extensions}");
    }
    assert_eq!(api.ok(root, read, json!({})).await, defaults);
    api.ok(
        root,
        update,
        json!({"i": {"accessTokenLifetimeMinutes": 2}}),
    )
    .await;
    // The next token lives two minutes.
    let token = api.login_as("super_admin", SUPER_PASSWORD).await;
    let claims = claims_of(&token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );

    // Retention: a finished execution older than the days kept goes, with its events; a
    // newer one stays.
    let workflow = world.import(root, None).await;
    let mut finished = Vec::new();
    for _ in 0..2 {
        let started = api.ok(root, EXECUTE, json!({"w": workflow})).await;
        let id = started["executeWorkflow"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        api.ok(
            root,
            "mutation($id: ID!) { abortExecution(id: $id) }",
            json!({"id": id}),
        )
        .await;
        finished.push(id);
    }
    for id in &finished {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let data = api
                .ok(
                    root,
                    "query($id: ID!) { execution(id: $id) { status } }",
                    json!({"id": id}),
                )
                .await;
            if data["execution"]["status"] == "ABORTED" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{data}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let gateway = &api.embedded.as_ref().unwrap().gateway;
    let three_days_ago = (chrono::Utc::now() - chrono::Duration::days(3)).timestamp_micros();
    sqlx::query("UPDATE executions SET created_at = $1 WHERE id = $2")
        .bind(three_days_ago)
        .bind(&finished[0])
        .execute(gateway.store.pool())
        .await
        .unwrap();
    assert_eq!(
        walkoff_gateway::serve::apply_retention(gateway)
            .await
            .unwrap(),
        0,
        "0 keeps everything"
    );
    api.ok(root, update, json!({"i": {"executionRetentionDays": 2}}))
        .await;
    assert_eq!(
        walkoff_gateway::serve::apply_retention(gateway)
            .await
            .unwrap(),
        1
    );
    let (code, _) = api
        .error(
            Some(root),
            "query($id: ID!) { execution(id: $id) { id } }",
            json!({"id": finished[0]}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
    api.ok(
        root,
        "query($id: ID!) { execution(id: $id) { id } }",
        json!({"id": finished[1]}),
    )
    .await;
    world.api.stop().await;
}

/// The claims of a JWT, read without checking it.
fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    use base64::Engine as _;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use walkoff_gateway::keys::{MasterKey, Purpose};

    let key = MasterKey::random();
    let api = Api::start_with(walkoff_gateway::GatewayConfig {
        key: key.clone(),
        ..Default::default()
    })
    .await;
    let good = api.login().await;
    let claims = claims_of(&good);
    let me = "{ me { id } }";
    api.ok(&good, me, json!({})).await;
    let secret = key.derive(Purpose::Tokens);
    let sign = |claims: &Value, algorithm: Algorithm, secret: &[u8]| {
        encode(
            &Header::new(algorithm),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = chrono::Utc::now().timestamp();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 600);
    expired["exp"] = json!(now - 1);
    let mut longer = claims.clone();
    longer["exp"] = json!(now + 365 * 24 * 3600);
    let mut someone_else = claims.clone();
    someone_else["sub"] = json!("00000000-0073-6164-6d69-6e5f75736572");
    let mut unknown_login = claims.clone();
    unknown_login["fam"] = json!(uuid::Uuid::new_v4().to_string());
    let mut not_access = claims.clone();
    not_access["typ"] = json!("refresh");
    let (header, payload, _) = {
        let mut parts = good.split('.');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };
    let forged_payload = b64(serde_json::to_string(&longer).unwrap().as_bytes());
    let attacks = [
        ("expired", sign(&expired, Algorithm::HS256, &secret)),
        (
            "signed with another key",
            sign(&longer, Algorithm::HS256, b"not the server's key at all"),
        ),
        (
            "HS512 with the right key",
            sign(&claims, Algorithm::HS512, &secret),
        ),
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), payload),
        ),
        (
            "alg none, signature kept",
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                payload,
                good.split('.').nth(2).unwrap()
            ),
        ),
        (
            "payload changed, signature kept",
            format!(
                "{header}.{forged_payload}.{}",
                good.split('.').nth(2).unwrap()
            ),
        ),
        (
            "another user's id (signed: a leaked key)",
            sign(&someone_else, Algorithm::HS256, &secret),
        ),
        (
            "a login that does not exist",
            sign(&unknown_login, Algorithm::HS256, &secret),
        ),
        (
            "not an access token",
            sign(&not_access, Algorithm::HS256, &secret),
        ),
        ("garbage", "a.b.c".to_string()),
        ("empty", String::new()),
    ];
    for (what, token) in attacks {
        let (code, extensions) = api.error(Some(&token), me, json!({})).await;
        assert_eq!(code, "UNAUTHENTICATED", "{what}: {extensions}");
    }
    // A refresh token is not an access token either way round.
    let pair = api
        .ok_anonymous(
            "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken refreshToken } }",
            json!({"p": PASSWORD}),
        )
        .await;
    let refresh = pair["login"]["refreshToken"].as_str().unwrap();
    let access = pair["login"]["accessToken"].as_str().unwrap();
    let (code, _) = api.error(Some(refresh), me, json!({})).await;
    assert_eq!(code, "UNAUTHENTICATED");
    let (code, _) = api
        .error(
            None,
            "mutation($r: String!) { refresh(refreshToken: $r) { accessToken } }",
            json!({"r": access}),
        )
        .await;
    assert_eq!(code, "UNAUTHENTICATED");
    api.ok(&good, me, json!({})).await;
    api.stop().await;
}

#[tokio::test]
async fn a_thousand_wrong_logins_are_refused_and_throttled_without_touching_the_store() {
    let world = World::start().await;
    let api = &world.api;
    let login =
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }";
    let users_before = api
        .ok(&world.root, "{ users { id username active } }", json!({}))
        .await;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..1000 {
        let (code, _) = api
            .error(
                None,
                login,
                json!({"u": "admin", "p": format!("guess {n}")}),
            )
            .await;
        *codes.entry(code).or_default() += 1;
    }
    // The first attempts of the minute are checked (and fail); the rest are refused unchecked.
    assert_eq!(codes.get("UNAUTHENTICATED"), Some(&10), "{codes:?}");
    assert_eq!(codes.get("RATE_LIMITED"), Some(&990), "{codes:?}");
    // The right password is refused too while the username is throttled.
    let (code, _) = api
        .error(None, login, json!({"u": "admin", "p": PASSWORD}))
        .await;
    assert_eq!(code, "RATE_LIMITED");
    // Another user is not.
    api.login_as("super_admin", SUPER_PASSWORD).await;
    // Nothing was written: the same users, still active, and a token issued earlier works.
    assert_eq!(
        api.ok(&world.root, "{ users { id username active } }", json!({}))
            .await,
        users_before
    );
    world.api.stop().await;
}

#[tokio::test]
async fn nobody_follows_an_execution_they_may_not_see() {
    let world = World::start().await;
    let api = &world.api;
    let developer = world.roles["workflow_developer"].clone();
    let (_, dev) = world.user(&[developer.as_str()]).await;
    let dev = api.login_as(&dev, PASSWORD).await;
    let operator = world.token_for("workflow_operator").await;
    let id = world
        .import(&dev, Some(json!({"accessLevel": "ONLY_ME"})))
        .await;
    let started = api.ok(&dev, EXECUTE, json!({"w": id})).await;
    let execution = started["executeWorkflow"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The operator's subscription to it ends at once with NOT_FOUND, no event delivered;
    // its creator's delivers its first event.
    let first = |token: String| {
        let execution = execution.clone();
        async move {
            use futures::StreamExt;
            let request = async_graphql::Request::new(EVENTS)
                .variables(async_graphql::Variables::from_json(
                    json!({"e": execution, "from": 1}),
                ))
                .data(api.credentials(Some(&token)).await);
            let mut stream = api.schema.execute_stream(request);
            let response = stream.next().await.unwrap();
            let code = response.errors.first().map(|e| {
                serde_json::to_value(&e.extensions).unwrap()["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
            let ended = stream.next().await.is_none();
            (code, response.data.into_json().unwrap(), ended)
        }
    };
    let (code, _, ended) = first(operator.clone()).await;
    assert_eq!(code.as_deref(), Some("NOT_FOUND"));
    assert!(ended, "the refused subscription ends");
    let (code, data, _) = first(dev.clone()).await;
    assert_eq!(code, None, "{data}");
    assert_eq!(data["executionEvents"]["sequence"], 1);
    world.api.stop().await;
}

#[path = "postgres_server/mod.rs"]
mod postgres_server;

/// Strings a careless store would run as SQL, or match as patterns.
const NASTY: [&str; 9] = [
    "'; DROP TABLE users; --",
    "\" OR \"1\"=\"1",
    "Robert'); DELETE FROM workflows;--",
    "100% _sure_ \\ escaped",
    "$1 $2 ?",
    "ünïcödé 🔥 \u{202e}reversed",
    "' UNION SELECT password_hash FROM users --",
    "%",
    "_",
];

/// Every string field takes the nasty strings as data: stored and read back exactly, matched
/// literally by searches, nothing else touched; a NUL character is refused with its field named
/// (PostgreSQL cannot store one in text) and changes nothing.
async fn nasty_strings_are_only_data(api: &Api) {
    let root = api.login_as("super_admin", SUPER_PASSWORD).await;
    let count = |data: &Value, list: &str| -> usize {
        data[list]
            .as_array()
            .map_or_else(|| data[list]["edges"].as_array().unwrap().len(), Vec::len)
    };
    for (i, nasty) in NASTY.iter().enumerate() {
        // A role, a user holding it (the nasty string as name and password), a global, a
        // workflow: each named by it.
        let role = api
            .ok(
                &root,
                "mutation($n: String!, $d: String!) { createRole(input: {name: $n, description: $d}) { id name description } }",
                json!({"n": format!("{nasty} role"), "d": nasty}),
            )
            .await;
        assert_eq!(role["createRole"]["description"], *nasty);
        let role_id = role["createRole"]["id"].clone();
        let username = format!("{nasty} user");
        let password = format!("{nasty} password");
        api.ok(
            &root,
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            json!({"i": {"username": username, "password": password, "roleIds": [role_id]}}),
        )
        .await;
        let token = api.login_as(&username, &password).await;
        let me = api
            .ok(&token, "{ me { username roles { name } } }", json!({}))
            .await;
        assert_eq!(me["me"]["username"], username.as_str());
        assert_eq!(me["me"]["roles"][0]["name"], format!("{nasty} role"));
        let global = api
            .ok(
                &root,
                "mutation($n: String!, $v: JSON!) { createGlobal(input: {name: $n, value: $v, description: $n}) { id } }",
                json!({"n": format!("{nasty} global"), "v": nasty}),
            )
            .await["createGlobal"]["id"]
            .clone();
        let read = api
            .ok(
                &root,
                "query($id: ID!) { global(id: $id) { name value description } }",
                json!({"id": global}),
            )
            .await;
        assert_eq!(read["global"]["value"], *nasty);
        let mut workflow = semantics_mix();
        workflow["name"] = json!(format!("{nasty} workflow {i}"));
        workflow["description"] = json!(nasty);
        let imported = api
            .ok(
                &root,
                "mutation($j: JSON!) { importWorkflow(json: $j) { id name description } }",
                json!({"j": workflow}),
            )
            .await;
        assert_eq!(
            imported["importWorkflow"]["name"],
            format!("{nasty} workflow {i}")
        );
        assert_eq!(imported["importWorkflow"]["description"], *nasty);
        // A search for it matches it literally (and `%` or `_` match only themselves).
        let found = api
            .ok(
                &root,
                "query($s: String!) { workflows(first: 200, filter: {search: $s}) { edges { node { name } } } }",
                json!({"s": nasty}),
            )
            .await;
        for edge in found["workflows"]["edges"].as_array().unwrap() {
            let name = edge["node"]["name"].as_str().unwrap().to_lowercase();
            assert!(
                name.contains(&nasty.to_lowercase()),
                "searching {nasty:?} found {name:?}"
            );
        }
        assert!(
            count(&found, "workflows") >= 1,
            "searching {nasty:?} found nothing"
        );
        // As a login, or a token, it is only a wrong one.
        let (code, _) = api
            .error(
                None,
                "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }",
                json!({"u": nasty, "p": nasty}),
            )
            .await;
        assert_eq!(code, "UNAUTHENTICATED");
        let (code, _) = api.error(Some(nasty), "{ me { id } }", json!({})).await;
        assert_eq!(code, "UNAUTHENTICATED");
    }
    // Everything is still there: WALKOFF's two accounts and one user per string.
    let users = api.ok(&root, "{ users { id } }", json!({})).await;
    assert_eq!(count(&users, "users"), 2 + NASTY.len());
    let workflows = api
        .ok(
            &root,
            "{ workflows(first: 200) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(count(&workflows, "workflows"), NASTY.len());

    // NUL: refused, naming the field, nothing written.
    let nul = "before\u{0}after";
    let refusals = [
        ("mutation($n: String!) { createRole(input: {name: \"r\", description: $n}) { id } }", "description"),
        ("mutation($n: String!) { createUser(input: {username: $n, password: \"long enough\"}) { id } }", "username"),
        ("mutation($n: String!) { createGlobal(input: {name: \"g\", value: 1, description: $n}) { id } }", "description"),
        ("mutation($n: String!) { createGlobal(input: {name: $n, value: 1}) { id } }", "name"),
    ];
    for (query, field) in refusals {
        let (code, extensions) = api.error(Some(&root), query, json!({"n": nul})).await;
        assert_eq!(code, "BAD_USER_INPUT", "{query}: {extensions}");
        let message = api.run(Some(&root), query, json!({"n": nul})).await.errors[0]
            .message
            .clone();
        assert!(message.contains(field), "{message}");
    }
    // Where a NUL can only be a lookup (an id, a search, a login), it finds nothing, or is
    // refused as input; never a failure of the store.
    for (query, variables) in [
        (
            "query($n: ID!) { workflow(id: $n) { id } }",
            json!({"n": nul}),
        ),
        (
            "query($n: String!) { workflows(filter: {search: $n}) { edges { node { id } } } }",
            json!({"n": nul}),
        ),
        ("query($n: ID!) { user(id: $n) { id } }", json!({"n": nul})),
        (
            "mutation($n: String!) { login(username: $n, password: $n) { accessToken } }",
            json!({"n": nul}),
        ),
    ] {
        let response = api.run(Some(&root), query, variables).await;
        if let Some(error) = response.errors.first() {
            let code = serde_json::to_value(&error.extensions).unwrap()["code"].clone();
            assert!(
                ["NOT_FOUND", "BAD_USER_INPUT", "UNAUTHENTICATED"]
                    .contains(&code.as_str().unwrap_or("")),
                "{query}: {code} {}",
                error.message
            );
        }
    }
    let mut workflow = semantics_mix();
    workflow["name"] = json!(nul);
    let (code, _) = api
        .error(
            Some(&root),
            "mutation($j: JSON!) { importWorkflow(json: $j) { id } }",
            json!({"j": workflow}),
        )
        .await;
    assert!(
        code == "BAD_USER_INPUT" || code == "VALIDATION_FAILED",
        "{code}"
    );
    assert_eq!(
        count(&api.ok(&root, "{ users { id } }", json!({})).await, "users"),
        2 + NASTY.len()
    );
    assert_eq!(
        count(
            &api.ok(
                &root,
                "{ workflows(first: 200) { edges { node { id } } } }",
                json!({})
            )
            .await,
            "workflows"
        ),
        NASTY.len()
    );
}

#[tokio::test]
async fn sql_metacharacters_in_every_string_field_are_only_data_on_sqlite() {
    let api = Api::start().await;
    nasty_strings_are_only_data(&api).await;
    api.stop().await;
}

#[tokio::test]
async fn sql_metacharacters_in_every_string_field_are_only_data_on_postgresql() {
    let server = postgres_server::PostgresServer::start();
    let url = server.database("nasty");
    let api = Api::on(
        &url,
        walkoff_gateway::GatewayConfig::default(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    nasty_strings_are_only_data(&api).await;
    api.stop().await;
}
