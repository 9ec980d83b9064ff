//! `walkoff serve` as a user meets it: a real process, GraphQL over HTTP, subscriptions over a
//! WebSocket, trigger data, the persisted result read back after a restart — on SQLite and on
//! PostgreSQL, and through `walkoff gateway` replicas of a Redis deployment — and bad input of
//! every kind answered with a typed error.

#[path = "../gateway/tests/postgres_server/mod.rs"]
mod postgres_server;
#[path = "../dataflow/tests/redis_server/mod.rs"]
mod redis_server;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use redis_server::RedisServer;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "s3cret enough";
/// A master key for the servers the tests start (32 bytes, base64).
const TEST_KEY: &str = "dGVzdHMgb25seTogbm90IGEgc2VjcmV0IGF0IGFsbCE=";

/// A running `walkoff serve`.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    /// `walkoff serve` on a data directory (and a database other than its SQLite file).
    fn start(data_dir: &Path, database: Option<&str>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_walkoff"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("WALKOFF_DATABASE");
        if let Some(url) = database {
            command.args(["--database", url]);
        }
        Server::spawn(command)
    }

    /// `walkoff gateway`: one replica of a deployment on `redis`, sharing `database`.
    fn gateway(redis: &str, database: &str) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_walkoff"));
        command.args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            redis,
            "--database",
            database,
        ]);
        Server::spawn(command)
    }

    fn spawn(command: Command) -> Server {
        Server::spawn_logging(command, Stdio::inherit())
    }

    fn spawn_logging(mut command: Command, log: impl Into<Stdio>) -> Server {
        // Every replica of a deployment holds the same master key; no key file is left
        // behind by the tests (unless a test gives one).
        if !command.get_envs().any(|(k, _)| k == "WALKOFF_KEY_FILE") {
            command.env("WALKOFF_KEY", TEST_KEY);
        }
        command
            .env("WALKOFF_ADMIN_PASSWORD", PASSWORD)
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command.spawn().expect("walkoff starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("walkoff prints where it listens")
                .unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep reading what it prints, so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, address }
    }

    /// SIGKILL: the process has no chance to finish anything.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// SIGTERM, as an operator stops it; it must exit cleanly.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "walkoff serve exits cleanly: {status}");
    }

    async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = reqwest::Client::new()
            .post(self.url("/graphql"))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{query}");
        response.json().await.unwrap()
    }

    async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.graphql(Some(token), query, variables).await;
        assert!(body.get("errors").is_none(), "{query}: {body}");
        body["data"].clone()
    }

    async fn login(&self) -> String {
        let body = self
            .graphql(
                None,
                "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }",
                json!({"p": PASSWORD}),
            )
            .await;
        body["data"]["login"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("login: {body}"))
            .to_string()
    }

    async fn socket(&self, protocol: &str) -> Socket {
        let mut request = format!("ws://{}/graphql", self.address)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        socket
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next message: a JSON text, or the close frame's code and reason.
async fn receive(socket: &mut Socket) -> Result<Value, (u16, String)> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("the server answers")
            .expect("the socket stays open")
            .unwrap();
        match message {
            Message::Text(text) => return Ok(serde_json::from_str(&text).unwrap()),
            Message::Close(frame) => {
                let frame = frame.expect("a close frame with a code");
                return Err((u16::from(frame.code), frame.reason.to_string()));
            }
            _ => {}
        }
    }
}

async fn authenticated_socket(server: &Server, token: &str) -> Socket {
    let mut socket = server.socket("graphql-transport-ws").await;
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(
        receive(&mut socket).await.unwrap()["type"],
        "connection_ack"
    );
    socket
}

const EVENTS: &str = "subscription($e: ID!) { executionEvents(executionId: $e) { sequence subject status label result } }";

