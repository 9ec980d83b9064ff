//! `walkoff`: one binary for every role. This file parses the command line and wires roles together;
//! the logic lives in the library crates.

mod distributed;
mod health;
mod run;
mod secrets;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use walkoff_schema::{dump_workflow, load_workflow_file, load_workflow_file_with_warnings, Format};

// Orchestration allocates many small, short-lived values; mimalloc serves them faster than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for an invalid workflow or bad arguments.
pub const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "walkoff",
    version,
    about = "Security orchestration: WALKOFF workflows compiled to dataflow graphs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the GraphQL API with the engine and the built-in apps in this process (SQLite in
    /// --data-dir): the embedded default.
    Serve(serve::ServeArgs),
    /// Serve the GraphQL API as one gateway replica of a Redis deployment (workers and
    /// executors run elsewhere; every replica shares --database).
    Gateway(serve::GatewayArgs),
    /// Check a workflow (walkoff or WALKOFF 1.0 JSON) and print every problem.
    Validate {
        file: PathBuf,
        /// Also check that GLOBAL parameters name one of these globals.
        #[arg(long = "global", value_name = "NAME")]
        globals: Vec<String>,
        /// Print the problems as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a workflow in this process on the embedded in-memory bus.
    Run(run::RunArgs),
    /// Re-seal every global of a database under a new master key (then run with that key).
    RotateKey(serve::RotateKeyArgs),
    /// Run dataflow operators for executions of a Redis deployment (any number of workers).
    Worker(distributed::WorkerArgs),
    /// Serve one app's actions for a Redis deployment.
    Executor(distributed::ExecutorArgs),
    /// Scale the app services of a Docker Swarm (label `walkoff.app`) by their backlog in Redis
    /// and the resources the nodes have free (run it on a manager).
    Autoscale(distributed::AutoscaleArgs),
    /// Start an execution on a Redis deployment; --wait follows it as `run` does.
    Submit(distributed::SubmitArgs),
    /// Deliver data to a trigger of a running execution.
    Trigger(distributed::TriggerArgs),
    /// Abort a running execution.
    Abort(distributed::AbortArgs),
    /// Print an execution's events, from any sequence number, until it ends.
    Watch(distributed::WatchArgs),
    /// Show the dataflow plan a workflow compiles to: its operators and edges, or with --dot the
    /// graph in Graphviz's DOT language (`walkoff plan FILE --dot | dot -Tsvg > plan.svg`).
    Plan {
        file: PathBuf,
        #[arg(long)]
        dot: bool,
    },
    /// A container's health check: a gateway's /health (--http URL), or the deployment's Redis
    /// for a worker or an executor (--redis URL); exits 0 when healthy.
    Health(health::HealthArgs),
    /// Convert a workflow between walkoff JSON and WALKOFF 1.0 JSON.
    Convert {
        file: PathBuf,
        #[arg(long, value_enum)]
        to: FormatArg,
    },
    /// Evaluate conditions and transforms for a worker, one JSON request per line of stdin (the
    /// worker starts these itself).
    #[command(hide = true)]
    ScriptHost {
        #[arg(long, default_value_t = walkoff_dataflow::script_host::DEFAULT_HOST_MEMORY_MIB)]
        memory_mib: u64,
    },
}

/// Each script host's memory limit, in MiB, when not the default.
const SCRIPT_MEMORY_ENV: &str = "WALKOFF_SCRIPT_MEMORY_MIB";

