//! `walkoff-loadtest`: run a scenario on walkoff (in-process, or as a Redis deployment of separate
//! processes) and on peers side by side, and report with percentiles and charts.

mod deployment;
mod embedded;
mod fanout;
mod floor;
mod gateway;
mod peers;
mod report;
mod scenario;
mod stats;
mod yardstick;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use deployment::{Chaos, Deployment, Persistence};
use peers::Peer;
use report::Report;
use scenario::{workload, ScenarioKind, Workload};
use stats::{process_usage, summarize, Run};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scripts {
    Hosts,
    InProcess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The in-process runtime on the in-memory bus (no servers).
    Embedded,
    /// A redis-server of its own plus workers and executors as separate processes.
    Redis,
    /// A `walkoff serve` of its own, driven over HTTP and WebSockets as its users drive it.
    Gateway,
}

#[derive(Parser)]
#[command(
    name = "walkoff-loadtest",
    version,
    about = "Load tests for walkoff, with peers side by side"
)]
struct Args {
    scenario: ScenarioKind,
    /// The scenario's size (default: chain 100, fanout 1000, concurrent 500, branching 10000,
    /// chaos 500).
    #[arg(long)]
    size: Option<usize>,
    /// Run these sizes one after another, to show how cost grows with size.
    #[arg(long, value_delimiter = ',', conflicts_with = "size")]
    sweep: Vec<usize>,
    #[arg(long, value_enum, default_value_t = Mode::Embedded)]
    mode: Mode,
    /// Worker processes (redis mode).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Executor processes of the diagnostics app (redis mode).
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Actions each executor runs at once (redis mode; default: twice the cores, at least 8).
    #[arg(long)]
    executor_concurrency: Option<usize>,
    /// Measured runs, after one warm-up run; with many, a soak: memory is reported after each.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Peers to run the same workload on, on the same Redis server.
    #[arg(long, value_enum, value_delimiter = ',')]
    compare: Vec<Peer>,
    /// Print one JSON document (a sweep prints {"sweep": [...]}).
    #[arg(long)]
    json: bool,
    /// Write report.json, summary.md and SVG charts here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the branching DAG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First measure the machine's speed as the goals' reference figures were measured
    /// (`redis-benchmark` `XADD` on a plain redis-server), to set these figures beside them and
    /// beside runs made at other moments.
    #[arg(long)]
    yardstick: bool,
    /// Executions in flight at once (gateway mode): each subscribed to, executed, followed to
    /// its end, then the next one starts.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Where the embedded mode runs conditions and transforms: in script hosts, as `walkoff run`
    /// does, or on this process's threads (what the hosts cost, by difference).
    #[arg(long, value_enum, default_value_t = Scripts::Hosts)]
    scripts: Scripts,
    /// Seconds the workers keep a finished execution's log and events in Redis (redis mode;
    /// walkoff's default is a day): a soak sets it short to see Redis's memory settle.
    #[arg(long, value_name = "SECONDS")]
    retention: Option<u64>,
    /// Longest one run may take, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// From this many runs on, a measurement is a soak (see `stats::FoldedRuns`).
const SOAK_RUNS: usize = 10;

fn default_size(kind: ScenarioKind) -> usize {
    match kind {
        ScenarioKind::Chain => 100,
        ScenarioKind::Fanout => 1000,
        ScenarioKind::Concurrent | ScenarioKind::Chaos => 500,
        ScenarioKind::Branching => 10_000,
        ScenarioKind::Subscribers => 1000,
    }
}

fn progress(total: usize, label: String, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} executions {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    bar
}

/// Resident memory now (not the peak) of these processes, in MB.
fn rss_now_mb(pids: &[u32]) -> f64 {
    let kb: f64 = pids.iter().map(|&pid| gateway::rss_kb(pid)).sum();
    stats::round(kb / 1024.0)
}

async fn measure(args: &Args, work: &Workload) -> anyhow::Result<Report> {
    let workflow = Arc::new(work.workflow.clone());
    let limit = Duration::from_secs(args.timeout);
    let quiet = args.json;
    let mut report = Report {
        scenario: work.kind.name().to_string(),
        size: work.size,
        mode: match args.mode {
            Mode::Embedded => "embedded",
            Mode::Redis => "redis",
            Mode::Gateway => "gateway",
        }
        .to_string(),
        workers: args.workers,
        executors: args.executors,
        executor_concurrency: None,
        results: BTreeMap::new(),
        ratio: BTreeMap::new(),
        chaos: None,
        peer_failures: BTreeMap::new(),
        rss_after_each_run_mb: Vec::new(),
        redis_mb_after_each_run: Vec::new(),
        executions_per_run: work.executions,
        in_flight: (args.mode == Mode::Gateway).then_some(args.in_flight),
        subscribers: Vec::new(),
        machine: None,
        runs: BTreeMap::new(),
    };
    if args.yardstick {
        let speed = tokio::task::spawn_blocking(yardstick::measure)
            .await?
            .context("measure the machine's yardstick")?;
        report.machine = Some(speed);
    }
    let total = work.executions * (args.repeat + 1);
    let bar = progress(total, format!("walkoff {}", report.scenario), quiet);
    let mut runs: Vec<Run> = Vec::new();
    // A soak (many runs): older runs keep their wall time and fold their latencies into one
    // histogram, so what the harness keeps does not grow with the runs.
    let soak = args.repeat >= SOAK_RUNS;
    let mut folded = stats::FoldedRuns::default();
    let peer_redis;
    // Kept alive for the peers: they use the same Redis server.
    let mut redis_for_peers = None;
    // Combinations that cannot run are refused before anything starts.
    if work.kind == ScenarioKind::Subscribers && args.mode != Mode::Gateway {
        bail!("the subscribers scenario measures the GraphQL gateway: run it with --mode gateway");
    }
    if work.kind == ScenarioKind::Chaos && args.mode != Mode::Redis {
        bail!("the chaos scenario kills processes: run it with --mode redis");
    }
    if args.mode == Mode::Gateway && !args.compare.is_empty() {
        bail!("--compare runs peers on Redis: use --mode embedded or --mode redis");
    }
    // A summary of this workload's runs.
    let summary = |runs: &[Run],
                   folded: Option<&stats::FoldedRuns>,
                   usage: Vec<stats::ProcessUsage>,
                   redis_mb: Option<f64>| {
        summarize(
            runs,
            folded,
            work.executions,
            work.steps,
            work.executions * work.actions_per_execution,
            usage,
            redis_mb,
        )
    };
    match args.mode {
        Mode::Gateway => {
            let server = Arc::new(gateway::GatewayServer::start().await?);
            let pid = server.pid().unwrap_or_default();
            // The subscriber cases first, on a server whose allocator has nothing of the
            // throughput runs to hand back while memory is read.
            if work.kind == ScenarioKind::Subscribers {
                let paced = server.import(&gateway::paced_workflow()).await?;
                // Fan-out latency on two cores shared with the clients varies from run to
                // run: every run measures the floor right after walkoff, with the same events.
                for run in 1..=args.repeat {
                    for (case, executions) in
                        [("one execution", 1), ("one execution each", work.size)]
                    {
                        if !quiet {
                            eprintln!("run {run}: {} subscribers on {case}: running", work.size);
                        }
                        let mut measured = server
                            .subscribers(case, &paced, work.size, executions)
                            .await?;
                        measured.run = run;
                        report.subscribers.push(measured);
                    }
                    // The floor: this run's one-execution fan-out (the paced workflow's
                    // events at the moments they were committed) from a bare WebSocket
                    // broadcaster.
                    if !quiet {
                        eprintln!(
                            "run {run}: {} subscribers on the bare fan-out floor: running",
                            work.size
                        );
                    }
                    let replayed = report
                        .subscribers
                        .iter()
                        .rev()
                        .find(|c| c.executions == 1)
                        .context("the one-execution case")?;
                    let mut floor = fanout::measure(work.size, replayed).await?;
                    floor.run = run;
                    report.subscribers.push(floor);
                }
            }
            let workflow_id = server.import(&workflow).await?;
            server
                .run(&workflow_id, work.executions, args.in_flight, &bar)
                .await?; // warm-up
            for _ in 0..args.repeat {
                let run = server
                    .run(&workflow_id, work.executions, args.in_flight, &bar)
                    .await?;
                if run.lost > 0 {
                    bail!("{} executions did not complete", run.lost);
                }
                runs.push(run);
                report.rss_after_each_run_mb.push(rss_now_mb(&[pid]));
            }
            let usage = process_usage(pid, "walkoff serve").into_iter().collect();
            report
                .results
                .insert("walkoff".into(), summary(&runs, Some(&folded), usage, None));
            if let Ok(server) = Arc::try_unwrap(server) {
                server.stop();
            }
            peer_redis = None;
        }
        Mode::Embedded => {
            let scripts = match args.scripts {
                Scripts::Hosts => walkoff_dataflow::ScriptIsolation::Hosts(Arc::new(
                    walkoff_dataflow::script_host::ScriptHosts::new(
                        walkoff_dataflow::ScriptHostConfig::walkoff(
                            deployment::walkoff_binary()?,
                            walkoff_dataflow::script_host::DEFAULT_HOST_MEMORY_MIB,
                        ),
                    ),
                )),
                Scripts::InProcess => walkoff_dataflow::ScriptIsolation::InProcess,
            };
            let engine = embedded::Embedded::start(scripts);
            engine.run(&workflow, work.executions, &bar).await?; // warm-up
            for _ in 0..args.repeat {
                runs.push(engine.run(&workflow, work.executions, &bar).await?);
                if soak {
                    folded.fold(&mut runs);
                }
                report
                    .rss_after_each_run_mb
                    .push(rss_now_mb(&[std::process::id()]));
            }
            engine.stop().await;
            let usage = process_usage(std::process::id(), "walkoff-loadtest (embedded walkoff)")
                .into_iter()
                .collect();
            report
                .results
                .insert("walkoff".into(), summary(&runs, Some(&folded), usage, None));
            if !args.compare.is_empty() {
                let dir = tempfile::tempdir()?;
                let (server, port) = deployment::start_redis(dir.path(), Persistence::Aof)?;
                redis_for_peers = Some((server, dir));
                peer_redis = Some(format!("redis://127.0.0.1:{port}"));
            } else {
                peer_redis = None;
            }
        }
        Mode::Redis => {
            let concurrency = args.executor_concurrency.unwrap_or_else(|| {
                (2 * std::thread::available_parallelism().map_or(2, |n| n.get())).max(8)
            });
            report.executor_concurrency = Some(concurrency);
            let mut deployment =
                Deployment::start(args.workers, args.executors, concurrency, args.retention)
                    .await
                    .context("start the Redis deployment")?;
            deployment
                .run(&workflow, work.executions, &bar, limit, None)
                .await?; // warm-up
            let pids: Vec<u32> = deployment
                .workers
                .iter()
                .chain(&deployment.executors)
                .filter_map(|p| p.pid())
                .collect();
            if work.kind == ScenarioKind::Chaos {
                let mut chaos = Chaos::new(0.3);
                runs.push(
                    deployment
                        .run(&workflow, work.executions, &bar, limit, Some(&mut chaos))
                        .await?,
                );
                report.chaos = Some(chaos.report);
            } else {
                for _ in 0..args.repeat {
                    runs.push(
                        deployment
                            .run(&workflow, work.executions, &bar, limit, None)
                            .await?,
                    );
                    if soak {
                        folded.fold(&mut runs);
                    }
                    report.rss_after_each_run_mb.push(rss_now_mb(&pids));
                    if let Ok(mb) = deployment.redis_used_memory_mb().await {
                        report.redis_mb_after_each_run.push(mb);
                    }
                }
            }
            if let Some(lost) = runs.iter().map(|r| r.lost).find(|&l| l > 0) {
                if work.kind != ScenarioKind::Chaos {
                    bail!("{lost} executions did not finish within {limit:?}");
                }
            }
            let usage = deployment.usage();
            let redis_mb = deployment.redis_memory_mb().await.ok();
            report.results.insert(
                "walkoff".into(),
                summary(&runs, Some(&folded), usage, redis_mb),
            );
            peer_redis = Some(deployment.url());
            // Stop walkoff's processes so the peers have the machine; Redis stays for them.
            let (redis, dir) = deployment.stop_engine().await;
            redis_for_peers = Some((redis, dir));
        }
    }
    bar.finish_and_clear();
    report.runs.insert("walkoff".into(), runs);

    for &peer in &args.compare {
        let Some(url) = peer_redis.clone() else { break };
        let (scenario, size, repeat) = (work.kind, work.size, args.repeat);
        if !quiet {
            eprintln!("{} {}: running", peer.name(), report.scenario);
        }
        let outcome =
            tokio::task::spawn_blocking(move || peers::run(peer, &url, scenario, size, repeat))
                .await?;
        let (peer_runs, usage) = match outcome {
            Ok(done) => done,
            Err(e) => {
                // The peer's failure is part of the comparison; walkoff's figures still stand.
                let why = format!("{e:#}");
                let last = why.lines().rev().find(|l| !l.trim().is_empty());
                let why = last.unwrap_or("unknown error").trim().to_string();
                eprintln!(
                    "warning: {} did not finish the workload: {why}",
                    peer.name()
                );
                report.peer_failures.insert(peer.name().into(), why);
                continue;
            }
        };
        report
            .results
            .insert(peer.name().into(), summary(&peer_runs, None, usage, None));
        report.runs.insert(peer.name().into(), peer_runs);
    }
    if let Some((mut redis, _dir)) = redis_for_peers {
        redis.stop(Duration::from_secs(5));
    }
    report.compute_ratios();
    Ok(report)
}

async fn main_async(args: Args) -> anyhow::Result<()> {
    let sizes = if args.sweep.is_empty() {
        vec![args.size.unwrap_or_else(|| default_size(args.scenario))]
    } else {
        args.sweep.clone()
    };
    let mut reports = Vec::new();
    for size in sizes {
        let work = workload(args.scenario, size, args.seed);
        reports.push(measure(&args, &work).await?);
    }
    if let Some(dir) = &args.out {
        let written = report::write(&reports, dir)?;
        if !args.json {
            eprintln!("wrote {} in {}", written.join(", "), dir.display());
        }
    }
    if args.json {
        let doc = if reports.len() == 1 {
            serde_json::to_value(&reports[0])?
        } else {
            serde_json::json!({ "sweep": reports })
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", report::markdown(&reports));
    }
    Ok(())
}

/// Set once a signal arrived: the run's end (likely an error, its servers gone) is then the
/// signal watcher's to report.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// On SIGINT or SIGTERM, stop the servers and processes the harness started, then exit: the
/// destructors that normally stop them do not run when a signal ends the process. A thread of its
/// own, so a run blocked on a peer's benchmark still answers.
fn stop_started_on_signal() {
    let watcher = std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut interrupt), Ok(mut terminate)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
                eprintln!("interrupted: stopping what the load test started");
                deployment::stop_all_started();
                std::process::exit(130);
            });
        });
    if let Err(e) = watcher {
        eprintln!(
            "warning: cannot watch for signals ({e}); an interrupted run leaves its processes"
        );
    }
}

fn main() -> std::process::ExitCode {
    // The fan-out floor's server is this binary again.
    if let Ok(setting) = std::env::var(fanout::FANOUT_ENV) {
        return match fanout::serve(&setting) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(_) => std::process::ExitCode::FAILURE,
        };
    }
    // The floor's answering process is this binary again.
    if let Ok(setting) = std::env::var(floor::PONG_ENV) {
        return match floor::pong(&setting) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(_) => std::process::ExitCode::FAILURE,
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WALKOFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    stop_started_on_signal();
    // Embedded mode measures the engine as `walkoff run` runs it: one scheduler thread.
    let runtime = match args.mode {
        Mode::Embedded => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Mode::Redis | Mode::Gateway => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(main_async(args));
    while INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        // The watcher stops what was started, then exits.
        std::thread::park();
    }
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
