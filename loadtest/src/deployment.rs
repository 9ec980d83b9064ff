//! The redis mode: a `redis-server` of our own on a free loopback port, K workers and M executors
//! as separate `walkoff` processes; all stopped at the end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use walkoff_dataflow::bus::{RedisBus, RedisBusConfig};
use walkoff_dataflow::{Bus, Client};
use walkoff_schema::{AppRef, Event, EventKind, Workflow, WorkflowStatus};

use crate::stats::{process_usage, ProcessUsage, Run};

/// A process we started; stopped when dropped, and by [`stop_all_started`] when the harness is
/// interrupted (a signal skips destructors).
pub struct Started {
    pub name: String,
    /// The child, registered for `stop_all_started` until it has been stopped and reaped.
    child: Option<(Child, Tracked)>,
}

/// Process ids of every `Started` still running.
static RUNNING: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn running() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<u32>> {
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stop every process the harness started and has not stopped yet: SIGTERM (Celery takes its pool
/// processes down with it), then SIGKILL for any still there a moment later.
pub fn stop_all_started() {
    let pids: Vec<String> = running().iter().map(u32::to_string).collect();
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill").arg("-TERM").args(&pids).status();
    let deadline = Instant::now() + Duration::from_secs(3);
    let alive = |pid: &String| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    while Instant::now() < deadline && pids.iter().any(alive) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<&String> = pids.iter().filter(|pid| alive(pid)).collect();
    if !left.is_empty() {
        let _ = Command::new("kill").arg("-KILL").args(left).status();
    }
}

/// A child process registered for [`stop_all_started`] while this lives: held by `Started`, or
/// beside a child run to completion elsewhere (`wait_with_output`).
pub struct Tracked(u32);

impl Tracked {
    pub fn new(child: &Child) -> Tracked {
        running().insert(child.id());
        Tracked(child.id())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        running().remove(&self.0);
    }
}

impl Started {
    pub fn new(name: &str, child: Child) -> Started {
        let tracked = Tracked::new(&child);
        Started {
            name: name.to_string(),
            child: Some((child, tracked)),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|(child, _)| child.id())
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        // The registration goes once the child is reaped, at the end of the block.
        if let Some((mut child, _tracked)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it does not stop within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some((mut child, _tracked)) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether a `redis-server` the harness starts keeps an append-only file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// AOF with an fsync every second, the usual production setting: walkoff's and the peers'.
    Aof,
    /// Nothing on disk, as a plain `redis-server` runs: the machine's yardstick.
    None,
}

/// Start `redis-server` on a free port, its files in `dir`.
pub fn start_redis(dir: &Path, persistence: Persistence) -> anyhow::Result<(Started, u16)> {
    let port = free_port()?;
    let appendonly = match persistence {
        Persistence::Aof => "yes",
        Persistence::None => "no",
    };
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args([
            "--appendonly",
            appendonly,
            "--appendfsync",
            "everysec",
            "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("redis-server must be installed (apt-get install redis-server)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((Started::new("redis-server", child), port))
}

/// The `walkoff` binary: `$WALKOFF_BIN`, or the one built beside this one.
pub fn walkoff_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("WALKOFF_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe()?;
    let beside = me.with_file_name("walkoff");
    if beside.exists() {
        return Ok(beside);
    }
    // Test binaries live one directory further down (target/<profile>/deps).
    if let Some(up) = me.parent().and_then(Path::parent) {
        let candidate = up.join("walkoff");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("cannot find the walkoff binary beside {}; build it (cargo build --release) or set WALKOFF_BIN", me.display())
}

pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub redis: Started,
    pub port: u16,
    pub workers: Vec<Started>,
    pub executors: Vec<Started>,
    client: Arc<Client>,
    bus: Arc<RedisBus>,
}

impl Deployment {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `retention`: seconds the workers keep a finished execution's log and events.
    pub async fn start(
        workers: usize,
        executors: usize,
        concurrency: usize,
        retention: Option<u64>,
    ) -> anyhow::Result<Deployment> {
        let dir = tempfile::tempdir()?;
        let (redis, port) = start_redis(dir.path(), Persistence::Aof)?;
        let url = format!("redis://127.0.0.1:{port}");
        let binary = walkoff_binary()?;
        let spawn = |name: String, args: Vec<String>| -> anyhow::Result<Started> {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
            let child = Command::new(&binary)
                .args(&args)
                .env("WALKOFF_LOG", "warn")
                // Gateways share the deployment's master key, kept with its files.
                .env("WALKOFF_KEY_FILE", dir.path().join("key"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("start {}", binary.display()))?;
            Ok(Started::new(&name, child))
        };
        let mut started_workers = Vec::new();
        for i in 0..workers {
            started_workers.push(spawn(
                format!("worker-{i}"),
                ["worker", "--redis", &url]
                    .into_iter()
                    .map(String::from)
                    .chain(retention.map(|s| format!("--retention={s}")))
                    .collect(),
            )?);
        }
        let mut started_executors = Vec::new();
        let per_executor = concurrency.max(1).to_string();
        for i in 0..executors {
            started_executors.push(spawn(
                format!("executor-{i}"),
                vec![
                    "executor".into(),
                    "--redis".into(),
                    url.clone(),
                    "--app".into(),
                    "diagnostics".into(),
                    "--concurrency".into(),
                    per_executor.clone(),
                ],
            )?);
        }
        let bus = RedisBus::connect_with(&url, RedisBusConfig::default()).await?;
        let dyn_bus: Arc<dyn Bus> = bus.clone();
        let client = Arc::new(Client::new(
            dyn_bus,
            Arc::new(walkoff_apps::builtin_registry().catalog()),
        ));
        let deployment = Deployment {
            dir,
            redis,
            port,
            workers: started_workers,
            executors: started_executors,
            client,
            bus,
        };
        deployment.wait_until_ready(workers, executors).await?;
        Ok(deployment)
    }

    async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        Ok(redis::Client::open(self.url())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// What failed in an execution, from its events: each failed node's label and error.
    async fn failed_nodes(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        execution_id: &str,
    ) -> String {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(self.bus.keys().events(execution_id))
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await
            .unwrap_or_default();
        let failures: Vec<String> = entries
            .iter()
            .filter_map(|(_, fields)| {
                let raw = &fields.iter().find(|(k, _)| k == "m")?.1;
                match serde_json::from_str::<Event>(raw).ok()?.kind {
                    EventKind::Node(node) if node.status == walkoff_schema::NodeStatus::Failure => {
                        Some(format!(
                            "node '{}' failed: {}",
                            node.label,
                            node.error.unwrap_or_default()
                        ))
                    }
                    _ => None,
                }
            })
            .collect();
        if failures.is_empty() {
            "no node failed".into()
        } else {
            failures.join("; ")
        }
    }

    /// Every worker beats and every partition is owned; every executor beats.
    async fn wait_until_ready(&self, workers: usize, executors: usize) -> anyhow::Result<()> {
        let mut conn = self.connection().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let partitions = self.bus.partitions();
        let keys = self.bus.keys();
        loop {
            let live_workers: usize = redis::cmd("ZCARD")
                .arg(keys.workers())
                .query_async(&mut conn)
                .await?;
            let lease_keys: Vec<String> = (0..partitions).map(|p| keys.lease(p)).collect();
            let leases: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&lease_keys)
                .query_async(&mut conn)
                .await?;
            let owners: HashSet<String> = leases
                .iter()
                .flatten()
                .filter_map(|t| t.rsplit_once(':').map(|(w, _)| w.to_string()))
                .collect();
            let live_executors: usize = redis::cmd("ZCARD")
                .arg(keys.executors(&AppRef {
                    name: "diagnostics".into(),
                    version: "1.0.0".into(),
                }))
                .query_async(&mut conn)
                .await?;
            if live_workers == workers
                && leases.iter().all(Option::is_some)
                && owners.len() == workers.min(partitions as usize)
                && live_executors == executors
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the deployment did not come up: {live_workers}/{workers} workers, \
                     {}/{partitions} partitions owned by {} workers, {live_executors}/{executors} executors; logs in {}",
                    leases.iter().flatten().count(),
                    owners.len(),
                    self.dir.path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Submit `executions` executions at once and wait for all of them on the feed of finished
    /// executions; `chaos` runs alongside, told how many have finished so far.
    pub async fn run(
        &mut self,
        workflow: &Arc<Workflow>,
        executions: usize,
        progress: &indicatif::ProgressBar,
        limit: Duration,
        mut chaos: Option<&mut Chaos>,
    ) -> anyhow::Result<Run> {
        let mut conn = self.connection().await?;
        let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(self.bus.keys().finished())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let mut cursor = last.first().map_or("0-0".to_string(), |e| e.0.clone());
        let submitted_at = Utc::now();
        let started = Instant::now();
        if let Some(chaos) = chaos.as_deref_mut() {
            // The kill is timed from the same origin as the completions.
            chaos.started = started;
        }
        let ids = self
            .client
            .submit_many(
                Arc::clone(workflow),
                vec![BTreeMap::new(); executions],
                &BTreeMap::new(),
            )
            .await?;
        let mut waiting: HashSet<String> = ids.iter().cloned().collect();
        let mut finished: HashMap<String, (DateTime<Utc>, WorkflowStatus)> = HashMap::new();
        while !waiting.is_empty() {
            if started.elapsed() > limit {
                break;
            }
            if let Some(chaos) = chaos.as_deref_mut() {
                chaos.tick(self, finished.len(), executions);
            }
            let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(10_000)
                .arg("BLOCK")
                .arg(200)
                .arg("STREAMS")
                .arg(self.bus.keys().finished())
                .arg(&cursor)
                .query_async(&mut conn)
                .await?;
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                cursor = entry.id.clone();
                let Some(raw) = entry.get::<String>("m") else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Event>(&raw) else {
                    continue;
                };
                if waiting.remove(&event.execution_id) {
                    if let EventKind::Workflow { status, .. } = event.kind {
                        finished.insert(event.execution_id.clone(), (event.at, status));
                    }
                    progress.inc(1);
                }
            }
        }
        let mut run = Run {
            lost: waiting.len(),
            ..Run::default()
        };
        let mut last_at = submitted_at;
        for (id, (at, status)) in &finished {
            if *status != WorkflowStatus::Completed {
                let why = self.failed_nodes(&mut conn, id).await;
                bail!(
                    "execution {id} ended {status}: {why}; logs in {}",
                    self.dir.path().display()
                );
            }
            let ms = (*at - submitted_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            run.latencies_ms.push(ms);
            run.completions_ms.push(ms);
            last_at = last_at.max(*at);
        }
        run.wall_ms = (last_at - submitted_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        if let Some(chaos) = chaos {
            chaos.finish(self, &ids, &run).await?;
        }
        Ok(run)
    }

    /// CPU time and peak memory of every process of the deployment (Redis included).
    pub fn usage(&self) -> Vec<ProcessUsage> {
        std::iter::once(&self.redis)
            .chain(&self.workers)
            .chain(&self.executors)
            .filter_map(|p| process_usage(p.pid()?, &p.name))
            .collect()
    }

    pub async fn redis_memory_mb(&self) -> anyhow::Result<f64> {
        self.redis_memory_field_mb("used_memory_peak").await
    }

    /// Redis's memory in use now (`used_memory`), in MB.
    pub async fn redis_used_memory_mb(&self) -> anyhow::Result<f64> {
        self.redis_memory_field_mb("used_memory").await
    }

    async fn redis_memory_field_mb(&self, field: &str) -> anyhow::Result<f64> {
        let mut conn = self.connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await?;
        let bytes = info
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        Ok(crate::stats::round(bytes / (1024.0 * 1024.0)))
    }

    /// Stop the workers and executors, keeping Redis (and its directory) for the peers.
    pub async fn stop_engine(mut self) -> (Started, tempfile::TempDir) {
        self.bus.close().await;
        for p in self.workers.iter_mut().chain(self.executors.iter_mut()) {
            p.stop(Duration::from_secs(5));
        }
        (self.redis, self.dir)
    }
}

/// Kills a worker and an executor with SIGKILL once a share of the executions has finished, then
/// checks what the run lost or repeated.
pub struct Chaos {
    /// Kill when this share has finished.
    pub at_share: f64,
    killed_at: Option<Instant>,
    started: Instant,
    pub report: ChaosReport,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChaosReport {
    pub killed: Vec<String>,
    pub killed_at_ms: f64,
    pub lost: usize,
    /// Nodes (or shards) whose end was committed more than once: must be 0. (Actions an executor
    /// held when it was killed run again elsewhere — at-least-once delivery — and are not this.)
    pub duplicate_final_events: usize,
    /// Action requests handed out again because the executor holding them died (Redis's
    /// `walkoff:stats` counter): actions that ran again, as at-least-once delivery allows.
    pub actions_handed_out_again: u64,
    /// The longest pause in completions after the kills: how long the survivors took to take over.
    pub recovery_ms: f64,
}

impl Chaos {
    pub fn new(at_share: f64) -> Chaos {
        Chaos {
            at_share,
            killed_at: None,
            started: Instant::now(),
            report: ChaosReport::default(),
        }
    }

    fn tick(&mut self, deployment: &mut Deployment, finished: usize, total: usize) {
        if self.killed_at.is_some() || (finished as f64) < self.at_share * total as f64 {
            return;
        }
        let now = Instant::now();
        for victim in [
            deployment.workers.first_mut(),
            deployment.executors.first_mut(),
        ]
        .into_iter()
        .flatten()
        {
            victim.kill9();
            self.report.killed.push(victim.name.clone());
        }
        self.killed_at = Some(now);
        self.report.killed_at_ms = now.duration_since(self.started).as_secs_f64() * 1000.0;
    }

    async fn finish(
        &mut self,
        deployment: &Deployment,
        ids: &[String],
        run: &Run,
    ) -> anyhow::Result<()> {
        self.report.lost = run.lost;
        // The longest gap between completions after the kill.
        let kill_ms = self.report.killed_at_ms;
        let mut after: Vec<f64> = run
            .completions_ms
            .iter()
            .copied()
            .filter(|&t| t >= kill_ms)
            .collect();
        after.sort_by(f64::total_cmp);
        let mut previous = kill_ms;
        for t in after {
            self.report.recovery_ms = self.report.recovery_ms.max(t - previous);
            previous = t;
        }
        self.report.recovery_ms = crate::stats::round(self.report.recovery_ms);
        // Every node of every execution ended exactly once.
        let mut conn = deployment.connection().await?;
        for id in ids {
            let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(deployment.bus.keys().events(id))
                .arg("-")
                .arg("+")
                .query_async(&mut conn)
                .await?;
            let mut finals: HashMap<(String, Option<u32>), usize> = HashMap::new();
            for (_, fields) in entries {
                let Some((_, raw)) = fields.iter().find(|(k, _)| k == "m") else {
                    continue;
                };
                if let Ok(Event {
                    kind: EventKind::Node(node),
                    ..
                }) = serde_json::from_str::<Event>(raw)
                {
                    if node.status.is_terminal() {
                        *finals.entry((node.node_id, node.shard)).or_default() += 1;
                    }
                }
            }
            self.report.duplicate_final_events += finals.values().filter(|&&n| n > 1).count();
        }
        let again: Option<u64> = redis::cmd("HGET")
            .arg(deployment.bus.keys().stats())
            .arg(walkoff_dataflow::bus::STAT_ACTIONS_HANDED_OUT_AGAIN)
            .query_async(&mut conn)
            .await?;
        self.report.actions_handed_out_again = again.unwrap_or(0);
        Ok(())
    }
}