fn semantics_mix() -> Value {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/walkoff1/semantics-mix.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Import the WALKOFF 1.0 example; its new id.
async fn import_the_example(server: &Server, token: &str) -> String {
    let imported = server
        .ok(
            token,
            "mutation($json: JSON!) { importWorkflow(json: $json) { id } }",
            json!({"json": semantics_mix()}),
        )
        .await;
    imported["importWorkflow"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Import the WALKOFF 1.0 example (condition, transform, parallel action, trigger), subscribe
/// before executing, execute, answer the trigger, receive every event in order; returns the
/// execution id and its events.
async fn run_the_example(server: &Server, token: &str) -> (String, Vec<Value>) {
    run_the_example_across(server, server, token).await
}

/// As [`run_the_example`], subscribed on one server and executed and answered through
/// another (two gateway replicas of one deployment).
async fn run_the_example_across(
    subscribed: &Server,
    server: &Server,
    token: &str,
) -> (String, Vec<Value>) {
    let workflow_id = import_the_example(server, token).await;
    let execution_id = uuid::Uuid::new_v4().to_string();
    let mut socket = authenticated_socket(subscribed, token).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": EVENTS, "variables": {"e": execution_id}}}),
    )
    .await;
    server
        .ok(
            token,
            "mutation($w: ID!, $e: ID!) { executeWorkflow(workflowId: $w, executionId: $e) { id } }",
            json!({"w": workflow_id, "e": execution_id}),
        )
        .await;
    let mut events = Vec::new();
    loop {
        let message = receive(&mut socket).await.unwrap();
        match message["type"].as_str() {
            Some("next") => {
                let event = message["payload"]["data"]["executionEvents"].clone();
                assert!(!event.is_null(), "{message}");
                if event["status"] == "AWAITING_DATA" {
                    server
                        .ok(
                            token,
                            "mutation($e: ID!) { sendTriggerData(executionId: $e, trigger: \"approval\", data: {approved: true}) }",
                            json!({"e": execution_id}),
                        )
                        .await;
                }
                events.push(event);
            }
            Some("complete") => break,
            _ => panic!("unexpected message {message}"),
        }
    }
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["status"], "COMPLETED");
    (execution_id, events)
}

const EXECUTION: &str = "query($e: ID!) { execution(id: $e) { status finishedAt nodes { label status result attempts } } }";

fn check_result(execution: &Value) {
    assert_eq!(execution["execution"]["status"], "COMPLETED");
    let nodes = execution["execution"]["nodes"].as_array().unwrap();
    let node = |label: &str| nodes.iter().find(|n| n["label"] == label).unwrap().clone();
    assert_eq!(node("shout")["result"], "ECHOING: WENT LEFT");
    assert_eq!(node("echo array")["status"], "SUCCESS");
    // Numbers stay numbers (serde_json's arbitrary precision is on in this build).
    assert_eq!(node("echo array")["result"], json!([1, 2, 3]));
    assert_eq!(node("start number")["result"], json!(10));
    assert_eq!(node("approval")["result"], json!({"approved": true}));
    assert_eq!(node("right")["status"], "SKIPPED");
}

async fn the_example_runs_and_its_result_survives_a_restart(database: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), database);
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let token = server.login().await;
    let (execution_id, events) = run_the_example(&server, &token).await;
    let before = server
        .ok(&token, EXECUTION, json!({"e": execution_id}))
        .await;
    check_result(&before);
    server.stop();

    let server = Server::start(dir.path(), database);
    let token = server.login().await;
    let after = server
        .ok(&token, EXECUTION, json!({"e": execution_id}))
        .await;
    assert_eq!(after, before, "the same result after a restart");
    // And the same events, replayed from the store.
    assert_eq!(replay(&server, &token, &execution_id).await, events);
    server.stop();
}

/// Every event of an execution, read through a subscription to its end.
async fn replay(server: &Server, token: &str, execution_id: &str) -> Vec<Value> {
    let mut socket = authenticated_socket(server, token).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": EVENTS, "variables": {"e": execution_id}}}),
    )
    .await;
    let mut replayed = Vec::new();
    while let Ok(message) = receive(&mut socket).await {
        if message["type"] == "complete" {
            break;
        }
        replayed.push(message["payload"]["data"]["executionEvents"].clone());
    }
    replayed
}

#[tokio::test]
async fn the_example_runs_and_survives_a_restart_on_sqlite() {
    the_example_runs_and_its_result_survives_a_restart(None).await;
}

#[tokio::test]
async fn the_example_runs_and_survives_a_restart_on_postgresql() {
    let postgres = postgres_server::PostgresServer::start();
    let url = postgres.database("walkoff");
    the_example_runs_and_its_result_survives_a_restart(Some(&url)).await;
}

