//! `--mode gateway`: a real `walkoff serve` process driven as its users drive it — `executeWorkflow`
//! over HTTP, each execution followed by an `executionEvents` subscription over a WebSocket
//! (`graphql-transport-ws`) opened before it starts — and the `subscribers` cases: many
//! subscribers on one execution, and one subscriber on each of many, with the latency from an
//! event's commit to its arrival at the client, what was dropped, and the server's memory per
//! subscription.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use walkoff_schema::{dump_workflow, Format, Workflow};

use crate::deployment::{free_port, walkoff_binary, Started};
use crate::stats::{percentiles, round, Run};

/// Subscriptions one WebSocket carries in the throughput runs (the server allows 200).
const SUBSCRIPTIONS_PER_SOCKET: usize = 150;

const EVENTS: &str =
    "subscription($e: ID!) { executionEvents(executionId: $e) { sequence status label at } }";
const EXECUTE: &str =
    "mutation($w: ID!, $e: ID!) { executeWorkflow(workflowId: $w, executionId: $e) { id } }";

/// A `walkoff serve` of the harness's own, with a logged-in client.
pub struct GatewayServer {
    process: Started,
    address: String,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// What a subscription receives: an event (with when it arrived), or its end.
pub(crate) enum Incoming {
    /// An event, when it arrived, and the size of the message that carried it.
    Next(Value, DateTime<Utc>, usize),
    Done(Result<(), String>),
}

/// One WebSocket carrying many subscriptions, each routed to its own channel by id.
struct Socket {
    out: mpsc::UnboundedSender<Message>,
    routes: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Incoming>>>>,
    next_id: AtomicU64,
}

impl Socket {
    async fn open(address: &str, token: &str) -> anyhow::Result<Socket> {
        let mut request = format!("ws://{address}/graphql").into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().expect("a valid header"),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .context("open a WebSocket")?;
        let (mut sink, mut stream) = socket.split();
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
        sink.send(Message::Text(init.to_string().into())).await?;
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text)?;
                    if message["type"] == "connection_ack" {
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => bail!("the server closed the socket: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("the socket closed before its acknowledgement"),
            }
        }
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let routes: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Incoming>>>> = Arc::default();
        let reader_routes = Arc::clone(&routes);
        let pong = out.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let arrived = Utc::now();
                let Ok(message) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let id = message["id"].as_str().unwrap_or_default().to_string();
                let routes = || reader_routes.lock().unwrap_or_else(|e| e.into_inner());
                match message["type"].as_str() {
                    Some("next") => {
                        let event = message["payload"]["data"]["executionEvents"].clone();
                        let incoming = if event.is_null() {
                            Incoming::Done(Err(message["payload"]["errors"].to_string()))
                        } else {
                            Incoming::Next(event, arrived, text.len())
                        };
                        if let Some(route) = routes().get(&id) {
                            let _ = route.send(incoming);
                        }
                    }
                    Some("complete") => {
                        if let Some(route) = routes().remove(&id) {
                            let _ = route.send(Incoming::Done(Ok(())));
                        }
                    }
                    Some("error") => {
                        if let Some(route) = routes().remove(&id) {
                            let _ = route.send(Incoming::Done(Err(message["payload"].to_string())));
                        }
                    }
                    Some("ping") => {
                        let _ =
                            pong.send(Message::Text(json!({"type": "pong"}).to_string().into()));
                    }
                    _ => {}
                }
            }
            // The socket is gone: every subscription still open ends with an error.
            for (_, route) in reader_routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
            {
                let _ = route.send(Incoming::Done(Err("the socket closed".into())));
            }
        });
        Ok(Socket {
            out,
            routes,
            next_id: AtomicU64::new(1),
        })
    }

    fn subscribe_events(&self, execution_id: &str) -> mpsc::UnboundedReceiver<Incoming> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let (route, receiver) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), route);
        let subscribe = json!({"id": id, "type": "subscribe",
            "payload": {"query": EVENTS, "variables": {"e": execution_id}}});
        let _ = self.out.send(Message::Text(subscribe.to_string().into()));
        receiver
    }

    fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}

/// What one subscriber saw of one execution.
#[derive(Default)]
pub(crate) struct Followed {
    /// Commit-to-arrival of each event, in ms.
    latencies_ms: Vec<f64>,
    sequences: BTreeSet<i64>,
    /// When each event was committed (its `at`), by sequence.
    commits: BTreeMap<i64, DateTime<Utc>>,
    message_bytes: usize,
    last_status: String,
    error: Option<String>,
}

