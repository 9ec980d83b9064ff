//! The distributed roles: `worker` and `executor` serve a deployment through Redis; `submit`,
//! `trigger`, `abort` and `watch` are its clients.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use walkoff_dataflow::bus::{ExecutionRecord, RedisBus, RedisBusConfig};
use walkoff_dataflow::{
    Bus, BusDispatch, BusError, CatalogSource, Client, ControlError, ExecutionSummary, Runtime,
    RuntimeConfig, SubmitError,
};
use walkoff_executors::{serve, ExecutorConfig};
use walkoff_gateway::store::redact;
use walkoff_schema::{load_workflow_file, AppCatalog, Version};

use crate::run::{
    check_workflow, exit_code, invalid, parse_inputs, print_event, InputArgs, Interrupt,
};

#[derive(Args, Clone)]
pub struct RedisArgs {
    /// The Redis server of the deployment.
    #[arg(long, env = "WALKOFF_REDIS", value_name = "URL")]
    pub(crate) redis: String,
    /// The prefix of every key of the deployment.
    #[arg(long, default_value = "walkoff", value_name = "PREFIX")]
    pub(crate) prefix: String,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Seconds an action request waits for an executor of its app before its node fails.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    executor_wait: f64,
    /// Control partitions, if this is the first process of the deployment (fixed afterwards).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Seconds a finished execution's log and events are kept.
    #[arg(long, default_value_t = 86400, value_name = "SECONDS")]
    retention: u64,
}

#[derive(Args)]
pub struct ExecutorArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The app to serve: NAME or NAME@VERSION (the newest built-in version by default).
    #[arg(long, value_name = "NAME[@VERSION]")]
    app: String,
    /// Actions in flight at once (default: twice the number of cores).
    #[arg(long)]
    concurrency: Option<usize>,
    /// The deployment's master key, to open the globals actions are given (without one, an
    /// action given a global fails saying so).
    #[command(flatten)]
    key: crate::serve::KeyArgs,
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// The workflow file (walkoff or WALKOFF 1.0 JSON).
    file: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    /// Follow the execution to its end, as `walkoff run` does, and exit with its outcome.
    #[arg(long)]
    wait: bool,
    /// With --wait, print one JSON document at the end (the same as `walkoff run --json`).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TriggerArgs {
    #[command(flatten)]
    redis: RedisArgs,
    execution_id: String,
    /// The trigger's label or id.
    label: String,
    /// The data, JSON.
    data: String,
}

#[derive(Args)]
pub struct AbortArgs {
    #[command(flatten)]
    redis: RedisArgs,
    execution_id: String,
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    redis: RedisArgs,
    execution_id: String,
    /// Start at this event sequence number (1: from the beginning).
    #[arg(long = "from", default_value_t = 1, value_name = "SEQ")]
    from: u64,
    /// Print each event as one JSON line.
    #[arg(long)]
    json: bool,
}

fn bus_config(args: &RedisArgs) -> RedisBusConfig {
    RedisBusConfig {
        prefix: args.prefix.clone(),
        ..RedisBusConfig::default()
    }
}

/// A name no other process of the deployment uses: host, process id and a random suffix.
pub(crate) fn consumer_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{role}-{host}-{}-{}", std::process::id(), &random[..6])
}