/// A worker or executor of a deployment, killed when the test ends.
struct Process(Child);

impl Process {
    fn start(args: &[&str]) -> Process {
        Process::start_logging(args, Stdio::inherit())
    }

    fn start_logging(args: &[&str], log: impl Into<Stdio>) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_walkoff"))
            .args(args)
            .env("WALKOFF_KEY", TEST_KEY)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("walkoff starts");
        Process(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read `query` from `server` until `done` says yes (the store is written as events arrive).
async fn poll_until(
    server: &Server,
    token: &str,
    query: &str,
    variables: Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let data = server.ok(token, query, variables.clone()).await;
        if done(&data) {
            return data;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{query} never got there: {data}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_example_runs_on_a_deployment_with_two_gateway_replicas() {
    let redis = RedisServer::start();
    let postgres = postgres_server::PostgresServer::start();
    let database = postgres.database("walkoff");
    let url = redis.url();
    let _worker = Process::start(&["worker", "--redis", &url]);
    let _executor = Process::start(&["executor", "--redis", &url, "--app", "basics"]);
    let a = Server::gateway(&url, &database);
    let b = Server::gateway(&url, &database);
    // One user database: a token from one replica works on the other.
    let token = a.login().await;

    // A login ended on one replica is refused by the other at once, not after its cache's
    // minute: the revocation travels on walkoff:gateway:auth.
    let other = a.login().await;
    // Twice: the second answer comes from B's cache of checked tokens.
    b.ok(&other, "{ me { id } }", json!({})).await;
    b.ok(&other, "{ me { id } }", json!({})).await;
    a.ok(&other, "mutation { logout }", json!({})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let body = b.graphql(Some(&other), "{ me { id } }", json!({})).await;
        if body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica B still accepts a token logged out on A: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The app catalogue is cached, and an app registered in Redis shows at once.
    let apps = "{ apps { name version } }";
    let names = |data: Value| -> Vec<String> {
        data["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|app| app["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names(b.ok(&token, apps, json!({})).await).contains(&"basics".to_string()));
    assert!(!names(b.ok(&token, apps, json!({})).await).contains(&"python-example".to_string()));
    let api = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("apps/python-example/api.yaml"),
    )
    .unwrap();
    let mut redis_connection = redis.connection().await;
    redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg("walkoff:app-apis")
        .arg("python-example@1.0.0")
        .arg(api)
        .cmd("INCR")
        .arg("walkoff:app-apis:version")
        .query_async::<()>(&mut redis_connection)
        .await
        .unwrap();
    assert!(names(b.ok(&token, apps, json!({})).await).contains(&"python-example".to_string()));

    // Live statuses on B of what runs through A.
    let mut statuses = authenticated_socket(&b, &token).await;
    send(
        &mut statuses,
        json!({"id": "s", "type": "subscribe", "payload": {"query": "subscription { executionStatus { id status } }"}}),
    )
    .await;
    // Subscribed on B, executed and answered through A.
    let (execution_id, events) = run_the_example_across(&b, &a, &token).await;
    let on_a = a.ok(&token, EXECUTION, json!({"e": execution_id})).await;
    check_result(&on_a);
    assert_eq!(
        b.ok(&token, EXECUTION, json!({"e": execution_id})).await,
        on_a
    );
    loop {
        let message = receive(&mut statuses).await.unwrap();
        let change = &message["payload"]["data"]["executionStatus"];
        if change["id"] == execution_id.as_str() && change["status"] == "COMPLETED" {
            break;
        }
    }

    // A replica killed while its execution waits for a person: the other records it to the end.
    let workflow_id = import_the_example(&a, &token).await;
    let second = uuid::Uuid::new_v4().to_string();
    a.ok(
        &token,
        "mutation($w: ID!, $e: ID!) { executeWorkflow(workflowId: $w, executionId: $e) { id } }",
        json!({"w": workflow_id, "e": second}),
    )
    .await;
    poll_until(&b, &token, EXECUTION, json!({"e": second}), |data| {
        data["execution"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["label"] == "approval" && n["status"] == "AWAITING_DATA")
    })
    .await;
    a.kill9();
    b.ok(
        &token,
        "mutation($e: ID!) { sendTriggerData(executionId: $e, trigger: \"approval\", data: {approved: true}) }",
        json!({"e": second}),
    )
    .await;
    let finished = poll_until(&b, &token, EXECUTION, json!({"e": second}), |data| {
        data["execution"]["status"] == "COMPLETED"
    })
    .await;
    check_result(&finished);
    let second_events = replay(&b, &token, &second).await;
    b.stop();

    // A new replica reads both back, every event once and in order.
    let c = Server::gateway(&url, &database);
    let token = c.login().await;
    assert_eq!(
        c.ok(&token, EXECUTION, json!({"e": execution_id})).await,
        on_a
    );
    assert_eq!(
        c.ok(&token, EXECUTION, json!({"e": second})).await,
        finished
    );
    assert_eq!(replay(&c, &token, &execution_id).await, events);
    let replayed = replay(&c, &token, &second).await;
    assert_eq!(replayed, second_events);
    let sequences: Vec<i64> = replayed
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=replayed.len() as i64).collect::<Vec<_>>());
    c.stop();
}

/// A Redis password in the URL never reaches a message, also when Redis cannot be reached.
#[test]
fn a_gateway_that_cannot_reach_redis_says_so_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = redis_server::free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .env("WALKOFF_KEY", TEST_KEY)
        .args(["gateway", "--listen", "127.0.0.1:0", "--redis"])
        .arg(format!("redis://:hunter2@127.0.0.1:{port}"))
        .arg("--database")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("walkoff.db").display()
        ))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains(&format!(
            "cannot reach Redis at redis://:***@127.0.0.1:{port}"
        )),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");
}