pub(crate) async fn follow(mut events: mpsc::UnboundedReceiver<Incoming>) -> Followed {
    let mut seen = Followed::default();
    while let Some(incoming) = events.recv().await {
        match incoming {
            Incoming::Next(event, arrived, bytes) => {
                seen.message_bytes += bytes;
                let at = event["at"]
                    .as_str()
                    .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                    .map(|at| at.with_timezone(&Utc));
                if let Some(at) = at {
                    let lag = arrived.signed_duration_since(at);
                    seen.latencies_ms
                        .push(lag.num_microseconds().unwrap_or(0).max(0) as f64 / 1000.0);
                }
                if let Some(sequence) = event["sequence"].as_i64() {
                    seen.sequences.insert(sequence);
                    if let Some(at) = at {
                        seen.commits.insert(sequence, at);
                    }
                }
                if event["label"].is_null() {
                    seen.last_status = event["status"].as_str().unwrap_or_default().to_string();
                }
            }
            Incoming::Done(end) => {
                seen.error = end.err();
                break;
            }
        }
    }
    seen
}

/// One case of the subscribers scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberCase {
    /// Which of the `--repeat` runs measured it (from 1).
    pub run: usize,
    pub case: String,
    pub subscribers: usize,
    pub executions: usize,
    pub events_delivered: usize,
    /// Events a subscriber never got (a sequence missing below its execution's last).
    pub dropped: usize,
    /// Subscriptions that ended with an error instead of the execution's end.
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub server_rss_before_mb: f64,
    pub server_rss_subscribed_mb: f64,
    /// CPU the server (its every thread) and the harness's clients spent from the first
    /// execution to the last event delivered, in ms.
    pub server_cpu_ms: f64,
    pub client_cpu_ms: f64,
    /// The mean size of a message carrying an event, in bytes.
    pub message_bytes: usize,
    /// When an execution's events were committed, in ms from its first (the floor replays
    /// them at the same moments, with messages of the same size).
    pub event_offsets_ms: Vec<f64>,
    /// The server's resident memory per subscription (a WebSocket and its subscription), from
    /// the growth between half and all of them subscribed.
    pub memory_per_subscription_kb: f64,
}

/// The CPU a server and this harness spend on a case.
pub(crate) struct CpuMeter {
    pid: u32,
    server_s: f64,
    client_s: f64,
}

impl CpuMeter {
    pub(crate) fn start(pid: u32) -> CpuMeter {
        CpuMeter {
            pid,
            server_s: cpu_s(pid),
            client_s: cpu_s(std::process::id()),
        }
    }

    pub(crate) fn stop(self, mut case: SubscriberCase) -> SubscriberCase {
        case.server_cpu_ms = round((cpu_s(self.pid) - self.server_s) * 1000.0);
        case.client_cpu_ms = round((cpu_s(std::process::id()) - self.client_s) * 1000.0);
        case
    }
}

fn cpu_s(pid: u32) -> f64 {
    crate::stats::process_usage(pid, "").map_or(0.0, |usage| usage.cpu_s)
}

/// Resident memory now (not the peak) of a process, in KB (0 when it is gone).
pub(crate) fn rss_kb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

