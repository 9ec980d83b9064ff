//! The distributed mode as deployed: a real `redis-server`, workers and executors as separate
//! `walkoff` processes, killed with SIGKILL mid-run; clients through the same library paths the
//! CLI uses, and the CLI itself.

#[path = "../dataflow/tests/redis_server/mod.rs"]
mod redis_server;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis_server::RedisServer;
use serde_json::{json, Value};
use walkoff_dataflow::bus::{RedisBus, RedisBusConfig};
use walkoff_dataflow::{Bus, Client, ExecutionSummary};
use walkoff_schema::{Event, EventKind, NodeStatus, Workflow, WorkflowStatus};

/// A deployment of separate processes around one Redis server; everything it started is stopped
/// when it is dropped.
struct Deployment {
    redis: RedisServer,
    dir: tempfile::TempDir,
    processes: Vec<(String, Option<Child>)>,
}

impl Deployment {
    fn new() -> Deployment {
        Deployment::around(RedisServer::start())
    }

    fn around(redis: RedisServer) -> Deployment {
        Deployment {
            redis,
            dir: tempfile::tempdir().unwrap(),
            processes: Vec::new(),
        }
    }

    fn url(&self) -> String {
        self.redis.url()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Start `walkoff ARGS` with its log in the deployment's directory; returns its index.
    fn spawn(&mut self, name: &str, args: &[&str]) -> usize {
        let mut command = Command::new(env!("CARGO_BIN_EXE_walkoff"));
        // The diagnostics app's `record` writes in the deployment's directory.
        command
            .args(args)
            .env("WALKOFF_LOG", "info")
            .env("WALKOFF_RECORD_DIR", self.dir.path());
        self.spawn_command(name, command)
    }

    fn spawn_command(&mut self, name: &str, mut command: Command) -> usize {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        let child = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.processes.push((name.to_string(), Some(child)));
        self.processes.len() - 1
    }

    fn worker(&mut self, extra: &[&str]) -> usize {
        let url = self.url();
        let name = format!("worker-{}", self.processes.len());
        let mut args = vec!["worker", "--redis", &url];
        args.extend_from_slice(extra);
        self.spawn(&name, &args)
    }

    fn executor(&mut self, app: &str, concurrency: usize) -> usize {
        let url = self.url();
        let name = format!("executor-{}", self.processes.len());
        let concurrency = concurrency.to_string();
        self.spawn(
            &name,
            &[
                "executor",
                "--redis",
                &url,
                "--app",
                app,
                "--concurrency",
                &concurrency,
            ],
        )
    }

    /// Fail the test, with every log, if the process `index` has exited.
    fn assert_running(&mut self, index: usize) {
        let exited = self.processes[index]
            .1
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            panic!(
                "{} exited ({status})\n{}",
                self.processes[index].0,
                self.logs()
            );
        }
    }

    /// SIGKILL: no chance to hand anything back.
    fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.processes[index].1.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Send `signal` (`STOP`, `CONT`, …) to a process still running.
    fn signal(&self, index: usize, signal: &str) {
        if let Some(child) = &self.processes[index].1 {
            let sent = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .unwrap();
            assert!(sent.success(), "kill -{signal} failed");
        }
    }

    /// SIGTERM, as an operator stops a process; its exit status, or `None` if it is still
    /// running after `within` (it is then killed).
    fn terminate(&mut self, index: usize, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.processes[index].1.take()?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Every process's log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.processes {
            let text =
                std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {name} (last lines)\n"));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    async fn bus(&self) -> Arc<RedisBus> {
        RedisBus::connect_with(&self.url(), RedisBusConfig::default())
            .await
            .unwrap()
    }