/// Connect, retrying with back-off while Redis is not there yet (a server role must outlive a
/// Redis restart or a slow start), until interrupted.
async fn connect_patiently(
    config: RedisBusConfig,
    url: &str,
    interrupt: &mut Interrupt,
) -> Option<Arc<RedisBus>> {
    let mut wait = Duration::from_millis(100);
    loop {
        match RedisBus::connect_with(url, config.clone()).await {
            Ok(bus) => return Some(bus),
            Err(e) => {
                tracing::warn!(error = %e, ?wait, "Redis is not reachable yet");
                eprintln!("waiting for Redis at {}: {e}", redact(url));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = interrupt.recv() => return None,
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Connect once, for the client commands: they report a missing Redis instead of waiting.
async fn connect(args: &RedisArgs) -> Result<Arc<RedisBus>, ExitCode> {
    RedisBus::connect_with(&args.redis, bus_config(args))
        .await
        .map_err(|e| {
            eprintln!("error: cannot reach Redis at {}: {e}", redact(&args.redis));
            ExitCode::FAILURE
        })
}

/// The built-in apps' APIs plus those executors registered in Redis.
struct RedisCatalog(Arc<RedisBus>);

#[async_trait::async_trait]
impl CatalogSource for RedisCatalog {
    async fn load(&self) -> Result<AppCatalog, BusError> {
        self.0
            .app_catalog(&walkoff_apps::builtin_registry().catalog())
            .await
    }
}

pub async fn worker(args: WorkerArgs) -> ExitCode {
    let mut interrupt = Interrupt::listen();
    let config = RedisBusConfig {
        partitions: args.partitions,
        retention: Duration::from_secs(args.retention),
        ..bus_config(&args.redis)
    };
    let Some(bus) = connect_patiently(config, &args.redis.redis, &mut interrupt).await else {
        return ExitCode::SUCCESS;
    };
    let source = Arc::new(RedisCatalog(Arc::clone(&bus)));
    let catalog = match source.load().await {
        Ok(catalog) => catalog,
        Err(e) => {
            tracing::warn!(error = %e, "could not load registered apps; built-in apps only");
            walkoff_apps::builtin_registry().catalog()
        }
    };
    let consumer = consumer_name("worker");
    eprintln!(
        "worker {consumer} serving {} ({} partitions)",
        redact(&args.redis.redis),
        bus.partitions()
    );
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let runtime = Runtime::start_with_source(
        Arc::clone(&dyn_bus),
        Arc::new(BusDispatch(Arc::clone(&dyn_bus))),
        Arc::new(catalog),
        Some(source),
        RuntimeConfig {
            consumer,
            executor_wait: Duration::from_secs_f64(args.executor_wait.max(0.0)),
            ..RuntimeConfig::default()
        },
    );
    interrupt.recv().await;
    eprintln!("worker stopping: its partitions go to the other workers");
    runtime.shutdown().await;
    dyn_bus.close().await;
    ExitCode::SUCCESS
}

pub async fn executor(args: ExecutorArgs) -> ExitCode {
    let registry = walkoff_apps::builtin_registry();
    let (name, version) = match args.app.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (args.app.as_str(), None),
    };
    let app = registry
        .apps()
        .filter(|a| a.app_ref().name == name && version.is_none_or(|v| a.app_ref().version == v))
        .max_by_key(|a| Version::parse(&a.app_ref().version))
        .cloned();
    let Some(app) = app else {
        let known: Vec<String> = registry.apps().map(|a| a.app_ref().to_string()).collect();
        return invalid([format!(
            "--app {}: no built-in app has this name and version (built in: {})",
            args.app,
            known.join(", ")
        )]);
    };
    let app = match args.key.load_existing() {
        Ok(Some(key)) => Arc::new(
            walkoff_executors::PreparedApp::new(app.app())
                .opening_with(Arc::new(walkoff_executors::secrets::Secrets::new(&key))),
        ),
        Ok(None) => app,
        Err(e) => return invalid([format!("the master key: {e}")]),
    };
    let mut interrupt = Interrupt::listen();
    let Some(bus) =
        connect_patiently(bus_config(&args.redis), &args.redis.redis, &mut interrupt).await
    else {
        return ExitCode::SUCCESS;
    };
    let api = serde_json::to_string(app.api()).unwrap_or_default();
    if let Err(e) = bus.register_app(app.app_ref(), &api).await {
        tracing::warn!(error = %e, "could not register the app's API");
    }
    let mut config = ExecutorConfig {
        consumer: consumer_name("executor"),
        ..ExecutorConfig::default()
    };
    if let Some(n) = args.concurrency {
        config.concurrency = n.max(1);
    }
    eprintln!(
        "executor {} serving {} with {} actions in flight",
        config.consumer,
        app.app_ref(),
        config.concurrency
    );
    let dyn_bus: Arc<dyn Bus> = bus;
    let serving = tokio::spawn(serve(Arc::clone(&dyn_bus), app, config));
    interrupt.recv().await;
    eprintln!("executor stopping");
    dyn_bus.close().await;
    // Actions in flight finish and are reported, for a while: past it (or with Redis frozen), what
    // is unreported is handed out again once this executor's heartbeat lapses.
    if tokio::time::timeout(EXECUTOR_STOP_GRACE, serving)
        .await
        .is_err()
    {
        eprintln!("executor stopped with actions unreported; they will be handed out again");
    }
    ExitCode::SUCCESS
}

/// How long a stopping executor waits for its actions in flight and their reports.
const EXECUTOR_STOP_GRACE: Duration = Duration::from_secs(10);

/// A client of the deployment, with the catalog it validates against.
async fn client(args: &RedisArgs) -> Result<(Client, Arc<AppCatalog>), ExitCode> {
    let bus = connect(args).await?;
    let catalog = RedisCatalog(Arc::clone(&bus)).load().await.map_err(|e| {
        eprintln!("error: cannot read the registered apps: {e}");
        ExitCode::FAILURE
    })?;
    let catalog = Arc::new(catalog);
    Ok((Client::new(bus, Arc::clone(&catalog)), catalog))
}

pub async fn submit(args: SubmitArgs) -> ExitCode {
    let (workflow, _) = match load_workflow_file(&args.file) {
        Ok(loaded) => loaded,
        Err(e) => return invalid([format!("{}: {e}", args.file.display())]),
    };
    let (vars, globals, triggers) = match parse_inputs(&args.inputs) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let (client, catalog) = match client(&args.redis).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let workflow = Arc::new(workflow);
    // Trigger data is checked against its trigger before anything is sent.
    let (_, checked) = match check_workflow(&args.file, &workflow, &catalog, None, triggers) {
        Ok(checked) => checked,
        Err(code) => return code,
    };
    let execution_id = match client.submit(workflow, vars, &globals, checked).await {
        Ok(id) => id,
        Err(SubmitError::Bus(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => return invalid([e.to_string()]),
    };
    if !args.wait {
        println!("{execution_id}");
        return ExitCode::SUCCESS;
    }
    let mut summary = ExecutionSummary::new(&execution_id);
    let mut events = Box::pin(client.events(&execution_id, 1));
    let mut interrupt = Interrupt::listen();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = interrupt.recv() => {
                eprintln!("stopped waiting; execution {execution_id} goes on (walkoff watch {execution_id})");
                return ExitCode::from(1);
            }
        };
        let Some(event) = event else { break };
        match event {
            Ok(event) => {
                summary.apply(&event);
                if !args.json {
                    print_event(&event);
                }
            }
            Err(e) => {
                eprintln!("error: lost the event stream: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    client.bus().close().await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        println!("execution {execution_id}: {}", summary.status);
    }
    exit_code(summary.status)
}

fn control_error(e: ControlError) -> ExitCode {
    match e {
        ControlError::Bus(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        other => invalid([other.to_string()]),
    }
}

pub async fn trigger(args: TriggerArgs) -> ExitCode {
    let data = match serde_json::from_str(&args.data) {
        Ok(data) => data,
        Err(e) => return invalid([format!("the trigger data is not JSON: {e}")]),
    };
    let (client, _) = match client(&args.redis).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.trigger(&args.execution_id, &args.label, data).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => control_error(e),
    }
}

pub async fn abort(args: AbortArgs) -> ExitCode {
    let (client, _) = match client(&args.redis).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.abort(&args.execution_id).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => control_error(e),
    }
}

pub async fn watch(args: WatchArgs) -> ExitCode {
    let bus = match connect(&args.redis).await {
        Ok(bus) => bus,
        Err(code) => return code,
    };
    let dyn_bus: Arc<dyn Bus> = bus;
    match dyn_bus
        .lookup_executions(std::slice::from_ref(&args.execution_id))
        .await
    {
        Ok(records) if records.first() == Some(&ExecutionRecord::Absent) => {
            return invalid([format!("no execution '{}'", args.execution_id)]);
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut events = Box::pin(walkoff_dataflow::follow(
        Arc::clone(&dyn_bus),
        args.execution_id.clone(),
        args.from,
    ));
    let mut last = None;
    let mut interrupt = Interrupt::listen();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = interrupt.recv() => return ExitCode::from(1),
        };
        let Some(event) = event else { break };
        match event {
            Ok(event) => {
                if args.json {
                    println!("{}", serde_json::to_string(&event).unwrap_or_default());
                } else {
                    print!("#{:<5} ", event.seq);
                    print_event(&event);
                }
                if let walkoff_schema::EventKind::Workflow { status, .. } = &event.kind {
                    last = Some(*status);
                }
            }
            Err(e) => {
                eprintln!("error: lost the event stream: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    dyn_bus.close().await;
    match last {
        Some(status) => exit_code(status),
        None => {
            eprintln!(
                "error: execution {} has no events from {} on",
                args.execution_id, args.from
            );
            ExitCode::from(1)
        }
    }
}

#[derive(Args)]
pub struct AutoscaleArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Seconds between passes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Where to serve its metrics (Prometheus text: backlog, replicas, scalings per service).
    #[arg(long, env = "WALKOFF_METRICS_LISTEN", value_name = "ADDRESS")]
    metrics: Option<std::net::SocketAddr>,
}

/// Scale each app service of the swarm (label `walkoff.app`) by its backlog and its resources,
/// until interrupted. Docker comes from `DOCKER_HOST` or the local socket: run it on a manager.
pub async fn autoscale(args: AutoscaleArgs) -> ExitCode {
    let mut interrupt = Interrupt::listen();
    let scaler = match walkoff_stack::docker::SwarmAutoscaler::connect(&args.redis.prefix).await {
        Ok(scaler) => scaler,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let redis = match redis::Client::open(args.redis.redis.as_str()) {
        Ok(client) => match redis::aio::ConnectionManager::new(client).await {
            Ok(connection) => connection,
            Err(e) => {
                eprintln!(
                    "error: cannot reach Redis at {}: {e}",
                    redact(&args.redis.redis)
                );
                return ExitCode::FAILURE;
            }
        },
        Err(e) => return invalid([format!("--redis: {e}")]),
    };
    if let Some(address) = args.metrics {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => {
                tokio::spawn(walkoff_stack::docker::serve_metrics(
                    listener,
                    scaler.metrics.clone(),
                ));
            }
            Err(e) => {
                eprintln!("error: cannot serve metrics on {address}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!(
        "autoscaling the app services of this swarm from {} every {} s",
        redact(&args.redis.redis),
        args.interval
    );
    walkoff_stack::docker::run(
        scaler,
        redis,
        Duration::from_secs_f64(args.interval.max(0.1)),
        interrupt.recv(),
    )
    .await;
    ExitCode::SUCCESS
}