impl GatewayServer {
    /// Start `walkoff serve` on a free port with a data directory of its own and the
    /// diagnostics app, and log in.
    pub async fn start() -> anyhow::Result<GatewayServer> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let address = format!("127.0.0.1:{port}");
        let password = uuid_like();
        let binary = walkoff_binary()?;
        let log = std::fs::File::create(dir.path().join("serve.log"))?;
        let child = Command::new(&binary)
            .args([
                "serve",
                "--listen",
                &address,
                "--apps",
                "basics,diagnostics",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env("WALKOFF_ADMIN_PASSWORD", &password)
            // The run's own master key, left with its data directory.
            .env("WALKOFF_KEY_FILE", dir.path().join("key"))
            .env("WALKOFF_LOG", "warn")
            .env_remove("WALKOFF_DATABASE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let process = Started::new("walkoff serve", child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = http.get(format!("http://{address}/health")).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "walkoff serve did not answer on {address}; its log: {}",
                    std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut server = GatewayServer {
            process,
            address,
            token: String::new(),
            http,
            _dir: dir,
        };
        let login = server
            .graphql(
                "mutation($p: String!) { login(username: \"admin\", password: $p) { accessToken } }",
                json!({"p": password}),
            )
            .await?;
        server.token = login["login"]["accessToken"]
            .as_str()
            .ok_or_else(|| anyhow!("no access token in {login}"))?
            .to_string();
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn stop(mut self) {
        self.process.stop(Duration::from_secs(10));
    }

    async fn graphql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .post(format!("http://{}/graphql", self.address))
            .json(&json!({"query": query, "variables": variables}));
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        let body: Value = request.send().await?.error_for_status()?.json().await?;
        if let Some(errors) = body.get("errors") {
            bail!("{query}: {errors}");
        }
        Ok(body["data"].clone())
    }

    /// Store `workflow` on the server (as an import, so it gets a fresh id); its id.
    pub async fn import(&self, workflow: &Workflow) -> anyhow::Result<String> {
        let doc = dump_workflow(workflow, Format::Canonical);
        let data = self
            .graphql(
                "mutation($json: JSON!) { importWorkflow(json: $json) { id } }",
                json!({"json": doc}),
            )
            .await?;
        data["importWorkflow"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no id in {data}"))
    }

    async fn execute(&self, workflow_id: &str, execution_id: &str) -> anyhow::Result<()> {
        self.graphql(EXECUTE, json!({"w": workflow_id, "e": execution_id}))
            .await
            .map(|_| ())
    }

    /// Run `executions` executions of the stored workflow, `in_flight` at a time, each
    /// subscribed to before it is executed and done when its final event arrives.
    pub async fn run(
        self: &Arc<Self>,
        workflow_id: &str,
        executions: usize,
        in_flight: usize,
        progress: &indicatif::ProgressBar,
    ) -> anyhow::Result<Run> {
        let in_flight = in_flight.clamp(1, executions.max(1));
        let mut sockets = Vec::new();
        for _ in 0..in_flight.div_ceil(SUBSCRIPTIONS_PER_SOCKET) {
            sockets.push(Arc::new(Socket::open(&self.address, &self.token).await?));
        }
        let permits = Arc::new(Semaphore::new(in_flight));
        let started = Instant::now();
        let mut waiters = Vec::with_capacity(executions);
        for i in 0..executions {
            let permit = Arc::clone(&permits).acquire_owned().await?;
            let socket = Arc::clone(&sockets[i % sockets.len()]);
            let server = Arc::clone(self);
            let workflow_id = workflow_id.to_string();
            let progress = progress.clone();
            waiters.push(tokio::spawn(async move {
                let id = uuid::Uuid::new_v4().to_string();
                let events = socket.subscribe_events(&id);
                let submitted = Instant::now();
                server.execute(&workflow_id, &id).await?;
                let seen = follow(events).await;
                let done = Instant::now();
                drop(permit);
                progress.inc(1);
                if let Some(error) = seen.error {
                    bail!("the subscription to {id} failed: {error}");
                }
                anyhow::Ok((seen.last_status, submitted, done))
            }));
        }
        let mut run = Run::default();
        let mut last = started;
        for waiter in waiters {
            let (status, submitted, done) = waiter.await??;
            if status != "COMPLETED" {
                run.lost += 1;
                continue;
            }
            run.latencies_ms
                .push(done.duration_since(submitted).as_secs_f64() * 1000.0);
            run.completions_ms
                .push(done.duration_since(started).as_secs_f64() * 1000.0);
            last = last.max(done);
        }
        run.wall_ms = last.duration_since(started).as_secs_f64() * 1000.0;
        for socket in &sockets {
            socket.close();
        }
        Ok(run)
    }

    /// `subscribers` subscribers, each on its own WebSocket, on `executions` executions of the
    /// stored workflow (one execution: all on it; as many as subscribers: one each).
    pub async fn subscribers(
        self: &Arc<Self>,
        case: &str,
        workflow_id: &str,
        subscribers: usize,
        executions: usize,
    ) -> anyhow::Result<SubscriberCase> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("walkoff serve is not running"))?;
        let ids: Vec<String> = (0..executions.max(1))
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        settle().await;
        let before_kb = rss_kb(pid);
        let mut sockets = Vec::with_capacity(subscribers);
        let mut followers = Vec::with_capacity(subscribers);
        let half = subscribers / 2;
        let mut half_kb = before_kb;
        for i in 0..subscribers {
            if i == half && half > 0 {
                settle().await;
                half_kb = rss_kb(pid);
            }
            let socket = Socket::open(&self.address, &self.token).await?;
            let events = socket.subscribe_events(&ids[i % ids.len()]);
            followers.push(tokio::spawn(follow(events)));
            sockets.push(socket);
        }
        settle().await;
        let subscribed_kb = rss_kb(pid);
        let cpu = CpuMeter::start(pid);
        // Executed a few at a time, as users would start them; all run at once.
        let permits = Arc::new(Semaphore::new(64));
        let mut submissions = Vec::with_capacity(ids.len());
        for id in &ids {
            let permit = Arc::clone(&permits).acquire_owned().await?;
            let server = Arc::clone(self);
            let (workflow_id, id) = (workflow_id.to_string(), id.clone());
            submissions.push(tokio::spawn(async move {
                let executed = server.execute(&workflow_id, &id).await;
                drop(permit);
                executed
            }));
        }
        for submission in submissions {
            submission.await??;
        }
        let case = tally(
            case,
            subscribers,
            ids.len(),
            followers,
            (before_kb, half_kb, subscribed_kb, half),
        )
        .await
        .map(|case| cpu.stop(case));
        for socket in &sockets {
            socket.close();
        }
        case
    }
}

/// Gather what each subscriber saw into one case. `memory`: the server's resident memory (KB)
/// before any, with the first `half` and with all subscribers subscribed.
pub(crate) async fn tally(
    case: &str,
    subscribers: usize,
    executions: usize,
    followers: Vec<tokio::task::JoinHandle<Followed>>,
    memory: (f64, f64, f64, usize),
) -> anyhow::Result<SubscriberCase> {
    let (before_kb, half_kb, subscribed_kb, half) = memory;
    let mut latencies = Vec::new();
    let (mut delivered, mut dropped, mut failed) = (0, 0, 0);
    let mut message_bytes = 0;
    let mut commits = BTreeMap::new();
    for follower in followers {
        let seen = follower.await?;
        if seen.error.is_some() {
            failed += 1;
        }
        message_bytes += seen.message_bytes;
        if seen.commits.len() > commits.len() {
            commits = seen.commits;
        }
        let last = seen.sequences.last().copied().unwrap_or(0);
        delivered += seen.sequences.len();
        dropped += usize::try_from(last).unwrap_or(0) - seen.sequences.len();
        latencies.extend(seen.latencies_ms);
    }
    // The slope between half and all of them subscribed is the cost of a subscription,
    // whatever the allocator was still handing back.
    let added = (subscribers - half).max(1) as f64;
    let per_subscription_kb = if half > 0 {
        (subscribed_kb - half_kb) / added
    } else {
        (subscribed_kb - before_kb) / added
    };
    let p = percentiles(&latencies);
    Ok(SubscriberCase {
        run: 1,
        case: case.to_string(),
        subscribers,
        executions,
        events_delivered: delivered,
        dropped,
        failed,
        p50_ms: round(p.p50),
        p99_ms: round(p.p99),
        max_ms: round(p.max),
        server_rss_before_mb: round(before_kb / 1024.0),
        server_rss_subscribed_mb: round(subscribed_kb / 1024.0),
        server_cpu_ms: 0.0,
        client_cpu_ms: 0.0,
        message_bytes: message_bytes / delivered.max(1),
        event_offsets_ms: commits
            .values()
            .map(|at| {
                let first = commits.values().next().copied().unwrap_or(*at);
                round(
                    at.signed_duration_since(first)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1000.0,
                )
            })
            .collect(),
        memory_per_subscription_kb: round(per_subscription_kb),
    })
}

/// Let the server finish what it was doing (and the allocator settle) before a memory reading.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// A password nobody guesses, for the harness's own server.
fn uuid_like() -> String {
    format!("lt-{}", uuid::Uuid::new_v4().simple())
}

/// The workflow the subscriber cases run: 20 steps of 10 ms, so events come over time rather
/// than in one burst.
pub fn paced_workflow() -> Workflow {
    crate::scenario::chain(
        20,
        "paced",
        json!({"kind": "action", "app": "diagnostics", "action": "sleep",
               "parameters": [{"name": "ms", "value": 10}]}),
    )
}