/// Conditions and transforms of this process run in script hosts: this binary, as
/// `walkoff script-host`.
fn isolate_scripts() -> Result<(), String> {
    let memory_mib = match std::env::var(SCRIPT_MEMORY_ENV) {
        Ok(value) => value
            .parse::<u64>()
            .ok()
            .filter(|mib| *mib >= 16)
            .ok_or_else(|| {
                format!("{SCRIPT_MEMORY_ENV} is a number of MiB (16 or more), not '{value}'")
            })?,
        Err(_) => walkoff_dataflow::script_host::DEFAULT_HOST_MEMORY_MIB,
    };
    let config = walkoff_dataflow::ScriptHostConfig::this_binary(memory_mib)
        .map_err(|e| format!("cannot find this program to start script hosts: {e}"))?;
    walkoff_dataflow::isolate_scripts(config);
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Walkoff,
    Walkoff1,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WALKOFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = secrets::load_from_files() {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_INVALID);
    }
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Run(_) | Command::Serve(_) | Command::Worker(_)
    ) {
        if let Err(e) = isolate_scripts() {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    }
    match cli.command {
        Command::Validate {
            file,
            globals,
            json,
        } => validate(&file, globals, json),
        // One scheduler thread: the engine's hops between tasks stay on one core without
        // cross-thread wake-ups; scripts and blocking work still run on the blocking pool.
        Command::Run(args) => block_on(run::run(args)),
        // A server: requests, the engine and the store share both cores.
        Command::Serve(args) => block_on_threads(serve::serve(args)),
        Command::Gateway(args) => block_on_threads(serve::gateway(args)),
        Command::RotateKey(args) => block_on(serve::rotate_key(args)),
        Command::Worker(args) => block_on(distributed::worker(args)),
        Command::Executor(args) => block_on(distributed::executor(args)),
        Command::Autoscale(args) => block_on(distributed::autoscale(args)),
        Command::Submit(args) => block_on(distributed::submit(args)),
        Command::Trigger(args) => block_on(distributed::trigger(args)),
        Command::Abort(args) => block_on(distributed::abort(args)),
        Command::Watch(args) => block_on(distributed::watch(args)),
        Command::Plan { file, dot } => plan(&file, dot),
        Command::Health(args) => health::health(args),
        Command::ScriptHost { memory_mib } => {
            match walkoff_dataflow::script_host::serve_host(memory_mib) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("script host: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Convert { file, to } => match load_workflow_file(&file) {
            Ok((workflow, _)) => {
                let format = match to {
                    FormatArg::Walkoff => Format::Canonical,
                    FormatArg::Walkoff1 => Format::Walkoff1,
                };
                let doc = dump_workflow(&workflow, format);
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(EXIT_INVALID)
            }
        },
    }
}

fn block_on(job: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    run_on(tokio::runtime::Builder::new_current_thread(), job)
}

fn block_on_threads(job: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    run_on(tokio::runtime::Builder::new_multi_thread(), job)
}

fn run_on(
    mut builder: tokio::runtime::Builder,
    job: impl std::future::Future<Output = ExitCode>,
) -> ExitCode {
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(job),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `walkoff plan`: compile with the built-in apps and print the plan and its digest (problems as
/// `validate`).
fn plan(file: &std::path::Path, dot: bool) -> ExitCode {
    let workflow = match load_workflow_file(file) {
        Ok((workflow, _)) => workflow,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let catalog = walkoff_apps::builtin_registry().catalog();
    let plan = match walkoff_dataflow::compile(std::sync::Arc::new(workflow), &catalog, None) {
        Ok(plan) => plan,
        Err(problems) => {
            for problem in &problems.0 {
                eprintln!("{}: {problem}", file.display());
            }
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if dot {
        print!("{}", plan.to_dot());
        return ExitCode::SUCCESS;
    }
    for (i, node) in plan.nodes.iter().enumerate() {
        let children: Vec<String> = node
            .children
            .iter()
            .map(|&c| plan.nodes[c].label.clone())
            .collect();
        let start = if i == plan.start { " (start)" } else { "" };
        println!(
            "{}{start}: {}{}{}",
            node.label,
            node.op.describe(),
            if children.is_empty() { "" } else { " -> " },
            children.join(", ")
        );
    }
    // Workers know a compiled plan by this digest (`walkoff_dataflow::plans`).
    println!("digest: {}", plan.digest);
    ExitCode::SUCCESS
}

fn validate(file: &std::path::Path, globals: Vec<String>, json: bool) -> ExitCode {
    let (workflow, format, warnings) = match load_workflow_file_with_warnings(file) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let catalog = walkoff_apps::builtin_registry().catalog();
    let globals: std::collections::BTreeSet<String> = globals.into_iter().collect();
    let known_globals = (!globals.is_empty()).then_some(&globals);
    let nodes = workflow.nodes.len();
    let branches = workflow.branches.len();
    let compiled =
        walkoff_dataflow::compile(std::sync::Arc::new(workflow), &catalog, known_globals);
    let problems = compiled.err().map(|p| p.0).unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({"valid": problems.is_empty(), "problems": problems, "warnings": warnings})
        );
    } else {
        for warning in &warnings {
            println!("{}: warning: {warning}", file.display());
        }
        for problem in &problems {
            println!("{}: {problem}", file.display());
        }
        if problems.is_empty() {
            let format = match format {
                Format::Canonical => "walkoff",
                Format::Walkoff1 => "WALKOFF 1.0",
            };
            println!(
                "{}: valid {format} workflow ({nodes} nodes, {branches} branches)",
                file.display()
            );
        } else {
            println!("{}: {} problem(s)", file.display(), problems.len());
        }
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}