    async fn client(&self) -> Arc<Client> {
        let bus: Arc<dyn Bus> = self.bus().await;
        Arc::new(Client::new(
            bus,
            Arc::new(walkoff_apps::builtin_registry().catalog()),
        ))
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            if let Some(child) = child {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn workflow(doc: Value) -> Arc<Workflow> {
    Arc::new(Workflow::from_canonical(doc).unwrap())
}

/// Follow an execution to its end through anything (a Redis restart): reconnect from the next
/// sequence number after an error. Trigger `gate` data is sent once `open` says so.
async fn follow(
    client: Arc<Client>,
    id: String,
    gate: Option<(String, Value, tokio::sync::watch::Receiver<bool>)>,
    limit: Duration,
) -> Result<(ExecutionSummary, Vec<Event>), String> {
    let deadline = Instant::now() + limit;
    let mut summary = ExecutionSummary::new(&id);
    let mut events = Vec::new();
    let mut next = 1;
    let mut gate = gate;
    loop {
        let mut stream = Box::pin(client.events(&id, next));
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let item = match tokio::time::timeout(remaining, stream.next()).await {
                Err(_) => {
                    return Err(format!(
                        "execution {id} did not finish in {limit:?}; it reached {:#?}",
                        summary
                    ))
                }
                Ok(None) => return Ok((summary, events)),
                Ok(Some(item)) => item,
            };
            let event = match item {
                Ok(event) => event,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            next = event.seq + 1;
            summary.apply(&event);
            if let EventKind::Node(node) = &event.kind {
                let awaiting = node.status == NodeStatus::AwaitingData && node.shard.is_none();
                if awaiting
                    && gate
                        .as_ref()
                        .is_some_and(|(label, _, _)| *label == node.label)
                {
                    let (label, data, mut open) = gate.take().unwrap();
                    let client = Arc::clone(&client);
                    let id = id.clone();
                    tokio::spawn(async move {
                        let _ = open.wait_for(|open| *open).await;
                        // Redis may be restarting: try until the data is taken.
                        for _ in 0..100 {
                            if client.trigger(&id, &label, data.clone()).await.is_ok() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    });
                }
            }
            events.push(event);
        }
    }
}

/// A task following an execution (see [`follow`]).
type Follower = tokio::task::JoinHandle<Result<(ExecutionSummary, Vec<Event>), String>>;

/// Wait for a followed execution's end: it completed, and every node ended exactly once.
async fn completed_once(deployment: &Deployment, id: &str, follower: Follower) -> ExecutionSummary {
    let (summary, events) = follower
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", deployment.logs()));
    assert_eq!(
        summary.status,
        WorkflowStatus::Completed,
        "{summary:#?}\n{}",
        deployment.logs()
    );
    assert_exactly_once(id, &events);
    summary
}

/// Every node (and every shard) has exactly one final event, and the workflow one final status.
fn assert_exactly_once(id: &str, events: &[Event]) {
    let mut finals: HashMap<(String, Option<u32>), usize> = HashMap::new();
    let mut workflow_finals = 0;
    for event in events {
        match &event.kind {
            EventKind::Node(node) if node.status.is_terminal() => {
                *finals.entry((node.label.clone(), node.shard)).or_default() += 1;
            }
            EventKind::Workflow { status, .. } if status.is_terminal() => workflow_finals += 1,
            _ => {}
        }
    }
    for ((label, shard), count) in finals {
        assert_eq!(
            count, 1,
            "execution {id}: node {label} shard {shard:?} ended {count} times"
        );
    }
    assert_eq!(
        workflow_finals, 1,
        "execution {id}: the workflow ended more than once"
    );
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.dedup();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "execution {id}: events are numbered 1, 2, 3… without gaps or repeats"
    );
}

async fn wait_for_nothing_pending(bus: &Arc<RedisBus>, deployment: &Deployment) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pending = bus.pending().await.unwrap();
        if pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} entries still pending\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chain, a parallel action and a condition, on the diagnostics app.
fn busy_workflow() -> Arc<Workflow> {
    workflow(json!({
        "id": "busy", "name": "busy", "start": "first",
        "nodes": [
            {"label": "first", "kind": "action", "app": "diagnostics", "action": "noop",
             "parameters": [{"name": "value", "value": [1, 2, 3, 4, 5, 6]}]},
            {"label": "fan", "kind": "action", "app": "diagnostics", "action": "noop", "parallelized": true,
             "parameters": [{"name": "value", "variant": "ACTION_RESULT", "value": "first", "parallelized": true}]},
            {"label": "big", "kind": "condition",
             "code": "if len(fan.result) > 3:\n    selected_node = yes\nelse:\n    selected_node = no"},
            {"label": "yes", "kind": "action", "app": "diagnostics", "action": "sleep",
             "parameters": [{"name": "ms", "value": 5}]},
            {"label": "no", "kind": "action", "app": "diagnostics", "action": "noop"}
        ],
        "branches": [
            {"from": "first", "to": "fan"}, {"from": "fan", "to": "big"},
            {"from": "big", "to": "yes"}, {"from": "big", "to": "no"}
        ]
    }))
}

/// Submit the busy workflow with no inputs; its execution's id.
async fn submit_busy(client: &Client) -> String {
    submit(client, &busy_workflow()).await
}

/// Submit `workflow` with no inputs; its execution's id.
async fn submit(client: &Client, workflow: &Arc<Workflow>) -> String {
    client
        .submit(
            Arc::clone(workflow),
            BTreeMap::new(),
            &BTreeMap::new(),
            BTreeMap::new(),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_two_executors_run_many_executions() {
    let mut deployment = Deployment::new();
    deployment.worker(&[]);
    deployment.worker(&[]);
    deployment.executor("diagnostics", 8);
    deployment.executor("diagnostics", 8);
    let client = deployment.client().await;
    let wf = busy_workflow();
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(submit(&client, &wf).await);
    }
    let followers: Vec<_> = ids
        .iter()
        .map(|id| {
            tokio::spawn(follow(
                Arc::clone(&client),
                id.clone(),
                None,
                Duration::from_secs(60),
            ))
        })
        .collect();
    for (id, follower) in ids.iter().zip(followers) {
        let (summary, events) = follower
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", deployment.logs()));
        assert_eq!(summary.status, WorkflowStatus::Completed, "{summary:#?}");
        assert_eq!(summary.nodes["fan"].result, Some(json!([1, 2, 3, 4, 5, 6])));
        assert_eq!(summary.nodes["no"].status, NodeStatus::Skipped);
        assert_exactly_once(id, &events);
    }
    let bus = deployment.bus().await;
    wait_for_nothing_pending(&bus, &deployment).await;
    // Both workers took part: each holds a share of the partitions.
    let mut conn = deployment.redis.connection().await;
    let workers: usize = redis::cmd("ZCARD")
        .arg(bus.keys().workers())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(workers, 2);
}

/// Lines of a record file, counted by text.
fn recorded(path: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts.entry(line.to_string()).or_default() += 1;
    }
    counts
}

/// An execution submitted, followed for 90 s, and the file it records in.
type LoggedRun = (String, PathBuf, Follower);

/// Submit `wf` with its variable `log` set to `log` (where `record` actions append) and follow it,
/// sending the gate's trigger data when told.
async fn submit_logging_to(
    client: &Arc<Client>,
    wf: &Arc<Workflow>,
    log: PathBuf,
    gate: Option<(String, Value, tokio::sync::watch::Receiver<bool>)>,
) -> LoggedRun {
    // `record` takes a path inside the executors' record directory: the deployment's.
    let name = log.file_name().unwrap().to_str().unwrap().to_string();
    let vars = BTreeMap::from([("log".to_string(), json!(name))]);
    let id = client
        .submit(Arc::clone(wf), vars, &BTreeMap::new(), BTreeMap::new())
        .await
        .unwrap();
    let follower = tokio::spawn(follow(
        Arc::clone(client),
        id.clone(),
        gate,
        Duration::from_secs(90),
    ));
    (id, log, follower)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_worker_and_an_executor_mid_run_loses_nothing_commits_once_and_reruns_only_what_was_held(
) {
    let mut deployment = Deployment::new();
    let worker = deployment.worker(&[]);
    deployment.worker(&[]);
    let executor = deployment.executor("diagnostics", 4);
    deployment.executor("diagnostics", 4);
    let client = deployment.client().await;
    // Each execution records four shards, holding each for a while, then waits at a trigger.
    let wf = workflow(json!({
        "id": "drill", "name": "drill", "start": "first",
        "variables": [{"name": "log", "value": ""}],
        "nodes": [
            {"label": "first", "kind": "action", "app": "diagnostics", "action": "noop"},
            {"label": "fan", "kind": "action", "app": "diagnostics", "action": "record",
             "parallelized": true, "concurrency": 4,
             "parameters": [
                {"name": "path", "variant": "WORKFLOW_VARIABLE", "value": "log"},
                {"name": "line", "value": ["a", "b", "c", "d"], "parallelized": true},
                {"name": "hold_ms", "value": 300}]},
            {"label": "gate", "kind": "trigger"},
            {"label": "last", "kind": "action", "app": "diagnostics", "action": "sleep",
             "parameters": [{"name": "ms", "value": 50}]}
        ],
        "branches": [{"from": "first", "to": "fan"}, {"from": "fan", "to": "gate"},
                     {"from": "gate", "to": "last"}]
    }));
    let (open_gates, gates_open) = tokio::sync::watch::channel(false);
    let mut runs = Vec::new();
    for i in 0..20 {
        let gate = ("gate".into(), json!({"go": i}), gates_open.clone());
        let log = deployment.path(&format!("record-{i}.txt"));
        runs.push(submit_logging_to(&client, &wf, log, Some(gate)).await);
    }
    // Kill an executor while shards are held, then a worker while triggers wait.
    tokio::time::sleep(Duration::from_millis(700)).await;
    deployment.kill9(executor);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    deployment.kill9(worker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    open_gates.send(true).unwrap();

    let mut ran_twice = 0;
    for (id, log, follower) in runs {
        let summary = completed_once(&deployment, &id, follower).await;
        assert_eq!(
            summary.nodes["fan"].result,
            Some(json!(["a", "b", "c", "d"]))
        );
        assert_eq!(
            summary.nodes["gate"].result,
            Some(json!({"go": runs_index(&log)}))
        );
        // Each shard ran at least once and at most as often as it may be delivered (twice: no
        // retry policy, plus one hand-out after its executor died).
        let counts = recorded(&log);
        for line in ["a", "b", "c", "d"] {
            let n = counts.get(line).copied().unwrap_or(0);
            assert!(
                (1..=2).contains(&n),
                "execution {id}: shard {line} ran {n} times"
            );
            ran_twice += usize::from(n == 2);
        }
    }
    assert!(
        ran_twice > 0,
        "the killed executor held shards mid-action, so some ran again elsewhere"
    );
    let bus = deployment.bus().await;
    wait_for_nothing_pending(&bus, &deployment).await;
    // The surviving worker owns every partition now.
    let owners: std::collections::BTreeSet<String> = lease_owners(&deployment)
        .await
        .into_iter()
        .map(|owner| owner.expect("every partition is owned"))
        .collect();
    assert_eq!(
        owners.len(),
        1,
        "one worker left, owning everything: {owners:?}"
    );
}

/// A trigger nobody answers fails when its wait is over, also when the worker that armed its
/// timeout was killed: the new owner of the partition arms it again from the execution's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_nobody_answers_fails_after_its_wait_even_when_its_worker_died() {
    let mut deployment = Deployment::new();
    let worker = deployment.worker(&[]);
    deployment.worker(&[]);
    let client = deployment.client().await;
    let wf = workflow(json!({
        "id": "unanswered", "name": "unanswered", "start": "gate",
        "nodes": [{"label": "gate", "kind": "trigger", "timeout_ms": 2000},
                  {"label": "after", "kind": "transform", "code": "result = 1"}],
        "branches": [{"from": "gate", "to": "after"}]
    }));
    let mut followers = Vec::new();
    for _ in 0..16 {
        let id = submit(&client, &wf).await;
        let follower = tokio::spawn(follow(
            Arc::clone(&client),
            id.clone(),
            None,
            Duration::from_secs(60),
        ));
        followers.push((id, follower));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    deployment.kill9(worker);
    for (id, follower) in followers {
        let (summary, events) = follower
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", deployment.logs()));
        assert_eq!(summary.status, WorkflowStatus::Failed, "{summary:#?}");
        assert_eq!(
            summary.nodes["gate"].error.as_deref(),
            Some("trigger 'gate' received no data within 2 seconds")
        );
        assert_eq!(summary.nodes["after"].status, NodeStatus::Skipped);
        assert_exactly_once(&id, &events);
    }
}

/// The worker owning each partition, if any (the worker part of its lease's token).
async fn lease_owners(deployment: &Deployment) -> Vec<Option<String>> {
    let bus = deployment.bus().await;
    let keys: Vec<String> = (0..bus.partitions()).map(|p| bus.keys().lease(p)).collect();
    let holders: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut deployment.redis.connection().await)
        .await
        .unwrap();
    holders
        .into_iter()
        .map(|token| Some(token?.rsplit_once(':')?.0.to_string()))
        .collect()
}

/// A worker paused past its leases (a stalled VM, a debugger) while its executions run: the other
/// worker takes its partitions over and goes on. Resumed, the paused worker still holds what it
/// read before and during the pause and commits it as if nothing happened — and writes nothing,
/// since those partitions are fenced against it; it learns it lost them and takes a share again.
/// Every step of every execution runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_resumed_after_a_takeover_writes_nothing_for_what_it_lost() {
    let mut deployment = Deployment::new();
    let paused = deployment.worker(&[]);
    deployment.worker(&[]);
    deployment.executor("diagnostics", 8);
    deployment.executor("diagnostics", 8);
    let client = deployment.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let distinct_owners = |owners: Vec<Option<String>>| {
        owners
            .into_iter()
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    while distinct_owners(lease_owners(&deployment).await) < 2 {
        assert!(
            Instant::now() < deadline,
            "two workers never shared the partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Chains of steps that each record their label, so a step run twice shows.
    let steps = 30;
    let nodes: Vec<Value> = (0..steps)
        .map(|i| {
            json!({"label": format!("s{i}"), "kind": "action", "app": "diagnostics",
                   "action": "record", "parameters": [
                       {"name": "path", "variant": "WORKFLOW_VARIABLE", "value": "log"},
                       {"name": "line", "value": format!("s{i}")},
                       {"name": "hold_ms", "value": 20}]})
        })
        .collect();
    let branches: Vec<Value> = (1..steps)
        .map(|i| json!({"from": format!("s{}", i - 1), "to": format!("s{i}")}))
        .collect();
    let wf = workflow(json!({
        "id": "steps", "name": "steps", "start": "s0",
        "variables": [{"name": "log", "value": ""}],
        "nodes": nodes, "branches": branches
    }));
    let mut runs = Vec::new();
    for i in 0..20 {
        let log = deployment.path(&format!("steps-{i}.txt"));
        runs.push(submit_logging_to(&client, &wf, log, None).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    deployment.signal(paused, "STOP");
    // Past the lease TTL (2.5 s) and the other worker's next beat.
    tokio::time::sleep(Duration::from_secs(4)).await;
    deployment.signal(paused, "CONT");

    for (id, log, follower) in runs {
        completed_once(&deployment, &id, follower).await;
        let counts = recorded(&log);
        for i in 0..steps {
            let n = counts.get(&format!("s{i}")).copied().unwrap_or(0);
            assert_eq!(n, 1, "execution {id}: step s{i} ran {n} times");
        }
    }
    let bus = deployment.bus().await;
    wait_for_nothing_pending(&bus, &deployment).await;
    let logs = std::fs::read_to_string(deployment.path(&format!("worker-{paused}.log"))).unwrap();
    assert!(
        logs.contains("owned by another worker") || logs.contains("lease lost"),
        "the resumed worker heard it lost its partitions:\n{logs}"
    );
}

/// The execution index encoded in a record file name (`record-{i}.txt`).
fn runs_index(log: &Path) -> u64 {
    log.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_prefix("record-"))
        .and_then(|s| s.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_aof_loses_no_execution() {
    let mut deployment = Deployment::new();
    deployment.worker(&[]);
    deployment.worker(&[]);
    deployment.executor("diagnostics", 8);
    deployment.executor("diagnostics", 8);
    let client = deployment.client().await;
    let wf = workflow(json!({
        "id": "slow", "name": "slow", "start": "a",
        "nodes": [
            {"label": "a", "kind": "action", "app": "diagnostics", "action": "sleep", "parameters": [{"name": "ms", "value": 200}]},
            {"label": "b", "kind": "action", "app": "diagnostics", "action": "sleep", "parameters": [{"name": "ms", "value": 200}]},
            {"label": "c", "kind": "action", "app": "diagnostics", "action": "sleep", "parameters": [{"name": "ms", "value": 200}]}
        ],
        "branches": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]
    }));
    let mut followers = Vec::new();
    for _ in 0..30 {
        let id = client
            .submit(
                Arc::clone(&wf),
                BTreeMap::new(),
                &BTreeMap::new(),
                BTreeMap::new(),
            )
            .await
            .unwrap();
        followers.push((
            id.clone(),
            tokio::spawn(follow(
                Arc::clone(&client),
                id,
                None,
                Duration::from_secs(90),
            )),
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    deployment.redis.restart(Duration::from_millis(500));
    for (id, follower) in followers {
        completed_once(&deployment, &id, follower).await;
    }
    let bus = deployment.bus().await;
    wait_for_nothing_pending(&bus, &deployment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_without_executors_fails_its_node_naming_the_app() {
    let mut deployment = Deployment::new();
    deployment.worker(&["--executor-wait", "1"]);
    deployment.executor("basics", 2);
    let client = deployment.client().await;
    // diagnostics is a known app, but no executor of it runs.
    let wf = workflow(json!({
        "id": "orphan", "name": "orphan", "start": "hello",
        "nodes": [
            {"label": "hello", "kind": "action", "app": "basics", "action": "hello_world"},
            {"label": "stranded", "kind": "action", "app": "diagnostics", "action": "noop"}
        ],
        "branches": [{"from": "hello", "to": "stranded"}]
    }));
    let id = client
        .submit(wf, BTreeMap::new(), &BTreeMap::new(), BTreeMap::new())
        .await
        .unwrap();
    let (summary, _) = follow(Arc::clone(&client), id, None, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", deployment.logs()));
    assert_eq!(summary.status, WorkflowStatus::Failed);
    assert_eq!(summary.nodes["hello"].status, NodeStatus::Success);
    let error = summary.nodes["stranded"].error.clone().unwrap_or_default();
    assert!(
        error.contains("no executor of app 'diagnostics' version '1.0.0' is running"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_past_its_memory_limit_fails_its_node_and_no_worker_dies() {
    // In WALKOFF 1.0 and before script hosts, this one allocation aborted the worker, and the
    // takeover replayed it on the next worker until none was left.
    let mut deployment = Deployment::new();
    let workers = [deployment.worker(&[]), deployment.worker(&[])];
    deployment.executor("basics", 2);
    let client = deployment.client().await;
    let wf = workflow(json!({
        "id": "bomb", "name": "bomb", "start": "hello",
        "nodes": [
            {"label": "hello", "kind": "action", "app": "basics", "action": "hello_world"},
            {"label": "bomb", "kind": "transform",
             "code": "s = \"a\" * 2000000000\nresult = len(s * 2000000000)"},
            {"label": "fine", "kind": "transform", "code": "result = len(hello.result)"}
        ],
        "branches": [{"from": "hello", "to": "bomb"}, {"from": "hello", "to": "fine"}]
    }));
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(submit(&client, &wf).await);
    }
    for id in ids {
        let (summary, _) = follow(Arc::clone(&client), id, None, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", deployment.logs()));
        assert_eq!(summary.status, WorkflowStatus::Failed);
        assert_eq!(
            summary.nodes["bomb"].error.as_deref(),
            Some("script exceeded its memory limit of 256 MiB")
        );
        assert_eq!(summary.nodes["fine"].status, NodeStatus::Success);
        assert_eq!(summary.nodes["fine"].result, Some(json!(11)));
    }
    for worker in workers {
        deployment.assert_running(worker);
    }
    // Again after a takeover: the survivor takes the killed worker's partitions over, runs the
    // bomb of the next execution, fails its node and stays up.
    deployment.kill9(workers[0]);
    let id = submit(&client, &wf).await;
    let (summary, _) = follow(Arc::clone(&client), id, None, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", deployment.logs()));
    assert_eq!(
        summary.nodes["bomb"].error.as_deref(),
        Some("script exceeded its memory limit of 256 MiB")
    );
    assert_eq!(summary.nodes["fine"].status, NodeStatus::Success);
    deployment.assert_running(workers[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_dead_lettered_and_stop_nothing() {
    let mut deployment = Deployment::new();
    deployment.worker(&[]);
    deployment.executor("diagnostics", 4);
    let client = deployment.client().await;
    let mut conn = deployment.redis.connection().await;
    // Garbage on an action stream and on every control partition, before and among real work.
    let streams: Vec<String> = std::iter::once("walkoff:actions:diagnostics@1.0.0:p3".to_string())
        .chain((0..deployment.bus().await.partitions()).map(|p| format!("walkoff:control:{p}")))
        .collect();
    for stream in &streams {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("m")
            .arg("{\"type\": \"start\", \"execution_id\": 7")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let id = submit_busy(&client).await;
    let (summary, _) = follow(Arc::clone(&client), id, None, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", deployment.logs()));
    assert_eq!(summary.status, WorkflowStatus::Completed);
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("walkoff:dead")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        dead.ids.len(),
        streams.len(),
        "every malformed entry is dead-lettered"
    );
    for entry in &dead.ids {
        let reason: String = entry.get("reason").unwrap();
        assert!(!reason.is_empty());
    }
    let bus = deployment.bus().await;
    wait_for_nothing_pending(&bus, &deployment).await;
}

/// `walkoff submit --wait --json` prints what `walkoff run --json` prints; `trigger`, `abort` and
/// `watch` act on running executions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_triggers_aborts_and_watches() {
    let mut deployment = Deployment::new();
    deployment.worker(&[]);
    deployment.executor("basics", 4);
    let url = deployment.url();
    let walkoff = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_walkoff"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let approve = "approval={\"approved\": true}";
    let submitted = walkoff(&[
        "submit",
        "--redis",
        &url,
        "examples/triage.json",
        "--trigger",
        approve,
        "--wait",
        "--json",
    ]);
    let ran = walkoff(&[
        "run",
        "examples/triage.json",
        "--trigger",
        approve,
        "--json",
    ]);
    assert_eq!(
        submitted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let (a, b): (Value, Value) = (
        serde_json::from_slice(&submitted.stdout).unwrap(),
        serde_json::from_slice(&ran.stdout).unwrap(),
    );
    let shape = |doc: &Value| -> BTreeMap<String, (Value, Value)> {
        doc["nodes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(label, n)| (label.clone(), (n["status"].clone(), n["result"].clone())))
            .collect()
    };
    assert_eq!(a["status"], "COMPLETED");
    assert_eq!(
        shape(&a),
        shape(&b),
        "submit --wait and run agree node by node"
    );

    // Without trigger data the execution waits; deliver it with `walkoff trigger`.
    let out = walkoff(&["submit", "--redis", &url, "examples/triage.json"]);
    assert_eq!(out.status.code(), Some(0));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let client = deployment.client().await;
    wait_until_awaiting(&client, &id, "approval").await;
    let bad = walkoff(&[
        "trigger",
        "--redis",
        &url,
        &id,
        "approval",
        "{\"approved\": \"yes\"}",
    ]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "data failing the trigger's schema is refused"
    );
    let good = walkoff(&[
        "trigger",
        "--redis",
        &url,
        &id,
        "approval",
        "{\"approved\": true}",
    ]);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let watched = walkoff(&["watch", "--redis", &url, &id, "--json"]);
    assert_eq!(watched.status.code(), Some(0));
    let lines: Vec<Event> = String::from_utf8_lossy(&watched.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.last().unwrap().is_final());
    // Replay from any sequence number.
    let from = walkoff(&["watch", "--redis", &url, &id, "--json", "--from", "5"]);
    let replayed: Vec<Event> = String::from_utf8_lossy(&from.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed.len(), lines.len() - 4);
    assert_eq!(replayed[0].seq, 5);

    // Abort a waiting execution; a second abort is refused as it has finished.
    let out = walkoff(&["submit", "--redis", &url, "examples/triage.json"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_until_awaiting(&client, &id, "approval").await;
    let aborted = walkoff(&["abort", "--redis", &url, &id]);
    assert_eq!(aborted.status.code(), Some(0));
    let watched = walkoff(&["watch", "--redis", &url, &id]);
    assert_eq!(
        watched.status.code(),
        Some(1),
        "an aborted execution ends with exit 1"
    );
    assert!(String::from_utf8_lossy(&watched.stdout).contains("ABORTED"));
    let again = walkoff(&["abort", "--redis", &url, &id]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already finished"));
    let unknown = walkoff(&["watch", "--redis", &url, "no-such-execution"]);
    assert_eq!(unknown.status.code(), Some(2));

    // An app version nobody registered is refused before anything is queued, naming it.
    let file = deployment.path("future.json");
    let doc = json!({"id": "future", "name": "future", "start": "a", "nodes": [
        {"label": "a", "kind": "action", "app": "basics", "app_version": "9.9.9", "action": "hello_world"}
    ]});
    std::fs::write(&file, doc.to_string()).unwrap();
    let refused = walkoff(&["submit", "--redis", &url, file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("basics") && stderr.contains("9.9.9"),
        "{stderr}"
    );
}

async fn wait_until_awaiting(client: &Arc<Client>, id: &str, label: &str) {
    let mut events = Box::pin(client.events(id, 1));
    let deadline = Duration::from_secs(20);
    while let Some(event) = tokio::time::timeout(deadline, events.next())
        .await
        .expect("the trigger is reached")
    {
        if let EventKind::Node(node) = &event.unwrap().kind {
            if node.label == label && node.status == NodeStatus::AwaitingData {
                return;
            }
        }
    }
    panic!("execution {id} ended before reaching {label}");
}

/// A Python virtualenv with the example app's pinned requirements, made once per target dir.
fn python_example_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-example-venv");
    let python = venv.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", "import redis, yaml"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 (with venv) must be installed");
        assert!(made.success(), "python3 -m venv failed");
        let requirements =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/python-example/requirements.txt");
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "-r"])
            .arg(requirements)
            .status()
            .expect("pip");
        assert!(
            installed.success(),
            "pip install of the example's requirements failed"
        );
        assert!(ready(), "the virtualenv cannot import redis and yaml");
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_written_in_python_serves_a_workflow() {
    let python = python_example_venv();
    let mut deployment = Deployment::new();
    deployment.worker(&[]);
    let app_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/python-example");
    let mut command = Command::new(python);
    command
        .arg(app_dir.join("app.py"))
        .args(["--redis", &deployment.url()]);
    deployment.spawn_command("python-example", command);

    // The workflow is submitted through the CLI, which validates it against the API the Python
    // process registered in Redis; wait for the registration first.
    let bus = deployment.bus().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.registered_apps().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the Python app never registered\n{}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let doc = json!({
        "id": "iocs", "name": "Defang and hash indicators", "start": "defang",
        "nodes": [
            {"label": "defang", "kind": "action", "app": "python-example", "action": "defang",
             "parallelized": true,
             "parameters": [{"name": "text", "value": ["http://evil.example.com/x", "10.0.0.1"],
                             "parallelized": true}]},
            {"label": "hash", "kind": "action", "app": "python-example", "action": "sha256",
             "parameters": [{"name": "text", "value": "abc"}]},
            {"label": "broken", "kind": "action", "app": "python-example", "action": "fail",
             "parameters": [{"name": "message", "value": "ticket system is down"}]}
        ],
        "branches": [{"from": "defang", "to": "hash"}, {"from": "hash", "to": "broken"}]
    });
    let file = deployment.path("iocs.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_walkoff"))
        .args(["submit", "--redis", &deployment.url(), "--wait", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the workflow fails at 'broken': {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        deployment.logs()
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "FAILED");
    assert_eq!(
        summary["nodes"]["defang"]["result"],
        json!(["hxxp://evil[.]example[.]com/x", "10[.]0[.]0[.]1"])
    );
    assert_eq!(
        summary["nodes"]["hash"]["result"],
        json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert_eq!(summary["nodes"]["broken"]["status"], "FAILURE");
    assert_eq!(summary["nodes"]["broken"]["error"], "ticket system is down");
    wait_for_nothing_pending(&bus, &deployment).await;
}

/// Workers and executors started before Redis wait for it (with back-off) instead of exiting, and
/// serve once it is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_started_before_redis_wait_for_it() {
    let port = redis_server::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    // Processes first, with the deployment's Redis not yet running on its port.
    let mut early = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["worker", "--redis", &url],
        vec!["executor", "--redis", &url, "--app", "diagnostics"],
    ] {
        let log = std::fs::File::create(dir.path().join(format!("{}.log", args[0]))).unwrap();
        early.push(
            Command::new(env!("CARGO_BIN_EXE_walkoff"))
                .args(&args)
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for child in &mut early {
        assert!(
            child.try_wait().unwrap().is_none(),
            "a process exited while Redis was away"
        );
    }
    let mut deployment = Deployment::around(RedisServer::start_on(port));
    for (i, child) in early.into_iter().enumerate() {
        deployment
            .processes
            .push((format!("early-{i}"), Some(child)));
    }
    let client = deployment.client().await;
    let id = submit_busy(&client).await;
    let (summary, events) = follow(
        Arc::clone(&client),
        id.clone(),
        None,
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| {
        let waited = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
        panic!("{e}\n{waited}")
    });
    assert_eq!(summary.status, WorkflowStatus::Completed);
    assert_exactly_once(&id, &events);
}

/// How Redis goes away under running processes.
#[derive(Clone, Copy, Debug)]
enum Outage {
    /// Killed: connections refused.
    Gone,
    /// SIGSTOP: connections open, nothing answers, blocking reads never return.
    Frozen,
}

/// A worker and an executor serve a workflow, Redis goes away, and both still stop on SIGTERM.
async fn stop_on_sigterm_during(outage: Outage) {
    let mut deployment = Deployment::new();
    let worker = deployment.worker(&[]);
    let executor = deployment.executor("diagnostics", 2);
    let client = deployment.client().await;
    let id = submit_busy(&client).await;
    let (summary, _) = follow(client, id, None, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", deployment.logs()));
    assert_eq!(summary.status, WorkflowStatus::Completed);

    match outage {
        Outage::Gone => deployment.redis.kill9(),
        Outage::Frozen => deployment.redis.signal("STOP"),
    }
    // Long enough for both to be retrying, or waiting on, their reads.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (index, role) in [(worker, "worker"), (executor, "executor")] {
        let status = deployment.terminate(index, Duration::from_secs(30));
        let logs = deployment.logs();
        let status =
            status.unwrap_or_else(|| panic!("the {role} ignored SIGTERM ({outage:?})\n{logs}"));
        assert!(status.success(), "the {role} exited with {status}\n{logs}");
    }
    deployment.redis.signal("CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_executors_stop_on_sigterm_while_redis_is_gone() {
    stop_on_sigterm_during(Outage::Gone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_executors_stop_on_sigterm_while_redis_is_frozen() {
    stop_on_sigterm_during(Outage::Frozen).await;
}