#[tokio::test]
async fn sockets_without_a_valid_token_are_closed_with_4401_or_4403() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    for (payload, code) in [
        (json!({}), 4401),
        (json!({"Authorization": "Bearer wa_forged"}), 4403),
        (json!({"Authorization": "Basic YWRtaW4="}), 4403),
    ] {
        let mut socket = server.socket("graphql-transport-ws").await;
        send(
            &mut socket,
            json!({"type": "connection_init", "payload": payload}),
        )
        .await;
        let (got, reason) = receive(&mut socket).await.unwrap_err();
        assert_eq!(got, code, "{payload}: {reason}");
    }
    // Subscribing before the handshake.
    let mut socket = server.socket("graphql-transport-ws").await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { executionStatus { id } }"}}),
    )
    .await;
    assert_eq!(receive(&mut socket).await.unwrap_err().0, 4401);

    // A socket whose login ends (here by logout elsewhere) is closed with 4403 within
    // seconds, its subscription with it.
    let token = server.login().await;
    let mut socket = authenticated_socket(&server, &token).await;
    send(
        &mut socket,
        json!({"id": "s", "type": "subscribe", "payload": {"query": "subscription { executionStatus { id } }"}}),
    )
    .await;
    server.ok(&token, "mutation { logout }", json!({})).await;
    let (code, reason) = receive(&mut socket).await.unwrap_err();
    assert_eq!(code, 4403, "{reason}");
    server.stop();
}

#[tokio::test]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let token = server.login().await;
    let client = reqwest::Client::new();

    // Not JSON, and not GraphQL.
    let response = client
        .post(server.url("/graphql"))
        .bearer_auth(&token)
        .body("{ this is not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let body = server
        .graphql(
            Some(&token),
            "{ workflows { edges { node { id } ",
            json!({}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1:35"),
        "where: {body}"
    );

    // Larger than the limit.
    let huge = "x".repeat(5 * 1024 * 1024);
    let response = client
        .post(server.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "mutation($j: JSON!) { importWorkflow(json: $j) { id } }", "variables": {"j": huge}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // A wrong token, an invalid workflow, a workflow that does not parse.
    let body = server
        .graphql(Some("wa_wrong"), "{ me { id } }", json!({}))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let mut invalid = semantics_mix();
    invalid["actions"][0]["name"] = json!("no_such_action");
    invalid["start"] = json!("not-a-node");
    let body = server
        .graphql(
            Some(&token),
            "mutation($json: JSON!) { importWorkflow(json: $json) { id } }",
            json!({"json": invalid}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_FAILED");
    assert!(
        body["errors"][0]["extensions"]["problems"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );

    // Nothing of it was stored.
    let listed = server
        .ok(
            &token,
            "{ workflows { edges { node { id } } } executions { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["workflows"]["edges"], json!([]));
    assert_eq!(listed["executions"]["edges"], json!([]));
    server.stop();
}

#[tokio::test]
async fn stopping_the_server_closes_subscriptions_with_a_close_frame() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let token = server.login().await;
    let mut socket = authenticated_socket(&server, &token).await;
    send(
        &mut socket,
        json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { executionStatus { id status } }"}}),
    )
    .await;
    // Let the subscription start before stopping.
    server.ok(&token, "{ me { id } }", json!({})).await;
    let pid = server.child.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let (code, reason) = receive(&mut socket).await.unwrap_err();
    assert_eq!(code, u16::from(CloseCode::Away), "{reason}");
    server.stop();
}

#[tokio::test]
async fn a_subscription_over_plain_http_comes_as_multipart_parts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let token = server.login().await;
    let workflow_id = import_the_example(&server, &token).await;
    let execution_id = uuid::Uuid::new_v4().to_string();
    let mut response = reqwest::Client::new()
        .post(server.url("/graphql"))
        .bearer_auth(&token)
        .header(
            "accept",
            r#"multipart/mixed; boundary="graphql"; subscriptionSpec="1.0""#,
        )
        .json(&json!({"query": EVENTS, "variables": {"e": execution_id}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "multipart/mixed; boundary=graphql"
    );
    server
        .ok(
            &token,
            "mutation($w: ID!, $e: ID!) { executeWorkflow(workflowId: $w, executionId: $e) { id } }",
            json!({"w": workflow_id, "e": execution_id}),
        )
        .await;
    // Parts as they come: `--graphql`, a Content-Type line, a blank line, one JSON document.
    let mut text = String::new();
    let mut events = Vec::new();
    let mut answered = false;
    while !text.contains("--graphql--") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
            .await
            .expect("the server goes on sending")
            .unwrap()
            .expect("the stream ends with the closing boundary");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        // Only whole lines: the last one may still be on its way.
        let lines: Vec<&str> = text.split('\n').collect();
        events = lines[..lines.len() - 1]
            .iter()
            .map(|line| line.trim_end())
            .filter(|line| line.starts_with("{\"data\""))
            .map(|line| {
                serde_json::from_str::<Value>(line).unwrap()["data"]["executionEvents"].clone()
            })
            .collect();
        if !answered && events.iter().any(|e| e["status"] == "AWAITING_DATA") {
            answered = true;
            server
                .ok(
                    &token,
                    "mutation($e: ID!) { sendTriggerData(executionId: $e, trigger: \"approval\", data: {approved: true}) }",
                    json!({"e": execution_id}),
                )
                .await;
        }
    }
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["status"], "COMPLETED");
    // The same events as a WebSocket subscriber gets.
    assert_eq!(replay(&server, &token, &execution_id).await, events);

    // A long subscription whose login ends: a last part says why, then the closing boundary.
    let short_lived = server.login().await;
    let mut response = reqwest::Client::new()
        .post(server.url("/graphql"))
        .bearer_auth(&short_lived)
        .header(
            "accept",
            r#"multipart/mixed; boundary="graphql"; subscriptionSpec="1.0""#,
        )
        .json(&json!({"query": "subscription { executionStatus { id } }"}))
        .send()
        .await
        .unwrap();
    server
        .ok(&short_lived, "mutation { logout }", json!({}))
        .await;
    let mut text = String::new();
    while !text.contains("--graphql--") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
            .await
            .expect("the server ends the subscription")
            .unwrap()
            .expect("the stream ends with the closing boundary");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("UNAUTHENTICATED"), "{text}");
    server.stop();
}

/// Run `script` of the Node package `tests/{package}` with `env`, after installing the package
/// as its lock file pins it (scripts/test installs Node.js, npm and Chromium); its stdout.
async fn node(package: &str, script: &str, env: Vec<(&'static str, String)>) -> String {
    let package = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(package);
    let script = script.to_string();
    let output = tokio::task::spawn_blocking(move || {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(&package)
            .stdout(Stdio::null())
            .status()
            .expect("npm runs");
        assert!(
            installed.success(),
            "npm ci in {} failed",
            package.display()
        );
        Command::new("node")
            .arg(&script)
            .current_dir(&package)
            .envs(env)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn graphiql_logs_in_and_runs_a_query_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    // GraphiQL in Debian's chromium, driven by playwright-core.
    let result = node(
        "browser",
        "graphiql.mjs",
        vec![("WALKOFF", server.url("")), ("PASSWORD", PASSWORD.into())],
    )
    .await;
    assert!(result.contains("\"roles\""), "{result}");
    server.stop();
}

#[tokio::test]
async fn the_graphql_ws_reference_client_follows_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let token = server.login().await;
    let workflow_id = import_the_example(&server, &token).await;
    let output = node(
        "graphql-ws",
        "follow.mjs",
        vec![
            ("WALKOFF", server.url("")),
            ("TOKEN", token),
            ("WORKFLOW_ID", workflow_id),
            ("TRIGGER", "approval".into()),
            ("TRIGGER_DATA", r#"{"approved": true}"#.into()),
        ],
    )
    .await;
    let events: Vec<Value> = serde_json::from_str(&output).unwrap();
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["status"], "COMPLETED");
    assert!(events
        .iter()
        .any(|e| e["label"] == "shout" && e["result"] == "ECHOING: WENT LEFT"));
    server.stop();
}

/// A workflow whose one action is given the global `global` (and echoes it).
fn uses_a_global(global: &str) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "name": format!("uses {global}"),
        "start": "use it",
        "nodes": [{"label": "use it", "kind": "action", "app": "basics", "action": "echo_string",
                   "parameters": [{"name": "call", "variant": "GLOBAL", "value": global}]}],
        "branches": []
    })
}

/// Create a global holding a fresh random secret and run a workflow that echoes it, to its end;
/// the secret, and every event of the run.
async fn run_with_a_secret(server: &Server, token: &str) -> (String, Vec<Value>) {
    let secret = format!("walkoff-secret-{}", uuid::Uuid::new_v4().simple());
    let created = server
        .ok(
            token,
            "mutation($v: JSON!) { createGlobal(input: {name: \"api token\", value: $v}) { id } }",
            json!({"v": secret}),
        )
        .await;
    let global = created["createGlobal"]["id"].as_str().unwrap().to_string();
    // A reader opens it.
    let read = server
        .ok(
            token,
            "query($id: ID!) { global(id: $id) { value } }",
            json!({"id": global}),
        )
        .await;
    assert_eq!(read["global"]["value"], secret.as_str());
    let workflow = server
        .ok(
            token,
            "mutation($j: JSON!) { createWorkflow(json: $j) { id } }",
            json!({"j": uses_a_global(&global)}),
        )
        .await["createWorkflow"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let execution = uuid::Uuid::new_v4().to_string();
    let mut socket = authenticated_socket(server, token).await;
    send(
        &mut socket,
        json!({"id": "e", "type": "subscribe", "payload": {"query": "subscription($e: ID!) { executionEvents(executionId: $e) { sequence status label parameters result error } }", "variables": {"e": execution}}}),
    )
    .await;
    server
        .ok(
            token,
            "mutation($w: ID!, $e: ID!) { executeWorkflow(workflowId: $w, executionId: $e) { id } }",
            json!({"w": workflow, "e": execution}),
        )
        .await;
    let mut events = Vec::new();
    loop {
        let message = receive(&mut socket).await.unwrap();
        if message["type"] == "complete" {
            break;
        }
        events.push(message["payload"]["data"]["executionEvents"].clone());
    }
    let done = server.ok(token, EXECUTION, json!({"e": execution})).await;
    assert_eq!(done["execution"]["status"], "COMPLETED", "{done}");
    // The action got the value (it echoed it), and what it answered is masked.
    let node = &done["execution"]["nodes"][0];
    assert_eq!(node["result"], "ECHOING: ***", "{done}");
    let executing = events
        .iter()
        .find(|e| e["status"] == "EXECUTING" && e["label"] == "use it")
        .expect("the action's EXECUTING event");
    assert_eq!(executing["parameters"]["call"], "***", "{executing}");
    (secret, events)
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else if std::fs::read(&path)
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn a_globals_value_is_nowhere_in_clear_on_the_embedded_server() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_walkoff"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("WALKOFF_LOG", "debug")
        .env_remove("WALKOFF_DATABASE");
    let server = Server::spawn_logging(command, log);
    let token = server.login().await;
    let (secret, events) = run_with_a_secret(&server, &token).await;
    server.stop();
    let events = serde_json::to_string(&events).unwrap();
    assert!(
        !events.contains(&secret),
        "an event holds the secret: {events}"
    );
    // The SQLite database (with its WAL) and the server's debug log.
    let holding = files_holding(dir.path(), secret.as_bytes());
    assert!(
        holding.is_empty(),
        "these files hold the secret: {holding:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!log.is_empty(), "the debug log was written");
}

#[tokio::test]
async fn a_globals_value_is_nowhere_in_clear_in_a_deployment() {
    let redis = RedisServer::start();
    let postgres = postgres_server::PostgresServer::start();
    let database = postgres.database("walkoff");
    let url = redis.url();
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| std::fs::File::create(logs.path().join(name)).unwrap();
    let _worker = Process::start_logging(&["worker", "--redis", &url], log("worker.log"));
    let _executor = Process::start_logging(
        &["executor", "--redis", &url, "--app", "basics"],
        log("executor.log"),
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_walkoff"));
    command
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &url,
            "--database",
            &database,
        ])
        .env("WALKOFF_LOG", "debug");
    let gateway = Server::spawn_logging(command, log("gateway.log"));
    let token = gateway.login().await;
    let (secret, events) = run_with_a_secret(&gateway, &token).await;
    let events = serde_json::to_string(&events).unwrap();
    assert!(
        !events.contains(&secret),
        "an event holds the secret: {events}"
    );
    // Every key of Redis, dumped.
    let mut connection = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            !dump.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the Redis key {key} holds the secret"
        );
    }
    gateway.stop();
    // PostgreSQL's files (tables and write-ahead log) and every process's log.
    let holding = files_holding(postgres.data_dir(), secret.as_bytes());
    assert!(
        holding.is_empty(),
        "these PostgreSQL files hold the secret: {holding:?}"
    );
    let holding = files_holding(logs.path(), secret.as_bytes());
    assert!(
        holding.is_empty(),
        "these logs hold the secret: {holding:?}"
    );
}

#[tokio::test]
async fn rotating_the_key_reseals_every_global_and_the_old_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let token = server.login().await;
    let created = server
        .ok(
            &token,
            "mutation($v: JSON!) { createGlobal(input: {name: \"vault\", value: $v}) { id } }",
            json!({"v": {"user": "svc", "password": "rotate me please"}}),
        )
        .await;
    let global = created["createGlobal"]["id"].as_str().unwrap().to_string();
    server.stop();

    let database = format!("sqlite://{}", dir.path().join("walkoff.db").display());
    let new_key = dir.path().join("new.key");
    let rotated = Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .args(["rotate-key", "--database", &database, "--new-key-file"])
        .arg(&new_key)
        .env("WALKOFF_KEY", TEST_KEY)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&rotated.stdout).to_string()
        + &String::from_utf8_lossy(&rotated.stderr);
    assert!(rotated.status.success(), "{said}");
    assert!(said.contains("re-sealed 1 global"), "{said}");

    // With the new key: the same value, opened.
    let mut command = Command::new(env!("CARGO_BIN_EXE_walkoff"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("WALKOFF_KEY_FILE", &new_key)
        .env_remove("WALKOFF_KEY")
        .env_remove("WALKOFF_DATABASE");
    let server = Server::spawn(command);
    let token = server.login().await;
    let read = server
        .ok(
            &token,
            "query($id: ID!) { global(id: $id) { value } }",
            json!({"id": global}),
        )
        .await;
    assert_eq!(read["global"]["value"]["password"], "rotate me please");
    server.stop();

    // The old key no longer opens this database: the server refuses to start, saying why.
    let refused = Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("WALKOFF_KEY", TEST_KEY)
        .env_remove("WALKOFF_DATABASE")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains("not the one this database's globals were sealed with"),
        "{said}"
    );
}

/// The web UI (`ui-graphql/`, served by `walkoff serve` at `/`) as a user meets it, in Debian's
/// chromium driven by `@playwright/test`: a wrong password, sign-in, an import by paste with its
/// problems shown, a run followed live, the app catalogue, sign-out. With
/// `WALKOFF_WRITE_SCREENSHOTS=1` it saves each page to `docs/ui/`.
#[tokio::test]
async fn the_web_ui_signs_in_imports_runs_and_follows_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    // The page and its assets come from the binary, with their security headers.
    let page = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/assets/"),
        "the built UI is embedded: {html}"
    );

    let ui = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui-graphql");
    let url = server.url("");
    let output = tokio::task::spawn_blocking(move || {
        if !ui.join("node_modules/.package-lock.json").exists() {
            let installed = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
                .current_dir(&ui)
                .status()
                .expect("npm runs");
            assert!(installed.success(), "npm ci in ui-graphql failed");
        }
        let mut command = Command::new("npx");
        command
            .args(["playwright", "test"])
            .current_dir(&ui)
            .env("WALKOFF_URL", url)
            .env("PASSWORD", PASSWORD);
        if std::env::var_os("WALKOFF_WRITE_SCREENSHOTS").is_some() {
            command.env("WALKOFF_SCREENSHOTS", ui.join("../docs/ui"));
        }
        command.output().expect("npx runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop();
}

/// Secrets as Docker Swarm hands them to a container, in files: the admin password, and the
/// passwords of Redis (which requires one here) and of the database, each put into its URL.
#[tokio::test]
async fn a_gateway_takes_its_passwords_from_files() {
    let redis = RedisServer::start();
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("redis secret/1")
        .query_async(&mut connection)
        .await
        .unwrap();
    let postgres = postgres_server::PostgresServer::start();
    let database = postgres.database("secrets");
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let admin = write("admin_password", "from a file\n");
    let redis_password = write("redis_password", "redis secret/1\n");
    let database_password = write("database_password", "unused by trust auth\n");

    let mut command = Command::new(env!("CARGO_BIN_EXE_walkoff"));
    command
        .args(["gateway", "--listen", "127.0.0.1:0"])
        .env("WALKOFF_REDIS", format!("redis://127.0.0.1:{}", redis.port))
        .env("WALKOFF_REDIS_PASSWORD_FILE", &redis_password)
        .env("WALKOFF_DATABASE", &database)
        .env("WALKOFF_DATABASE_PASSWORD_FILE", &database_password)
        .env("WALKOFF_ADMIN_PASSWORD_FILE", &admin);
    let gateway = Server::spawn(command);
    let body = gateway
        .graphql(
            None,
            "mutation { login(username: \"admin\", password: \"from a file\") { accessToken } }",
            json!({}),
        )
        .await;
    let token = body["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("login with the password from the file: {body}"))
        .to_string();
    // It reached Redis with the password: the catalogue of apps comes from there.
    let apps = gateway.ok(&token, "{ apps { name } }", json!({})).await;
    assert!(apps["apps"].is_array(), "{apps}");
    gateway.stop();

    // A file that cannot be read stops it at once, naming the setting.
    let output = Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .args(["gateway", "--listen", "127.0.0.1:0"])
        .env("WALKOFF_REDIS", format!("redis://127.0.0.1:{}", redis.port))
        .env("WALKOFF_REDIS_PASSWORD_FILE", files.path().join("missing"))
        .env("WALKOFF_DATABASE", &database)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WALKOFF_REDIS_PASSWORD_FILE: cannot read"),
        "{stderr}"
    );
    // A password without its URL, likewise.
    let output = Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .args(["gateway", "--listen", "127.0.0.1:0"])
        .env_remove("WALKOFF_DATABASE")
        .env("WALKOFF_DATABASE_PASSWORD_FILE", &database_password)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WALKOFF_DATABASE_PASSWORD_FILE is set but WALKOFF_DATABASE"),
        "{stderr}"
    );
}
